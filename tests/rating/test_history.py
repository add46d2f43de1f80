"""The rater's history in a campaign, as /next reads it: the tally the triggers keep (RaterTally) plus the open
assignments, the same answer as the Python fold over every assignment that it replaced (kept in
bench/next_at_scale.py as the baseline it is timed against), through votes, expiry, deletions and the backfill.
"""

from __future__ import annotations

import importlib
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from bench.next_at_scale import history_by_python_fold
from evalsite.rating import engine
from evalsite.rating.models import Assignment, GoldCheck, ImagePair, RaterTally
from evalsite.rating.voting import VoteSubmission, record_votes
from evalsite.runs.models import Image

OPEN, ANSWERED, EXPIRED = Assignment.Status.OPEN, Assignment.Status.ANSWERED, Assignment.Status.EXPIRED


def _nonzero(counter: Counter) -> dict:
    return {k: v for k, v in counter.items() if v}


def _same_as_the_fold(rater, campaign, now) -> engine._History:
    history, old = engine._history(rater, campaign, now), history_by_python_fold(rater, campaign, now)
    assert (history.answered, history.open_ids) == (old.answered, old.open_ids)
    assert _nonzero(history.lean) == _nonzero(old.lean)
    assert _nonzero(history.gold_sides) == _nonzero(old.gold_sides)
    return history


@pytest.fixture
def history(make_run, make_campaign, rater_of):
    """A rater with answered, open, past-expiry, expired and gold assignments in a campaign, and assignments of
    another rater and in another campaign that must not count; returns what a test needs to know of it."""
    run = make_run(n_models=3, seeds=(0, 1))
    campaign = make_campaign(run=run, gold_rate=0.0)
    other_campaign = make_campaign(run=run, name="other", gold_rate=0.0)
    engine.prepare_campaign(campaign)
    engine.prepare_campaign(other_campaign)
    rater, someone_else = rater_of(campaign), rater_of(campaign, "someone-else")
    now = timezone.now()
    pairs = list(ImagePair.objects.filter(campaign=campaign).select_related("image_a", "image_b").order_by("id"))
    assert len(pairs) >= 10

    def give(pair, a_left, status, expires_in=600, created_ago=0, who=rater, where=campaign):
        left, right = (pair.image_a, pair.image_b) if a_left else (pair.image_b, pair.image_a)
        assignment = Assignment.objects.create(
            campaign=where,
            rater=who,
            prompt_id=pair.prompt_id,
            image_left=left,
            image_right=right,
            image_pair=pair if where == campaign else None,
            status=status,
            expires_at=now + timedelta(seconds=expires_in),
        )
        Assignment.objects.filter(pk=assignment.pk).update(created_at=now - timedelta(seconds=created_ago))
        ImagePair.objects.filter(pk=pair.pk).update(assigned=F("assigned") + 1)  # as the engine counts it
        return assignment, left.model_id, right.model_id

    counted = [  # (assignment, left model, right model) of the real pairs that move the lean
        give(pairs[0], True, ANSWERED, created_ago=900),
        give(pairs[1], True, ANSWERED, created_ago=800),
        give(pairs[2], True, ANSWERED, created_ago=700),
        give(pairs[3], False, OPEN, created_ago=10),  # open: resumed second
        give(pairs[4], True, OPEN, created_ago=20),  # open: resumed first (older)
        give(pairs[5], True, OPEN, expires_in=-5, created_ago=700),  # past its expiry, not yet swept
    ]
    give(pairs[6], True, EXPIRED, expires_in=-5, created_ago=1000)  # swept: left out entirely
    give(pairs[7], True, ANSWERED, who=someone_else)  # another rater
    give(pairs[8], True, ANSWERED, where=other_campaign)  # another campaign

    # Gold checks: the correct image on the left twice, on the right once, and one whose check was deleted.
    images = list(Image.objects.filter(run=run, seed=0).order_by("model_id", "prompt_id"))
    golds = [
        GoldCheck.objects.create(
            campaign=campaign, prompt_id=images[i].prompt_id, correct_image=images[i], wrong_image=images[i + 1]
        )
        for i in (0, 3, 6, 4)
    ]
    sides_and_states = ((True, ANSWERED), (False, ANSWERED), (True, OPEN), (True, ANSWERED))
    for gold, (correct_left, status) in zip(golds, sides_and_states, strict=True):
        left, right = (gold.correct_image, gold.wrong_image) if correct_left else (gold.wrong_image, gold.correct_image)
        gold_assignment = Assignment.objects.create(
            campaign=campaign,
            rater=rater,
            prompt_id=gold.prompt_id,
            image_left=left,
            image_right=right,
            gold=gold,
            status=status,
            expires_at=now + timedelta(seconds=600),
        )
        Assignment.objects.filter(pk=gold_assignment.pk).update(created_at=now - timedelta(seconds=5))
    golds[3].delete()  # its assignment keeps gold=NULL: answered, but on no side

    return {"rater": rater, "campaign": campaign, "now": now, "counted": counted, "golds": golds}


def test_the_tally_counts_answered_open_lean_and_gold_sides_as_the_python_fold(history):
    rater, campaign, now, counted, golds = (history[k] for k in ("rater", "campaign", "now", "counted", "golds"))
    read = _same_as_the_fold(rater, campaign, now)

    expected_lean = Counter()
    for _, left_model, right_model in counted:
        expected_lean[left_model] += 1
        expected_lean[right_model] -= 1
    gold_open = Assignment.objects.get(gold=golds[2])
    assert read.answered == 3 + 3  # three pairs, three gold checks (one of them deleted since)
    assert read.open_ids == [counted[4][0].pk, counted[3][0].pk, gold_open.pk]
    assert _nonzero(read.lean) == _nonzero(expected_lean) and _nonzero(expected_lean)
    assert _nonzero(read.gold_sides) == {"left": 2, "right": 1}


def test_the_tally_follows_votes_expiry_and_deletions(history):
    rater, campaign, now, counted = (history[k] for k in ("rater", "campaign", "now", "counted"))
    voted = counted[4][0]
    choices = {c: "left" for c in campaign.criteria_for(voted.prompt)}
    record_votes(voted.pk, rater, VoteSubmission("history-vote", choices, 900), now=now)
    assert _same_as_the_fold(rater, campaign, now).answered == 7

    assert engine.expire_assignments(campaign, now=now + timedelta(hours=1)) == 3  # two open pairs, one open gold
    read = _same_as_the_fold(rater, campaign, now)
    assert read.open_ids == [] and read.answered == 7

    counted[0][0].delete()
    assert _same_as_the_fold(rater, campaign, now).answered == 6
    Assignment.objects.filter(rater=rater, campaign=campaign).delete()
    assert _nonzero(engine._history(rater, campaign, now).lean) == {}


def test_the_migrations_backfill_gives_the_same_tally(history):
    rater, campaign, now = history["rater"], history["campaign"], history["now"]
    before = set(RaterTally.objects.values_list("rater", "campaign", "model_id", "answered", "lean", "gold_left",
                                                "gold_right"))  # fmt: skip
    RaterTally.objects.all().delete()
    migration = importlib.import_module("evalsite.rating.migrations.0009_rater_tally")
    with connection.cursor() as cursor:
        for statement in migration.BACKFILL:
            cursor.execute(statement)
    _same_as_the_fold(rater, campaign, now)
    after = set(RaterTally.objects.values_list("rater", "campaign", "model_id", "answered", "lean", "gold_left",
                                               "gold_right"))  # fmt: skip
    assert {row for row in after if any(row[3:])} == {row for row in before if any(row[3:])}


def test_a_rater_without_assignments_has_an_empty_history(campaign, rater_of):
    history = engine._history(rater_of(campaign), campaign, timezone.now())
    assert (history.answered, history.open_ids, history.lean, history.gold_sides) == (0, [], Counter(), Counter())
