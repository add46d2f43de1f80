"""Recording a rater's answers to one assignment: once, completely, or not at all.

The page sends one submission per assignment: a choice for every criterion asked and a client-made
idempotency key. Everything happens in one transaction with the assignment row locked, so a double
click, a retry after a lost response, or two tabs racing store the votes once. A resubmission with the
same key gets the stored votes back; a different key gets "already answered". The unique constraint
(assignment, criterion) backs this up: an IntegrityError is read back as "already recorded", not a 500.

The statement that locks the assignment also reads who owns it and how many pairs that rater had answered in
the campaign, so the API needs neither a Rater lookup nor a COUNT after the transaction (`submit_votes`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, F
from django.utils import timezone

from evalsite.catalog.models import Prompt
from evalsite.rating.models import Assignment, Campaign, Choice, GoldCheck, ImagePair, Rater, RaterTally, Vote
from evalsite.rating.rows import (
    RUN_IS_3D_PARAMS,
    columns,
    fetch_row,
    instances,
    loaded,
    run_is_3d,
    select_list,
    statement_cursor,
)
from evalsite.runs.models import ComparisonRun, Image


@dataclass
class VoteSubmission:
    idempotency_key: str  # client-made, the same for every retry of this submission
    choices: dict[str, str]  # criterion -> left / right / tie / both_bad
    time_taken_ms: int | None  # time from showing the pair to submitting


class VoteRefused(Exception):
    """The submission cannot be stored; `code` and `status` go into the API's JSON error."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def check_choices(assignment: Assignment, choices: dict[str, str]) -> None:
    """Every criterion asked for this assignment has exactly one valid answer, and nothing else."""
    asked = assignment.campaign.criteria_for(assignment.prompt)
    unknown = sorted(set(choices) - set(asked))
    if unknown:
        raise VoteRefused(
            400,
            "unknown_criterion",
            f"criteria not asked for this pair: {', '.join(unknown)}; asked: {', '.join(asked)}",
        )
    missing = [c for c in asked if c not in choices]
    if missing:
        raise VoteRefused(400, "missing_criterion", f"an answer is needed for: {', '.join(missing)}")
    valid = {c.value for c in Choice}
    for criterion, choice in choices.items():
        if choice not in valid:
            raise VoteRefused(
                400, "unknown_choice", f"choices.{criterion}: {choice!r} is not one of {', '.join(sorted(valid))}"
            )


@dataclass
class Recorded:
    votes: list[Vote]  # one per criterion asked, in criterion order
    created: bool  # False: this submission was stored before (a replay); nothing new was stored
    answered: int  # pairs the assignment's rater has answered in its campaign, this one included
    target: int | None  # the campaign's pairs_per_rater
    campaign_id: int  # the assignment's campaign
    # The rater and the campaign (every column, with its run) as the vote's statement read them, when the rater is
    # still one of the campaign's raters and it is open: what handing out the next pair needs (else None: asked again).
    rater_in_open_campaign: tuple[Rater, Campaign] | None = None


def record_votes(
    assignment_id, rater: Rater, submission: VoteSubmission, now: datetime | None = None
) -> tuple[list[Vote], bool]:
    """Store one vote per criterion; returns (votes, created). Raises VoteRefused."""
    recorded = _record(assignment_id, lambda assignment: assignment.rater_id == rater.pk, submission, now)
    return recorded.votes, recorded.created


def submit_votes(
    assignment_id, user_id: int, submission: VoteSubmission, now: datetime | None = None, *, savepoint: bool = True
) -> Recorded:
    """`record_votes` for the rater who is the user `user_id` (the API's caller), with that rater's progress,
    in the statements of the one transaction. Raises VoteRefused (403 not_your_assignment also when the user
    is no rater at all: the caller tells the two apart, on that refusal only).

    savepoint=False inside the caller's transaction: no savepoint of its own, and a lost race (IntegrityError)
    is raised for the caller to run its transaction again (the second run finds the stored vote)."""
    return _record(
        assignment_id, lambda assignment: assignment.rater.user_id == user_id, submission, now, savepoint=savepoint
    )


# The assignment locked, with what a vote needs to know about it, in one narrow statement: who owns it (the rater's
# user), how many pairs that rater had answered in the campaign (their RaterTally row, kept by triggers, so the cost
# does not grow with the history), the campaign's questions and target, whether the run is text-to-3D (the
# questions depend on it), whether the prompt asks for text, the two images' models and the gold check's answer.
# Hand-written because the ORM's version (select_related over eight tables, every column) cost ~4x as much per
# vote in compiling, planning and building model instances (bench/vote_path.py); the statement count is the same.
_LOCK_COLUMNS = (
    columns(Assignment, "a")
    + columns(Campaign, "c")
    + columns(ComparisonRun, "rn")
    + [
        ("r.user_id", Rater._meta.get_field("user")),
        ("COALESCE((SELECT t.answered FROM rating_ratertally t WHERE t.rater_id = a.rater_id "
         "AND t.campaign_id = a.campaign_id AND t.model_id = 0), 0)", RaterTally._meta.get_field("answered")),
        (f"EXISTS (SELECT 1 FROM {Campaign.raters.through._meta.db_table} m WHERE m.campaign_id = a.campaign_id "
         "AND m.rater_id = a.rater_id)", BooleanField()),
        run_is_3d("c.run_id"),
        ("pr.detected_needs_text", Prompt._meta.get_field("detected_needs_text")),
        ("pr.needs_text_override", Prompt._meta.get_field("needs_text_override")),
        ("il.model_id", Image._meta.get_field("model")),
        ("ir.model_id", Image._meta.get_field("model")),
        ("g.criterion", GoldCheck._meta.get_field("criterion")),
        ("g.correct_image_id", GoldCheck._meta.get_field("correct_image")),
    ]
)  # fmt: skip
_LOCK_SQL = (
    select_list(_LOCK_COLUMNS)
    + """
FROM rating_assignment a
JOIN rating_rater r ON r.id = a.rater_id
JOIN rating_campaign c ON c.id = a.campaign_id
JOIN runs_comparisonrun rn ON rn.id = c.run_id
JOIN catalog_prompt pr ON pr.id = a.prompt_id
JOIN runs_image il ON il.id = a.image_left_id
JOIN runs_image ir ON ir.id = a.image_right_id
LEFT JOIN rating_goldcheck g ON g.id = a.gold_id
WHERE a.id = %(id)s"""
)


def _lock_assignment(assignment_id) -> tuple[Assignment, int, bool] | None:
    """(the assignment, locked for this transaction, with its campaign and run loaded, its prompt, rater, images and
    gold check as far as a vote needs them; the pairs its rater had answered in the campaign; whether the rater is
    one of the campaign's raters), or None."""
    sql = _LOCK_SQL + (" FOR UPDATE OF a" if connection.features.has_select_for_update_of else "")
    pk = Assignment._meta.pk.get_db_prep_value(assignment_id, connection)
    row = fetch_row(sql, {"id": pk, **RUN_IS_3D_PARAMS}, _LOCK_COLUMNS)
    if row is None:
        return None
    (assignment, campaign, run), rest = instances(row, Assignment, Campaign, ComparisonRun)
    assignment.campaign, campaign.run = campaign, run
    (user_id, answered, member, is_3d, detected, override, left_model, right_model, gold_criterion,
     gold_correct_image) = rest  # fmt: skip
    run.is_3d = is_3d  # a cached_property: asks nothing more
    assignment.rater = loaded(Rater, id=assignment.rater_id, user_id=user_id)
    assignment.prompt = loaded(
        Prompt, id=assignment.prompt_id, detected_needs_text=detected, needs_text_override=override
    )
    assignment.image_left = loaded(Image, id=assignment.image_left_id, model_id=left_model)
    assignment.image_right = loaded(Image, id=assignment.image_right_id, model_id=right_model)
    gold = None
    if assignment.gold_id is not None:
        gold = loaded(GoldCheck, id=assignment.gold_id, criterion=gold_criterion, correct_image_id=gold_correct_image)
    assignment.gold = gold
    return assignment, answered, member


def _record(
    assignment_id,
    owns: Callable[[Assignment], bool],
    submission: VoteSubmission,
    now: datetime | None,
    *,
    savepoint: bool = True,
) -> Recorded:
    now = now or timezone.now()
    try:
        with transaction.atomic(savepoint=savepoint):
            locked = _lock_assignment(assignment_id)
            if locked is None:
                raise VoteRefused(404, "not_found", "no such assignment")
            assignment, answered_before, member = locked
            if not owns(assignment):
                raise VoteRefused(403, "not_your_assignment", "this assignment belongs to another rater")
            check_choices(assignment, submission.choices)
            target = assignment.campaign.pairs_per_rater
            if assignment.status == Assignment.Status.ANSWERED:  # votes and status are written together
                stored = _replay(list(assignment.votes.order_by("id")), submission)
                return Recorded(
                    stored, False, answered_before, target, assignment.campaign_id, _context(assignment, member)
                )
            if assignment.status != Assignment.Status.OPEN or assignment.expires_at <= now:
                raise VoteRefused(
                    410, "assignment_expired", "this pair expired before the answer arrived; ask for the next pair"
                )
            votes = _votes(assignment, submission, now)
            assignment.status = Assignment.Status.ANSWERED
            assignment.answered_at = now
            if connection.vendor == "postgresql":
                _store_answer(assignment, votes)
            else:
                Vote.objects.bulk_create(votes)
                assignment.save(update_fields=["status", "answered_at"])
                if assignment.image_pair_id is not None:
                    ImagePair.objects.filter(pk=assignment.image_pair_id).update(answered=F("answered") + 1)
            return Recorded(
                votes, True, answered_before + 1, target, assignment.campaign_id, _context(assignment, member)
            )
    except IntegrityError:
        # A concurrent submission for this assignment committed first (only reachable without row locks).
        if not savepoint:  # the caller's transaction is broken: it runs again and replays
            raise
        stored = list(
            Vote.objects.filter(assignment_id=assignment_id).select_related("assignment__campaign").order_by("id")
        )
        if not stored:
            raise
        done = stored[0].assignment
        answered = Assignment.objects.filter(
            rater_id=done.rater_id, campaign_id=done.campaign_id, status=Assignment.Status.ANSWERED
        ).count()
        return Recorded(_replay(stored, submission), False, answered, done.campaign.pairs_per_rater, done.campaign_id)


def _context(assignment: Assignment, member: bool) -> tuple[Rater, Campaign] | None:
    return (assignment.rater, assignment.campaign) if member and assignment.campaign.is_open else None


def _replay(stored: list[Vote], submission: VoteSubmission) -> list[Vote]:
    if stored[0].idempotency_key != submission.idempotency_key:
        raise VoteRefused(409, "already_answered", "this pair was already answered by an earlier submission")
    return stored


_VOTE_COLUMNS = [
    "assignment_id", "campaign_id", "rater_id", "criterion", "choice", "model_left_id", "model_right_id",
    "time_taken_ms", "idempotency_key", "is_gold", "gold_correct", "created_at",
]  # fmt: skip


@functools.cache
def _store_answer_sql(n_votes: int) -> str:
    rows = ", ".join("(" + ", ".join(f"%(v{k}_{column})s" for column in _VOTE_COLUMNS) + ")" for k in range(n_votes))
    return f"""
WITH stored AS (
    INSERT INTO {Vote._meta.db_table} ({", ".join(_VOTE_COLUMNS)}) VALUES {rows} RETURNING id
), answered AS (
    UPDATE {Assignment._meta.db_table} SET status = %(answered)s, answered_at = %(now)s WHERE id = %(assignment)s
), counted AS (
    UPDATE {ImagePair._meta.db_table} SET answered = answered + 1 WHERE id = %(pair)s
)
SELECT id FROM stored"""


def _store_answer(assignment: Assignment, votes: list[Vote]) -> None:
    """PostgreSQL: the votes, the assignment marked answered and its image pair's counter, in one statement (the ORM
    sends three: bulk_create, save, update). Sets each vote's id; the vote rows' order is the VALUES order."""
    params = {"answered": assignment.status, "now": assignment.answered_at, "assignment": assignment.pk,
              "pair": assignment.image_pair_id}  # fmt: skip
    for k, vote in enumerate(votes):
        params.update({f"v{k}_{column}": getattr(vote, column) for column in _VOTE_COLUMNS})
    with statement_cursor() as cursor:
        cursor.execute(_store_answer_sql(len(votes)), params)
        ids = [row[0] for row in cursor.fetchall()]
    for vote, pk in zip(votes, ids, strict=True):
        vote.id = pk
        vote._state.adding = False


def _votes(assignment: Assignment, submission: VoteSubmission, now: datetime) -> list[Vote]:
    gold = assignment.gold
    correct_side = None
    if gold is not None:
        correct_side = Choice.LEFT if assignment.image_left_id == gold.correct_image_id else Choice.RIGHT
    votes = []
    for criterion in assignment.campaign.criteria_for(assignment.prompt):
        choice = submission.choices[criterion]
        gold_correct = None
        if gold is not None and criterion == gold.criterion:
            gold_correct = choice == correct_side
        votes.append(
            Vote(
                assignment=assignment,
                campaign_id=assignment.campaign_id,
                rater_id=assignment.rater_id,
                criterion=criterion,
                choice=choice,
                model_left_id=assignment.image_left.model_id,
                model_right_id=assignment.image_right.model_id,
                time_taken_ms=submission.time_taken_ms,
                idempotency_key=submission.idempotency_key,
                is_gold=gold is not None,
                gold_correct=gold_correct,
                created_at=now,
            )
        )
    return votes
