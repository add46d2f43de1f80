"""The assignment engine: which image pair a rater sees next in a campaign.

One call of `next_assignment(rater, campaign)`:

1. Serialise this rater's own requests (row lock on the Rater), so one rater never holds more than
   MAX_OPEN_PER_CAMPAIGN open assignments: the pair on screen plus the preloaded next one.
2. Resume: an open, unexpired assignment of this rater is returned again (unless the page asks for one
   it does not have yet, `exclude=`).
3. Gold: with probability campaign.gold_rate an attention check the rater has not had.
4. Otherwise the model pair comes from the policy in analysis/pair_choice.py (`choose_model_pair`):
   the wins matrix is built from the campaign's prompt-following votes (gold votes and flagged raters'
   votes left out; ties and "both bad" as half a win each) and cached for a few seconds; a refresh reads
   only the votes made since the last one, so /next does not slow down as the campaign grows.
   Prompt following is used because every pair asks it (typography is asked only for some prompts,
   and adding the three criteria up would count one comparison three times).
   `allowed` = model pairs that still have an image pair under the campaign's votes-per-pair target.
5. The concrete image pair: the campaign's ImagePair rows of that model pair that are under target
   and that this rater has never been given, fewest assignments first, random among equals. The row
   is taken with select_for_update(skip_locked=True): two raters asking at once lock different rows,
   and the `assigned` counter cannot overshoot the target. The rater_never_gets_pair_twice constraint
   is the last line of defence: an IntegrityError rolls the hand-out back and it is tried again without
   that pair. When every free row of
   the model pair is locked by other raters' transactions in flight, the engine waits for one (blocking
   FOR UPDATE, re-checked after the wait) instead of wrongly answering "nothing left"; it waits holding no
   other image pair (a row that filled meanwhile is let go), so two hand-outs never wait for each other.
6. Left/right: the model this rater has seen on the left more often goes right (random when even); the
   correct image of a gold check goes to the side it has been on less often for this rater.

One query reads the rater's history in the campaign (open assignments to resume, pairs answered, the
left/right lean, gold sides) from their RaterTally rows, which triggers keep (migration 0009), so its cost does
not grow with the history. On PostgreSQL step 5 and the insert of the assignment are one statement (_TAKE_PAIR_SQL),
so the /next request of a new pair costs 7 statements, BEGIN and COMMIT included (9 on SQLite);
tests/rating/test_round_trips.py pins them. (The rater lock cannot join the history query: after waiting for
the lock, PostgreSQL re-checks only the locked row, and the history would predate the other request.)

Expired assignments are swept lazily (at most every EXPIRY_SWEEP_SECONDS per campaign and process) and
by the `rating.expire_assignments` task; they give their slot back to the image pair.

On SQLite select_for_update is a no-op, but settings open every transaction with BEGIN IMMEDIATE, so
the whole block is serialised and the same invariants hold.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.core.cache import cache, caches
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from analysis.bradley_terry import bt_covariance, bt_mle
from analysis.pair_choice import NoPairAvailable, choose_model_pair
from evalsite.catalog.models import Prompt
from evalsite.outages import CACHE_AWAY
from evalsite.rating.models import (
    Assignment,
    Campaign,
    Choice,
    Criterion,
    GoldCheck,
    ImagePair,
    Rater,
    RaterTally,
    Vote,
)
from evalsite.rating.rows import columns, fetch_row, instances, select_list, statement_cursor
from evalsite.runs.display import ImageUnreadable, stored_picture
from evalsite.runs.models import Image

log = logging.getLogger(__name__)

MAX_OPEN_PER_CAMPAIGN = 2  # the pair on screen plus the preloaded next one
WINS_CACHE_SECONDS = 5  # how stale the wins matrix given to the policy may be
WINS_SETTLE_SECONDS = 10  # after this, a vote's transaction has surely committed (see _Wins)
WINS_RECOUNT_SECONDS = 600  # how often the wins matrix is counted again from all votes
OPEN_PAIRS_CACHE_SECONDS = 10  # how stale "which model pairs still need votes" may be
PAIR_CHECK_SECONDS = 60  # how often a process checks whether new images need pairing
EXPIRY_SWEEP_SECONDS = 15  # how often a process sweeps a campaign's expired assignments
DEFAULT_GOLD_POOL = 50  # gold checks created per campaign (each rater gets each at most once)
GOLD_MIN_MARGIN = 0.5  # how much better (checker prompt-following score) the P image of a verifiable check must be
WINS_CRITERION = Criterion.PROMPT_FOLLOWING
MAX_INTEGRITY_RETRIES = 5  # hand-outs retried after the database refused a pair the rater already had
LOCKED_WAITS = 20  # waits for a locked image pair (each ends with a slot filled) before a model pair counts as used up


class TooManyOpenAssignments(Exception):
    """The rater already holds MAX_OPEN_PER_CAMPAIGN open assignments and excluded all of them."""


@dataclass
class Progress:
    answered: int  # pairs this rater answered in this campaign
    target: int | None  # campaign.pairs_per_rater (None: no limit)


# --------------------------------------------------------------------------------------------------
# Building the campaign's image pairs and gold checks
# --------------------------------------------------------------------------------------------------


def _done_images(campaign: Campaign):
    return Image.objects.in_run(campaign.run_id).filter(status=Image.Status.DONE)


def build_image_pairs(campaign: Campaign, rng: random.Random | None = None) -> int:
    """Create the ImagePair rows for every finished image of the campaign's run; returns how many are new.

    Same prompt and same seed; where a model lacks a seed the other model has, the leftover images of the
    two models are paired across seeds (same prompt, any seed). Idempotent: existing pairs are kept.
    Rows go in as plain tuples in multi-row INSERT ... ON CONFLICT DO NOTHING statements: 180,000 pairs take
    seconds, where ORM objects take a minute (and a self-join in SQL depends on fresh table statistics).
    """
    rng = rng or random.Random()
    images = defaultdict(lambda: defaultdict(dict))  # prompt -> model -> seed -> image id
    for image_id, model_id, prompt_id, seed in _done_images(campaign).values_list(
        "id", "model_id", "prompt_id", "seed"
    ):
        images[prompt_id][model_id][seed] = image_id
    existing = set(ImagePair.objects.filter(campaign=campaign).values_list("pair_key", flat=True))
    rows = []  # (campaign, prompt, image_a, image_b, model_a, model_b, pair_key, assigned, answered, shuffle)
    for prompt_id, by_model in images.items():
        models = sorted(by_model)
        for a_index, model_a in enumerate(models):
            for model_b in models[a_index + 1 :]:
                seeds_a, seeds_b = by_model[model_a], by_model[model_b]
                matched = [(seeds_a[s], seeds_b[s]) for s in sorted(seeds_a.keys() & seeds_b.keys())]
                only_a = [seeds_a[s] for s in sorted(seeds_a.keys() - seeds_b.keys())]
                only_b = [seeds_b[s] for s in sorted(seeds_b.keys() - seeds_a.keys())]
                for image_a, image_b in matched + list(zip(only_a, only_b, strict=False)):
                    key = Assignment.make_pair_key(image_a, image_b)
                    if key not in existing:
                        existing.add(key)
                        rows.append(
                            (
                                campaign.pk,
                                prompt_id,
                                image_a,
                                image_b,
                                model_a,
                                model_b,
                                key,
                                0,
                                0,
                                rng.randrange(2**31),
                            )
                        )
    return _insert_pairs(rows)


PAIR_COLUMNS = (
    "campaign_id",
    "prompt_id",
    "image_a_id",
    "image_b_id",
    "model_a_id",
    "model_b_id",
    "pair_key",
    "assigned",
    "answered",
    "shuffle",
)


def _insert_pairs(rows: list[tuple]) -> int:
    """Insert pair rows, skipping pair keys the campaign already has; returns how many were inserted."""
    if not rows:
        return 0
    table, columns = ImagePair._meta.db_table, ", ".join(PAIR_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # COPY into a scratch table, then one INSERT ... SELECT
            with transaction.atomic():
                cursor.execute(f"CREATE TEMPORARY TABLE new_image_pairs AS SELECT {columns} FROM {table} WITH NO DATA")
                raw = cursor.cursor  # psycopg's own cursor, for COPY
                with raw.copy(f"COPY new_image_pairs ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) SELECT {columns} FROM new_image_pairs ON CONFLICT DO NOTHING"
                )
                created = cursor.rowcount
                cursor.execute("DROP TABLE new_image_pairs")
            return created
        one_row = "(" + ", ".join(["%s"] * len(PAIR_COLUMNS)) + ")"
        created = 0
        for start in range(0, len(rows), 3000):
            chunk = rows[start : start + 3000]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([one_row] * len(chunk))} ON CONFLICT DO NOTHING",
                [value for row in chunk for value in row],
            )
            created += max(cursor.rowcount, 0)
        return created


def create_gold_checks(campaign: Campaign, n: int = DEFAULT_GOLD_POOL, rng: random.Random | None = None) -> int:
    """Create up to n gold checks: for prompt P, the image a model made for P against the image the same
    model made (same seed where possible) for a different prompt Q, preferably of another category.
    Shown with prompt P, the right prompt-following answer is the P image. Returns how many are new.

    A check is only as good as its images: a model that draws noise makes "P's image" no better at P than
    Q's, and a careful rater who answers such a check honestly fails it. Where the pixels can say which
    image follows P (demo-domain prompts, `gold_margin`), a check is kept only when the P image is clearly
    better; elsewhere nothing can verify it, and a researcher who compares a model that does not follow
    prompts should set the gold rate to 0 or make the campaign on a run of models that do."""
    rng = rng or random.Random()
    existing = GoldCheck.objects.filter(campaign=campaign).count()
    if existing >= n:
        return 0
    rows = list(
        _done_images(campaign).values_list("id", "model_id", "prompt_id", "seed", "prompt__category", "prompt__text")
    )
    by_model = defaultdict(list)
    for row in rows:
        by_model[row[1]].append(row)
    prompts = sorted({row[2] for row in rows})
    rng.shuffle(prompts)
    current = list(
        GoldCheck.objects.filter(campaign=campaign).values_list("prompt_id", "correct_image_id", "wrong_image_id")
    )
    taken = {prompt_id for prompt_id, _, _ in current}
    # Two checks over the same two images (P vs Q and Q vs P) would be one pair to a rater: never both.
    used_pairs = {Assignment.make_pair_key(correct, wrong) for _, correct, wrong in current}
    verifier = _GoldVerifier({row[2]: row[5] for row in rows})
    checks = []
    for prompt_id in prompts:
        if existing + len(checks) >= n:
            break
        if prompt_id in taken:
            continue
        pick = _gold_images(prompt_id, rows, by_model, used_pairs, verifier, rng)
        if pick is None:
            continue
        image_id, wrong_id = pick
        used_pairs.add(Assignment.make_pair_key(image_id, wrong_id))
        checks.append(
            GoldCheck(
                campaign=campaign,
                prompt_id=prompt_id,
                correct_image_id=image_id,
                wrong_image_id=wrong_id,
                criterion=Criterion.PROMPT_FOLLOWING,
                description="image made for the prompt vs the same model's image for another prompt",
            )
        )
    GoldCheck.objects.bulk_create(checks, ignore_conflicts=True)
    return len(checks)


def _gold_images(prompt_id, rows, by_model, used_pairs, verifier, rng) -> tuple[int, int] | None:
    """(P image, other image) for one gold check of prompt P, or None when no pair of images qualifies."""
    # Any of P's images will do; try them in random order, since one model's images may all be taken by
    # earlier checks (three prompts of one model: P1-P2 and P3-P2 leave P2 nothing) while another's are free.
    candidates = [row for row in rows if row[2] == prompt_id]
    rng.shuffle(candidates)
    for image_id, model_id, _, seed, category, _ in candidates:
        others = [
            row
            for row in by_model[model_id]
            if row[2] != prompt_id and Assignment.make_pair_key(image_id, row[0]) not in used_pairs
        ]
        # Prefer another category, then the same seed: the two images then differ only in what was asked.
        others.sort(key=lambda row: (row[4] == category and bool(category), row[3] != seed, rng.random()))
        for wrong in others:
            if verifier.clear(prompt_id, image_id, wrong[0]):
                return image_id, wrong[0]
    return None


class _GoldVerifier:
    """Whether the pixels confirm that a gold check's P image follows P better than the other image.

    Demo-domain prompts are judged by the checker (`generation.demo_judge`): the P image must pass every check
    and score at least GOLD_MIN_MARGIN higher on prompt following than the other image. Prompts the checker
    cannot read pass unverified."""

    def __init__(self, texts: dict[int, str]):
        self.texts = texts  # prompt id -> text
        self.pixels: dict[int, np.ndarray] = {}

    def clear(self, prompt_id: int, correct_id: int, wrong_id: int) -> bool:
        from generation.demo_judge import CannotJudge, judge_image, parse_judgeable

        try:
            spec = parse_judgeable(self.texts.get(prompt_id, ""))
        except CannotJudge:
            return True
        try:
            right, wrong = (judge_image(self._image(pk), spec) for pk in (correct_id, wrong_id))
        except (ImageUnreadable, OSError, ValueError):  # a file that cannot be read makes no gold check
            return False
        # The P image must pass every check (random noise passes a colour or background check by chance
        # often enough to make a margin alone unsafe), and be clearly better than the other image.
        return right.correct and right.prompt_following - wrong.prompt_following >= GOLD_MIN_MARGIN

    def _image(self, pk: int) -> np.ndarray:
        if pk not in self.pixels:
            self.pixels[pk] = np.asarray(stored_picture(Image.objects.get(pk=pk)).convert("RGB"))
        return self.pixels[pk]


def prepare_campaign(campaign: Campaign) -> dict[str, int]:
    """Pair every finished image and top up the gold pool; cheap to call again."""
    pairs = build_image_pairs(campaign)
    gold = create_gold_checks(campaign) if campaign.gold_rate > 0 else 0
    done = _done_images(campaign).count()
    Campaign.objects.filter(pk=campaign.pk).update(paired_image_count=done)
    campaign.paired_image_count = done
    cache.delete(_open_pairs_key(campaign))
    return {"new_pairs": pairs, "new_gold_checks": gold, "images": done}


def ensure_prepared(campaign: Campaign) -> None:
    """Re-pair when the run has finished more images since the last time (checked once a minute)."""
    if not cache.add(f"rating:pair-check:{campaign.pk}", 1, PAIR_CHECK_SECONDS):
        return
    if _done_images(campaign).count() != campaign.paired_image_count:
        prepare_campaign(campaign)


# --------------------------------------------------------------------------------------------------
# Expiry
# --------------------------------------------------------------------------------------------------


def expire_assignments(campaign: Campaign | None = None, now: datetime | None = None, batch: int = 1000) -> int:
    """Mark open assignments past their expiry as expired and give their slot back; returns how many."""
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            due = Assignment.objects.filter(status=Assignment.Status.OPEN, expires_at__lte=now)
            if campaign is not None:
                due = due.filter(campaign=campaign)
            rows = list(due.select_for_update(skip_locked=True).values_list("id", "image_pair_id", "rater_id")[:batch])
            if not rows:
                return total
            # The status change below updates each rater's tally under a lock of the rater (migration 0009): take
            # those locks in id order, so two sweeps cannot deadlock on them.
            raters = sorted({r[2] for r in rows})
            list(Rater.objects.filter(pk__in=raters).order_by("pk").select_for_update(no_key=True).values_list("pk"))
            Assignment.objects.filter(id__in=[r[0] for r in rows]).update(status=Assignment.Status.EXPIRED)
            for pair_id, n in sorted(Counter(r[1] for r in rows if r[1] is not None).items()):  # id order too
                ImagePair.objects.filter(pk=pair_id).update(assigned=F("assigned") - n)
        total += len(rows)
        if len(rows) < batch:
            return total


def _maybe_sweep(campaign: Campaign) -> None:
    if cache.add(f"rating:expiry-sweep:{campaign.pk}", 1, EXPIRY_SWEEP_SECONDS):
        expire_assignments(campaign)


# --------------------------------------------------------------------------------------------------
# What the policy sees: the campaign's models, their wins so far, which model pairs still need votes
# --------------------------------------------------------------------------------------------------


def campaign_model_ids(campaign: Campaign) -> list[int]:
    key = f"rating:models:{campaign.pk}"
    model_ids = cache.get(key)
    if model_ids is None:
        model_ids = sorted(campaign.run.image_models.values_list("id", flat=True))
        cache.set(key, model_ids, OPEN_PAIRS_CACHE_SECONDS)
    return model_ids


def wins_matrix(campaign: Campaign, model_ids: list[int]) -> np.ndarray:
    """(K, K) wins[i, j] = prompt-following wins of model i over model j (ties and both bad: half each),
    from the votes analysis uses (no gold votes, no flagged raters)."""
    from evalsite.rating.quality import votes_for_analysis  # quality imports this module's models only

    wins = np.zeros((len(model_ids), len(model_ids)))
    rows = (
        votes_for_analysis(campaign)
        .filter(criterion=WINS_CRITERION)
        .values_list("model_left_id", "model_right_id", "choice")
        .annotate(n=Count("id"))
        .order_by()
    )
    _add_wins(wins, model_ids, rows)
    return wins


def _add_wins(wins: np.ndarray, model_ids: list[int], rows) -> None:
    """Add (model_left, model_right, choice, n) rows to wins, in place."""
    index = {model_id: i for i, model_id in enumerate(model_ids)}
    for left, right, choice, n in rows:
        if left not in index or right not in index or left == right:
            continue
        i, j = index[left], index[right]
        if choice == Choice.LEFT:
            wins[i, j] += n
        elif choice == Choice.RIGHT:
            wins[j, i] += n
        else:
            wins[i, j] += 0.5 * n
            wins[j, i] += 0.5 * n


@dataclass
class _Wins:
    """The wins matrix as the cache keeps it between refreshes, so that a refresh reads only the newest votes.

    Votes up to `settled_id` are counted; above it, those in `counted_above`. A vote's id is drawn when it is
    inserted and its transaction commits a moment later, so a vote may become visible after one with a higher
    id: ids are "settled" only WINS_SETTLE_SECONDS after their vote was made, and above the settled id every
    refresh reads the votes again and counts those it has not counted yet."""

    model_ids: list[int]
    excluded: frozenset  # raters whose votes analysis leaves out (flagged, held for review or rejected)
    wins: np.ndarray
    theta: np.ndarray | None
    settled_id: int
    counted_above: set
    refreshed: float  # time.time() of the last refresh
    recounted: float  # time.time() of the last full count
    cov: np.ndarray | None = None  # bt_covariance(wins, theta), worked out with theta (the pair choice needs both)


def _excluded_raters(campaign: Campaign) -> frozenset:
    from evalsite.rating.quality import held_out_rater_ids  # quality imports this module's models only

    flagged = Rater.objects.filter(flagged=True).values_list("pk", flat=True)
    return frozenset(flagged) | frozenset(held_out_rater_ids(campaign))


def _recent_wins_votes(campaign: Campaign, above_id: int):
    """(id, created_at, rater, left model, right model, choice) of the campaign's wins votes with a higher id
    (an index range scan on the primary key: the last seconds of votes)."""
    return (
        Vote.objects.filter(campaign=campaign, criterion=WINS_CRITERION, is_gold=False, id__gt=above_id)
        .order_by("id")
        .values_list("id", "created_at", "rater_id", "model_left_id", "model_right_id", "choice")
    )


def _count_recent(state: _Wins, campaign: Campaign, now: datetime) -> None:
    """Count the votes above the settled id not counted yet, then move the settled id up to the votes made
    WINS_SETTLE_SECONDS ago."""
    settle_before = now - timedelta(seconds=WINS_SETTLE_SECONDS)
    new_settled = state.settled_id
    added = []
    for pk, created_at, rater_id, left, right, choice in _recent_wins_votes(campaign, state.settled_id):
        if pk not in state.counted_above:
            state.counted_above.add(pk)
            if rater_id not in state.excluded:
                added.append((left, right, choice, 1))
        if created_at <= settle_before:
            new_settled = pk
    _add_wins(state.wins, state.model_ids, added)
    state.settled_id = new_settled
    state.counted_above = {pk for pk in state.counted_above if pk > new_settled}


def _count_all(campaign: Campaign, model_ids: list[int], excluded: frozenset, now: datetime) -> _Wins:
    """Count every wins vote: those up to the settled id in one aggregate, the newer ones one by one."""
    settle_before = now - timedelta(seconds=WINS_SETTLE_SECONDS)
    settled_id = (
        Vote.objects.filter(campaign=campaign, created_at__lte=settle_before)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    ) or 0
    wins = np.zeros((len(model_ids), len(model_ids)))
    rows = (
        Vote.objects.filter(campaign=campaign, criterion=WINS_CRITERION, is_gold=False, id__lte=settled_id)
        .exclude(rater_id__in=excluded)
        .values_list("model_left_id", "model_right_id", "choice")
        .annotate(n=Count("id"))
        .order_by()
    )
    _add_wins(wins, model_ids, rows)
    stamp = now.timestamp()
    state = _Wins(model_ids, excluded, wins, None, settled_id, set(), stamp, stamp)
    _count_recent(state, campaign, now)
    return state


def _full_count_key(campaign: Campaign) -> str:
    return f"rating:wins-full:{campaign.pk}"


def _shared(operation: str, *args):
    """caches["shared"].<operation>(*args), or None while the shared cache (Redis) is away: the full count there is
    a hint, and a request goes on counting in its own process rather than failing."""
    try:
        return getattr(caches["shared"], operation)(*args)
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): wins count not %s", exc, "read" if operation == "get" else "shared")
        return None


def recount_wins(campaign: Campaign) -> _Wins:
    """Count the campaign's wins matrix from all its votes and leave it in the shared cache, where every web process
    takes it up at its next refresh (the Celery task `rating.recount_wins`; about 2 s at 1M votes, which /next no
    longer spends)."""
    model_ids = campaign_model_ids(campaign)
    state = _count_all(campaign, model_ids, _excluded_raters(campaign), timezone.now())
    caches["shared"].set(_full_count_key(campaign), state, 2 * WINS_RECOUNT_SECONDS)  # the task: fail loudly
    return state


def _ask_for_recount(campaign: Campaign) -> None:
    """Enqueue `rating.recount_wins` after this transaction commits, at most once a minute per campaign for all
    processes; a broker that is away costs this request nothing (the next refresh asks again)."""
    if not _shared("add", f"rating:wins-recount-asked:{campaign.pk}", 1, 60):
        return

    def send() -> None:
        from evalsite.celery import app  # the project's Celery app; the engine is imported by its tasks

        app.send_task("rating.recount_wins", args=[campaign.pk])

    transaction.on_commit(send, robust=True)


def _move_raters(state: _Wins, campaign: Campaign, excluded: frozenset) -> None:
    """Take the counted votes of raters now excluded out of the matrix and put back those of raters no longer
    excluded, reading only their votes (instead of counting every vote again)."""
    leaving, returning = excluded - state.excluded, state.excluded - excluded
    if leaving or returning:
        rows = (
            Vote.objects.filter(
                campaign=campaign, criterion=WINS_CRITERION, is_gold=False, rater_id__in=leaving | returning
            )
            .filter(Q(id__lte=state.settled_id) | Q(id__in=state.counted_above))
            .values_list("rater_id", "model_left_id", "model_right_id", "choice")
            .annotate(n=Count("id"))
            .order_by()
        )
        moved = [(left, right, choice, -n if rater in leaving else n) for rater, left, right, choice, n in rows]
        _add_wins(state.wins, state.model_ids, moved)
    state.excluded = excluded


def _cached_wins(campaign: Campaign, model_ids: list[int]) -> _Wins:
    """The wins matrix, its Bradley-Terry scores and their covariance, at most WINS_CACHE_SECONDS old.

    A refresh reads the votes made since the last one (see _Wins), so its cost does not grow with the campaign; a
    rater who becomes excluded (or no longer is) moves only their own votes. The full count runs in the Celery task
    `rating.recount_wins` (asked for every WINS_RECOUNT_SECONDS) and reaches each process through the shared cache;
    only when there is no count anywhere (a cold start) does a request count everything itself, once, and share
    the result."""
    key = f"rating:wins:{campaign.pk}"
    now = timezone.now()
    state = cache.get(key)
    if not isinstance(state, _Wins) or state.model_ids != model_ids:
        state = None
    if state is not None and now.timestamp() - state.refreshed < WINS_CACHE_SECONDS:
        return state
    excluded = _excluded_raters(campaign)
    full = _shared("get", _full_count_key(campaign))
    if isinstance(full, _Wins) and full.model_ids == model_ids and (state is None or full.recounted > state.recounted):
        state = full  # a newer full count; the votes since it are counted below
    if state is None:
        state = _count_all(campaign, model_ids, excluded, now)
        _shared("set", _full_count_key(campaign), state, 2 * WINS_RECOUNT_SECONDS)
    else:
        _move_raters(state, campaign, excluded)
        _count_recent(state, campaign, now)
    if now.timestamp() - state.recounted >= WINS_RECOUNT_SECONDS:
        _ask_for_recount(campaign)
    state.refreshed = now.timestamp()
    state.theta = bt_mle(state.wins) if state.wins.sum() > 0 else None
    state.cov = bt_covariance(state.wins, state.theta) if state.theta is not None else None
    cache.set(key, state, WINS_RECOUNT_SECONDS)
    return state


def _open_pairs_key(campaign: Campaign) -> str:
    return f"rating:open-pairs:{campaign.pk}"


def open_model_pairs(campaign: Campaign, model_ids: list[int]) -> np.ndarray:
    """(K, K) bool: model pairs with at least one image pair under the votes-per-pair target (any rater)."""
    key = _open_pairs_key(campaign)
    cached = cache.get(key)
    if cached is not None and cached[0] == model_ids:
        return cached[1].copy()
    index = {model_id: i for i, model_id in enumerate(model_ids)}
    allowed = np.zeros((len(model_ids), len(model_ids)), dtype=bool)
    rows = (
        ImagePair.objects.filter(campaign=campaign, assigned__lt=campaign.votes_per_pair)
        .values_list("model_a_id", "model_b_id")
        .distinct()
        .order_by()
    )
    for a, b in rows:
        if a in index and b in index:
            allowed[index[a], index[b]] = allowed[index[b], index[a]] = True
    cache.set(key, (model_ids, allowed), OPEN_PAIRS_CACHE_SECONDS)
    return allowed.copy()


# --------------------------------------------------------------------------------------------------
# Handing out the next assignment
# --------------------------------------------------------------------------------------------------


def progress(rater: Rater, campaign: Campaign) -> Progress:
    answered = Assignment.objects.filter(rater=rater, campaign=campaign, status=Assignment.Status.ANSWERED).count()
    return Progress(answered=answered, target=campaign.pairs_per_rater)


@dataclass
class Handout:
    assignment: Assignment | None  # None: nothing is left for this rater
    progress: Progress  # before this assignment is answered


@dataclass
class _History:
    """What one query tells about this rater in this campaign (expired assignments left out)."""

    open_ids: list  # open and unexpired, oldest first
    answered: int
    lean: Counter  # model id -> times on the left minus times on the right (real pairs only)
    gold_sides: Counter  # "left"/"right" -> where the correct gold image was shown


_HISTORY_SQL = f"""
SELECT model_id, answered, lean, gold_left, gold_right, NULL, NULL FROM {RaterTally._meta.db_table}
WHERE rater_id = %(rater)s AND campaign_id = %(campaign)s
UNION ALL
SELECT NULL, 0, 0, 0, 0, id, created_at FROM {Assignment._meta.db_table}
WHERE rater_id = %(rater)s AND status = %(open)s AND campaign_id = %(campaign)s AND expires_at > %(now)s
"""


def _history(rater: Rater, campaign: Campaign, now: datetime) -> _History:
    """The rater's tally in the campaign (RaterTally: one row for answered and gold sides, one per model for the
    lean, kept by triggers) and their open unexpired assignments (at most MAX_OPEN_PER_CAMPAIGN, through the
    (rater, status) index), in one statement whose cost does not grow with the rater's history."""
    params = {
        "rater": rater.pk,
        "campaign": campaign.pk,
        "open": Assignment.Status.OPEN.value,
        "now": connection.ops.adapt_datetimefield_value(now),
    }
    with statement_cursor() as cursor:
        cursor.execute(_HISTORY_SQL, params)
        rows = cursor.fetchall()
    history = _History(open_ids=[], answered=0, lean=Counter(), gold_sides=Counter())
    opened = []
    for model_id, answered, lean, gold_left, gold_right, open_id, created_at in rows:
        if open_id is not None:
            open_id = open_id if isinstance(open_id, uuid.UUID) else uuid.UUID(open_id)
            opened.append((created_at, str(open_id), open_id))
        elif model_id == 0:
            history.answered = answered
            history.gold_sides["left"], history.gold_sides["right"] = gold_left, gold_right
        elif lean:
            history.lean[model_id] = lean
    history.open_ids = [pk for _, _, pk in sorted(opened)]
    return history


def next_assignment(rater: Rater, campaign: Campaign, **kwargs) -> Assignment | None:
    """The assignment this rater should answer next, or None when nothing is left (see hand_out)."""
    return hand_out(rater, campaign, **kwargs).assignment


def hand_out(
    rater: Rater,
    campaign: Campaign,
    *,
    exclude: tuple = (),
    now: datetime | None = None,
    rng: np.random.Generator | None = None,
    savepoint: bool = True,
    rater_locked: bool = False,
) -> Handout:
    """The assignment this rater should answer next (None when nothing is left) and their progress.

    exclude: ids of open assignments the caller already has (the page asks for "the one after this").
    Raises TooManyOpenAssignments when the rater holds MAX_OPEN_PER_CAMPAIGN open ones, all excluded.
    The returned assignment has its prompt and images loaded.

    savepoint=False, inside the caller's transaction: no savepoint of its own (two round trips fewer). A refusal
    (TooManyOpenAssignments) still leaves the caller's transaction usable, but a database error (the rater already
    had the pair the engine chose) is not retried here: it breaks the caller's transaction, and the caller runs it
    again with savepoint=True, where the pair is refused and another one tried.

    rater_locked: the caller's transaction already holds the rater against every other hand-out and tally write of
    theirs, so the hand-out takes no lock of its own (one round trip fewer). True after a vote stored in this
    transaction: on PostgreSQL the tally trigger locked the rater's row FOR NO KEY UPDATE when the vote marked its
    assignment answered (every other hand-out's FOR UPDATE and every other tally write waits for it; tested in
    tests/rating/test_concurrency.py), and SQLite runs one write transaction at a time.
    """
    now = now or timezone.now()
    rng = rng or np.random.default_rng()
    exclude = {str(e) for e in exclude}
    _maybe_sweep(campaign)
    ensure_prepared(campaign)
    refused_keys: list[str] = []  # pairs the database refused for this rater (rater_never_gets_pair_twice)
    for _ in range(MAX_INTEGRITY_RETRIES):
        tried: list[str | None] = []
        try:
            with transaction.atomic(savepoint=savepoint):
                try:
                    return _hand_out(rater, campaign, exclude, now, rng, refused_keys, tried, rater_locked)
                except TooManyOpenAssignments as exc:
                    # Raised before anything is written: leave the block as if all went well, since an exception
                    # leaving it without a savepoint would mark the caller's whole transaction for rollback.
                    refusal = exc
            raise refusal
        except IntegrityError:
            # The rater already had the pair (written outside the engine, or in another campaign): the
            # whole transaction rolled back, counters included; try again without that pair.
            if not tried or not savepoint:
                raise
            if tried[-1] is not None:  # None: the one-statement hand-out failed, naming no pair
                refused_keys.append(tried[-1])
    return Handout(None, progress(rater, campaign))


def _lock_rater(rater: Rater) -> None:
    """Hold the rater's row until the transaction ends (SQLite: every write transaction is serialised anyway)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with statement_cursor() as cursor:
        cursor.execute(f"SELECT id FROM {Rater._meta.db_table} WHERE id = %s{lock}", [rater.pk])


def _hand_out(rater, campaign, exclude, now, rng, refused_keys, tried, rater_locked) -> Handout:
    # One rater's requests run one at a time: two tabs asking at once get the same open assignment.
    if not rater_locked:
        _lock_rater(rater)
    history = _history(rater, campaign, now)
    made = Progress(answered=history.answered, target=campaign.pairs_per_rater)
    for pk in history.open_ids:
        if str(pk) not in exclude:
            resumed = Assignment.objects.select_related("prompt", "image_left", "image_right").get(pk=pk)
            return Handout(resumed, made)
    if len(history.open_ids) >= MAX_OPEN_PER_CAMPAIGN:
        raise TooManyOpenAssignments(f"at most {MAX_OPEN_PER_CAMPAIGN} open assignments per campaign")
    if campaign.pairs_per_rater is not None and history.answered + len(history.open_ids) >= campaign.pairs_per_rater:
        return Handout(None, made)
    expires_at = now + timedelta(seconds=campaign.assignment_ttl_seconds)
    assignment = None
    if campaign.gold_rate > 0 and rng.random() < campaign.gold_rate:
        assignment = _gold_assignment(rater, campaign, history, expires_at, rng, refused_keys, tried)
    if assignment is None:
        assignment = _pair_assignment(rater, campaign, history, expires_at, rng, refused_keys, tried)
    return Handout(assignment, made)


_GOLD_POOL_SQL = f"""
SELECT g.id, g.correct_image_id, g.wrong_image_id FROM {GoldCheck._meta.db_table} g
JOIN {Image._meta.db_table} ci ON ci.id = g.correct_image_id
JOIN {Image._meta.db_table} wi ON wi.id = g.wrong_image_id
WHERE g.campaign_id = %(campaign)s AND ci.status = %(done)s AND wi.status = %(done)s
AND NOT EXISTS (SELECT 1 FROM {Assignment._meta.db_table} a WHERE a.rater_id = %(rater)s AND a.gold_id = g.id)
ORDER BY g.id"""
_GOLD_COLUMNS = columns(GoldCheck, "g") + columns(Prompt, "p") + columns(Image, "ci") + columns(Image, "wi")
_GOLD_SQL = (
    select_list(_GOLD_COLUMNS)
    + f"""
FROM {GoldCheck._meta.db_table} g
JOIN {Prompt._meta.db_table} p ON p.id = g.prompt_id
JOIN {Image._meta.db_table} ci ON ci.id = g.correct_image_id
JOIN {Image._meta.db_table} wi ON wi.id = g.wrong_image_id
WHERE g.id = %(gold)s"""
)


def _gold_assignment(rater, campaign, history, expires_at, rng, refused_keys, tried) -> Assignment | None:
    # The checks this rater has not had whose images are done, as ids, and the chosen one loaded with its prompt and
    # images, in two hand-written statements (the ORM's versions cost several times as much in compiling and
    # building instances as in the database).
    params = {"campaign": campaign.pk, "rater": rater.pk, "done": Image.Status.DONE.value}
    with statement_cursor() as cursor:
        cursor.execute(_GOLD_POOL_SQL, params)
        pool = [
            pk
            for pk, correct_id, wrong_id in cursor.fetchall()
            if Assignment.make_pair_key(correct_id, wrong_id) not in refused_keys
        ]
    if not pool:
        return None
    chosen = pool[int(rng.integers(len(pool)))]
    row = fetch_row(_GOLD_SQL, {"gold": chosen}, _GOLD_COLUMNS)
    if row is None:  # deleted since the pool was read (with its campaign): hand out a real pair instead
        return None
    (gold, prompt, correct, wrong), _ = instances(row, GoldCheck, Prompt, Image, Image)
    gold.prompt, gold.correct_image, gold.wrong_image = prompt, correct, wrong
    # The correct image goes to the side it has appeared on less often for this rater.
    sides = history.gold_sides
    correct_left = sides["left"] < sides["right"] or (sides["left"] == sides["right"] and rng.random() < 0.5)
    left, right = (gold.correct_image, gold.wrong_image) if correct_left else (gold.wrong_image, gold.correct_image)
    assignment = Assignment(
        campaign=campaign,
        rater=rater,
        prompt=gold.prompt,
        image_left=left,
        image_right=right,
        gold=gold,
        expires_at=expires_at,
    )
    tried.append(Assignment.make_pair_key(left.pk, right.pk))
    assignment.save(force_insert=True)
    return assignment


def _pair_assignment(rater, campaign, history, expires_at, rng, refused_keys, tried) -> Assignment | None:
    model_ids = campaign_model_ids(campaign)
    if len(model_ids) < 2:
        return None
    allowed = open_model_pairs(campaign, model_ids)
    fit = _cached_wins(campaign, model_ids)
    wins, theta = fit.wins, fit.theta
    for _ in range(len(model_ids) ** 2):
        if not allowed.any():
            return None
        try:
            i, j = choose_model_pair(
                wins,
                allowed,
                rng,
                min_votes_per_pair=campaign.min_votes_per_model_pair,
                target_votes_per_pair=None,
                policy=campaign.pair_policy,
                theta=theta,
                cov=fit.cov,
            )
        except NoPairAvailable:
            return None
        if connection.vendor == "postgresql":
            a_left = _a_goes_left(history.lean, model_ids[i], model_ids[j], rng)
            taken = _take_image_pair(
                rater, campaign, model_ids[i], model_ids[j], a_left, expires_at, refused_keys, tried
            )
            if taken is not None:
                return taken
        pair = _lock_image_pair(rater, campaign, model_ids[i], model_ids[j], refused_keys)
        if pair is None:  # nothing left of this model pair for this rater
            allowed[i, j] = allowed[j, i] = False
            continue
        left, right = _orient(history.lean, pair, rng)
        assignment = Assignment(
            campaign=campaign,
            rater=rater,
            prompt=pair.prompt,
            image_left=left,
            image_right=right,
            image_pair=pair,
            expires_at=expires_at,
        )
        tried.append(pair.pair_key)
        assignment.save(force_insert=True)
        ImagePair.objects.filter(pk=pair.pk).update(assigned=F("assigned") + 1)
        return assignment
    return None


def _lock_image_pair(
    rater: Rater, campaign: Campaign, model_a: int, model_b: int, refused_keys: list[str]
) -> ImagePair | None:
    """Lock the least-assigned image pair of this model pair that this rater has never been given."""
    seen = Assignment.objects.filter(rater=rater).values("pair_key")
    candidates = ImagePair.objects.filter(
        campaign=campaign, model_a_id=model_a, model_b_id=model_b, assigned__lt=campaign.votes_per_pair
    ).exclude(pair_key__in=seen)
    if refused_keys:
        candidates = candidates.exclude(pair_key__in=refused_keys)
    candidates = candidates.order_by("assigned", "shuffle").select_related("prompt", "image_a", "image_b")
    pair = candidates.select_for_update(skip_locked=True, of=("self",)).first()
    if pair is not None or connection.vendor == "sqlite":  # SQLite: serialised, nothing is ever skipped
        return pair
    # Every free row was locked by raters being served this very moment. Their transactions are short:
    # wait for one and take it if it still has room (PostgreSQL re-checks the filter after the wait), so a
    # rater is not told "nothing left" while slots remain. One row per wait, in a savepoint: a row that
    # filled up while we waited stays locked by us when the re-check drops it (and a locking scan would go on
    # to wait for the next row while holding it), so the savepoint is rolled back to let it go. Holding
    # nothing while waiting, two hand-outs cannot wait for each other (CI saw that deadlock).
    for _ in range(LOCKED_WAITS):
        pick = candidates.values_list("pk", flat=True).first()
        if pick is None:
            return None
        savepoint = transaction.savepoint()
        pair = candidates.filter(pk=pick).select_for_update(of=("self",)).first()
        if pair is not None:
            transaction.savepoint_commit(savepoint)
            return pair
        transaction.savepoint_rollback(savepoint)
    return None


def _a_goes_left(lean: Counter, model_a: int, model_b: int, rng: np.random.Generator) -> bool:
    """Whether model_a's image goes left: the model this rater has seen more often on the left goes right."""
    return lean[model_a] < lean[model_b] or (lean[model_a] == lean[model_b] and rng.random() < 0.5)


def _orient(lean: Counter, pair: ImagePair, rng: np.random.Generator) -> tuple[Image, Image]:
    """(left image, right image) of a locked pair (see _a_goes_left)."""
    a_left = _a_goes_left(lean, pair.model_a_id, pair.model_b_id, rng)
    return (pair.image_a, pair.image_b) if a_left else (pair.image_b, pair.image_a)


_PROMPT_COLUMNS = [f.column for f in Prompt._meta.concrete_fields]

# PostgreSQL: the hand-out of _lock_image_pair + Assignment insert + counter bump in one statement. The same
# rules: the least-assigned pair of the model pair under the target that this rater never had (in any
# campaign), skipping rows other raters' transactions hold; its counter bumped while it is locked.
_TAKE_PAIR_SQL = f"""
WITH picked AS (
    SELECT p.id FROM rating_imagepair p
    WHERE p.campaign_id = %(campaign)s AND p.model_a_id = %(model_a)s AND p.model_b_id = %(model_b)s
      AND p.assigned < %(target)s
      AND NOT EXISTS (SELECT 1 FROM rating_assignment s WHERE s.rater_id = %(rater)s AND s.pair_key = p.pair_key)
      AND NOT (p.pair_key = ANY(%(refused)s::varchar[]))
    ORDER BY p.assigned, p.shuffle
    LIMIT 1
    FOR UPDATE OF p SKIP LOCKED
), bumped AS (
    UPDATE rating_imagepair p SET assigned = p.assigned + 1 FROM picked WHERE p.id = picked.id
    RETURNING p.id, p.prompt_id, p.image_a_id, p.image_b_id, p.pair_key
), inserted AS (
    INSERT INTO rating_assignment (id, campaign_id, rater_id, prompt_id, image_left_id, image_right_id, pair_key,
                                   gold_id, image_pair_id, status, created_at, expires_at, answered_at)
    SELECT %(id)s, %(campaign)s, %(rater)s, b.prompt_id,
           CASE WHEN %(a_left)s THEN b.image_a_id ELSE b.image_b_id END,
           CASE WHEN %(a_left)s THEN b.image_b_id ELSE b.image_a_id END,
           b.pair_key, NULL, b.id, %(open)s, %(now)s, %(expires_at)s, NULL
    FROM bumped b
    RETURNING image_pair_id, prompt_id, image_left_id, image_right_id, pair_key, created_at
)
SELECT i.image_pair_id, i.image_left_id, i.image_right_id, i.pair_key, i.created_at,
       {", ".join(f'pr."{c}"' for c in _PROMPT_COLUMNS)}
FROM inserted i JOIN {Prompt._meta.db_table} pr ON pr.id = i.prompt_id
"""


def _take_image_pair(
    rater, campaign, model_a: int, model_b: int, a_left: bool, expires_at, refused_keys, tried
) -> Assignment | None:
    """PostgreSQL: pick, lock, count and hand out an image pair in one statement (see _TAKE_PAIR_SQL); None
    when no unlocked row qualifies (the caller then falls back to _lock_image_pair, which waits for locked
    rows). The assignment's prompt is loaded, its images load on first use."""
    assignment_id = uuid.uuid4()
    params = {
        "campaign": campaign.pk,
        "model_a": model_a,
        "model_b": model_b,
        "target": campaign.votes_per_pair,
        "rater": rater.pk,
        "refused": list(refused_keys),
        "id": assignment_id,
        "a_left": a_left,
        "open": Assignment.Status.OPEN.value,
        "now": timezone.now(),
        "expires_at": expires_at,
    }
    tried.append(None)  # an IntegrityError here names no pair: hand_out tries again without refusing one
    with statement_cursor() as cursor:
        cursor.execute(_TAKE_PAIR_SQL, params)
        row = cursor.fetchone()
    tried.pop()
    if row is None:
        return None
    pair_id, left_id, right_id, pair_key, created_at, *prompt_values = row
    tried.append(pair_key)
    prompt = Prompt.from_db(connection.alias, _PROMPT_COLUMNS_ATTNAMES, prompt_values)
    assignment = Assignment.from_db(
        connection.alias,
        ["id", "campaign_id", "rater_id", "prompt_id", "image_left_id", "image_right_id", "pair_key", "gold_id",
         "image_pair_id", "status", "created_at", "expires_at", "answered_at"],
        [assignment_id, campaign.pk, rater.pk, prompt.pk, left_id, right_id, pair_key, None,
         pair_id, Assignment.Status.OPEN, created_at, expires_at, None],
    )  # fmt: skip
    assignment.campaign, assignment.rater, assignment.prompt = campaign, rater, prompt
    return assignment


_PROMPT_COLUMNS_ATTNAMES = [f.attname for f in Prompt._meta.concrete_fields]
