"""Does /next get slower as a campaign stores more votes? /next latency at 10k, 100k and 1M stored votes.

    .venv/bin/python bench/next_at_scale.py [--sizes 10000,100000,1000000] [--requests 600] [--database-url ...]

Creates its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_bench_scale, dropped at
the end unless --keep), migrates it and seeds a finished run of 10 models x 400 prompts x 2 seeds (Image rows
only) and a campaign on it whose votes-per-pair target (100) leaves pairs free at every size. Then, for each size
in turn, it grows the same campaign to that many stored votes with bulk INSERT ... SELECT generate_series
(seeded raters with 100 answered assignments each, two criteria per assignment, the image pairs' counters
raised to match, ANALYZE), and times GET /api/assignments/next through Django's test client (session auth,
throttle, engine, serialisation; DJANGO_DEBUG=0) for --requests calls by 50 fresh raters, each call followed
by the rater's vote (so every call hands out a new pair). The engine's caches live as they do in one web
process: the wins matrix and the open model pairs expire every few seconds during the timed calls.

The baseline is the smallest size, timed in the same run: the figure to read is p50 / p99 at each size against
it (the bar: no growth with the campaign).

Then the history axis (--history 0,500,2000; '' skips it), in the campaign as grown: for each length h, 20 new
raters who each answered h pairs of it (bulk INSERT), and /next timed for them two ways in alternating rounds:
the engine as it is (the rater's history read from RaterTally, which triggers keep on every write) and, as the
baseline timed in the same run, main's engine (every assignment of the rater read and folded in Python,
history_by_python_fold, with the tally triggers disabled so its writes do not pay for them either). Then the
history read alone, both ways. The bar: /next at h = 2,000 as at h = 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import recreate_database, release_database  # noqa: E402 (needs ROOT on the path)
from bench.next_assignment import configure_django, make_raters, percentile, seed, time_endpoint  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_bench_scale"
N_MODELS, N_PROMPTS, N_SEEDS = 10, 400, 2
ASSIGNMENTS_PER_SEEDED_RATER = 100
CRITERIA = ("prompt_following", "aesthetics")  # two votes per seeded assignment


def history_by_python_fold(rater, campaign, now):
    """The engine's history as it was read before the aggregate: every assignment of the rater in the campaign,
    three joins, folded in Python (the baseline of the history axis; tests/rating/test_history.py checks that the
    engine's aggregate gives the same answer)."""
    from collections import Counter

    from evalsite.rating.engine import _History
    from evalsite.rating.models import Assignment

    rows = (
        Assignment.objects.filter(rater=rater, campaign=campaign)
        .exclude(status=Assignment.Status.EXPIRED)
        .order_by("created_at")
        .values_list(
            "id",
            "status",
            "expires_at",
            "image_pair_id",
            "image_left__model_id",
            "image_right__model_id",
            "image_left_id",
            "gold__correct_image_id",
        )
    )
    history = _History(open_ids=[], answered=0, lean=Counter(), gold_sides=Counter())
    for pk, status, expires_at, pair_id, left_model, right_model, left_image, gold_correct_image in rows:
        if status == Assignment.Status.ANSWERED:
            history.answered += 1
        elif expires_at > now:
            history.open_ids.append(pk)
        if pair_id is not None:
            history.lean[left_model] += 1
            history.lean[right_model] -= 1
        elif gold_correct_image is not None:
            history.gold_sides["left" if left_image == gold_correct_image else "right"] += 1
    return history


def insert_answered(cursor, campaign, rater_ids: list[int], per_rater: int) -> None:
    """Give each rater `per_rater` answered assignments of distinct image pairs in the campaign (half of them with
    model b on the left), a day old, and raise the pairs' counters to match."""
    # Pair number (rater * K + k) mod P: K < P distinct pairs per rater, spread evenly over the campaign. The
    # pairs are numbered in a temporary table keyed by that number, so the join is an index lookup.
    cursor.execute(
        "CREATE TEMPORARY TABLE numbered_pairs AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, prompt_id, "
        "image_a_id, image_b_id, pair_key FROM rating_imagepair WHERE campaign_id = %s",
        [campaign.pk],
    )
    cursor.execute("ALTER TABLE numbered_pairs ADD PRIMARY KEY (n)")
    cursor.execute("ANALYZE numbered_pairs")
    cursor.execute("SELECT count(*) FROM numbered_pairs")
    total = cursor.fetchone()[0]
    if per_rater >= total:
        raise SystemExit(f"{per_rater} pairs per rater, but the campaign has only {total}")
    cursor.execute(
        """
        INSERT INTO rating_assignment (id, campaign_id, rater_id, prompt_id, image_left_id, image_right_id,
                                       pair_key, image_pair_id, status, created_at, expires_at, answered_at)
        SELECT gen_random_uuid(), %(campaign)s, r.id, p.prompt_id,
               CASE WHEN k %% 2 = 0 THEN p.image_a_id ELSE p.image_b_id END,
               CASE WHEN k %% 2 = 0 THEN p.image_b_id ELSE p.image_a_id END, p.pair_key, p.id,
               'answered', now() - interval '1 day', now() - interval '1 day' + interval '30 minutes',
               now() - interval '1 day'
        FROM rating_rater r
        CROSS JOIN generate_series(0, %(k)s - 1) k
        JOIN numbered_pairs p ON p.n = (r.id::bigint * %(k)s + k) %% %(total)s
        WHERE r.id = ANY(%(raters)s)
        """,
        {"campaign": campaign.pk, "k": per_rater, "raters": rater_ids, "total": total},
    )
    cursor.execute("DROP TABLE numbered_pairs")
    cursor.execute(
        "UPDATE rating_imagepair p SET assigned = p.assigned + c.n, answered = p.answered + c.n "
        "FROM (SELECT image_pair_id, count(*) AS n FROM rating_assignment WHERE rater_id = ANY(%s) "
        "GROUP BY image_pair_id) c WHERE p.id = c.image_pair_id",
        [rater_ids],
    )


def grow_to(campaign, votes: int) -> float:
    """Add seeded raters and their answered assignments and votes until the campaign stores `votes` votes (to
    within one rater's worth); returns the seconds it took."""
    from django.db import connection

    from evalsite.rating.models import Vote

    start = time.perf_counter()
    have = Vote.objects.filter(campaign=campaign).count()
    per_rater = ASSIGNMENTS_PER_SEEDED_RATER * len(CRITERIA)
    new_raters = max(0, (votes - have) // per_rater)
    if new_raters == 0:
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM auth_user")
        first_user = cursor.fetchone()[0] + 1
        cursor.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, "
            "is_active, date_joined) SELECT '!', false, 'seeded-' || g, '', '', '', false, true, now() "
            "FROM generate_series(%s, %s) g",
            [first_user, first_user + new_raters - 1],
        )
        cursor.execute(
            "INSERT INTO rating_rater (user_id, instructions_seen_at, flagged, flagged_reason, simulated, "
            "participant_id, created_at) SELECT id, now(), false, '', true, '', now() FROM auth_user WHERE id >= %s "
            "RETURNING id",
            [first_user],
        )
        rater_ids = [row[0] for row in cursor.fetchall()]
        low, high = min(rater_ids), max(rater_ids)
        cursor.execute(
            "INSERT INTO rating_campaign_raters (campaign_id, rater_id) SELECT %s, id FROM rating_rater "
            "WHERE id BETWEEN %s AND %s",
            [campaign.pk, low, high],
        )
        insert_answered(cursor, campaign, rater_ids, ASSIGNMENTS_PER_SEEDED_RATER)
        cursor.execute(
            """
            INSERT INTO rating_vote (assignment_id, campaign_id, rater_id, criterion, choice, model_left_id,
                                     model_right_id, time_taken_ms, idempotency_key, is_gold, gold_correct, created_at)
            SELECT a.id, a.campaign_id, a.rater_id, c.criterion,
                   (ARRAY['left', 'right', 'tie', 'both_bad'])[1 + floor(random() * 4)::int],
                   il.model_id, ir.model_id, 2000, md5(a.id::text), false, NULL, a.answered_at
            FROM rating_assignment a
            JOIN runs_image il ON il.id = a.image_left_id
            JOIN runs_image ir ON ir.id = a.image_right_id
            CROSS JOIN unnest(%(criteria)s::text[]) AS c(criterion)
            WHERE a.rater_id = ANY(%(raters)s)
            """,
            {"criteria": list(CRITERIA), "raters": rater_ids},
        )
        cursor.execute("ANALYZE")
    return time.perf_counter() - start


def time_recount(campaign) -> None:
    """The full wins count that the Celery task rating.recount_wins does (once before this change, in whichever /next
    met a cold or 10-minute-old cache), against what a process with a cold cache now does when the task's count
    is in the shared cache: take it up and add the votes since."""
    from django.core.cache import cache

    from evalsite.rating import engine

    model_ids = engine.campaign_model_ids(campaign)
    start = time.perf_counter()
    engine.recount_wins(campaign)
    task_s = time.perf_counter() - start
    cache.delete(f"rating:wins:{campaign.pk}")
    start = time.perf_counter()
    engine._cached_wins(campaign, model_ids)
    adopt_ms = (time.perf_counter() - start) * 1000
    print(f"          full recount (the task's work, formerly in a /next) {task_s * 1000:8.1f} ms; a cold process "
          f"taking the count up {adopt_ms:6.1f} ms", flush=True)  # fmt: skip


HISTORY_RATERS = 20  # timed raters per history length


def history_axis(campaign, histories: list[int], n_requests: int) -> None:
    """/next for raters who already answered h pairs of the campaign, for each h, two ways in alternating rounds of
    one call per rater (so both meet the same load):
      - "tally": the engine as it is (the history read from RaterTally, kept by triggers on every write);
      - "main": the engine before it, timed in the same run: the history folded in Python from every assignment
        (history_by_python_fold) with the tally triggers disabled, so neither the read nor the writes pay for it.
    Then the history read alone, both ways, for the same raters."""
    from django.db import connection
    from django.utils import timezone

    from evalsite.rating import engine

    readings = {"tally": engine._history, "main": history_by_python_fold}

    def use(name: str) -> None:
        engine._history = readings[name]
        with connection.cursor() as cursor:
            toggle = "ENABLE" if name == "tally" else "DISABLE"
            cursor.execute(f"ALTER TABLE rating_assignment {toggle} TRIGGER rating_assignment_tally")

    print(f"\n/next by the rater's history ({campaign.votes.count()} votes stored, {HISTORY_RATERS} raters per row)")
    rows = []
    for h in histories:
        raters = make_raters(campaign, HISTORY_RATERS, prefix=f"history-{h}")
        with connection.cursor() as cursor:
            if h:
                insert_answered(cursor, campaign, [r.pk for r in raters], h)
            cursor.execute("ANALYZE")
        ms = {name: [] for name in readings}
        rounds = max(1, n_requests // len(raters))
        try:
            for i in range(2 * rounds):
                name = list(readings)[i % 2]
                use(name)
                ms[name] += time_endpoint(campaign, raters, len(raters))
        finally:
            use("tally")
        read_ms = {name: [] for name in readings}
        for i in range(2 * rounds):
            name = list(readings)[i % 2]
            for rater in raters:
                start = time.perf_counter()
                readings[name](rater, campaign, timezone.now())
                read_ms[name].append((time.perf_counter() - start) * 1000)
        for name in readings:
            rows.append((h, name, ms[name], read_ms[name]))
            print(
                f"history {h:>5}  {name:<5}  /next p50 {percentile(ms[name], 0.5):6.2f} ms  p99 "
                f"{percentile(ms[name], 0.99):7.2f} ms   history read p50 {percentile(read_ms[name], 0.5):6.2f} ms  "
                f"p99 {percentile(read_ms[name], 0.99):7.2f} ms  (n={len(ms[name])}, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    base = {name: (percentile(m, 0.5), percentile(r, 0.5)) for h, name, m, r in rows if h == histories[0]}
    print()
    print("history  engine  /next p50    p99    vs first   read p50    p99    vs first")
    for h, name, m, r in rows:
        p50, read50 = percentile(m, 0.5), percentile(r, 0.5)
        print(
            f"{h:>7}  {name:<6}  {p50:9.2f}  {percentile(m, 0.99):7.2f}  {p50 / base[name][0]:7.2f}x  "
            f"{read50:9.2f}  {percentile(r, 0.99):7.2f}  {read50 / base[name][1]:7.2f}x"
        )
    by = {(h, name): (m, r) for h, name, m, r in rows}
    print()
    for h in histories:
        (tally_ms, tally_read), (main_ms, main_read) = by[(h, "tally")], by[(h, "main")]
        print(
            f"history {h:>5}: tally / main  /next p50 {percentile(tally_ms, 0.5) / percentile(main_ms, 0.5):5.2f}x "
            f"p99 {percentile(tally_ms, 0.99) / percentile(main_ms, 0.99):5.2f}x   history read p50 "
            f"{percentile(tally_read, 0.5) / percentile(main_read, 0.5):5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="stored votes, comma-separated, growing")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument(
        "--history", default="0,500,2000", help="answered pairs per timed rater, history axis ('' skips it)"
    )
    parser.add_argument("--history-requests", type=int, default=400, help="timed /next calls per history and reading")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    histories = [int(h) for h in args.history.split(",") if h]

    recreate_database(args.database_url)
    try:
        configure_django(args.database_url)
        from django.core.management import call_command

        from evalsite.rating import engine
        from evalsite.rating.models import Campaign, Vote

        call_command("migrate", verbosity=0)
        campaign, _ = seed(N_MODELS, N_PROMPTS, N_SEEDS, n_raters=0)
        Campaign.objects.filter(pk=campaign.pk).update(votes_per_pair=100)
        campaign.refresh_from_db()
        made = engine.prepare_campaign(campaign)
        print(f"seeded {made['images']} images, {made['new_pairs']} image pairs; load {os.getloadavg()[0]:.1f}")
        rows = []
        for step, size in enumerate(sizes):
            seconds = grow_to(campaign, size)
            stored = Vote.objects.filter(campaign=campaign).count()
            raters = make_raters(campaign, 50, prefix=f"timed-{step}")
            ms = time_endpoint(campaign, raters, args.requests)
            row = (size, stored, percentile(ms, 0.5), percentile(ms, 0.99), sum(ms) / len(ms))
            rows.append(row)
            print(
                f"{stored:>9} votes stored (grown in {seconds:5.1f} s): /next p50 {row[2]:6.2f} ms"
                f"  p99 {row[3]:7.2f} ms  mean {row[4]:6.2f} ms  (n={len(ms)}, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            time_recount(campaign)
        base = rows[0]
        print()
        print("votes stored   /next p50    p99     p50 / smallest   p99 / smallest")
        for _, stored, p50, p99, _ in rows:
            print(f"{stored:>12}  {p50:7.2f}  {p99:7.2f}      {p50 / base[2]:5.2f}x          {p99 / base[3]:5.2f}x")
        if histories:
            history_axis(campaign, histories, args.history_requests)
    finally:
        release_database(args.database_url, args.keep)


if __name__ == "__main__":
    main()
