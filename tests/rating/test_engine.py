"""The assignment engine: no repeated pair, balanced sides, every model pair covered, the votes-per-pair
target respected, expiry, resume, the open-assignment limit, gold checks at their rate."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone

from evalsite.rating import engine
from evalsite.rating.models import Assignment, ImagePair, Rater, Vote
from evalsite.rating.voting import VoteSubmission, record_votes


def answer(assignment, choice="left", key=None):
    choices = {c: choice for c in assignment.campaign.criteria_for(assignment.prompt)}
    return record_votes(assignment.id, assignment.rater, VoteSubmission(key or f"key-{assignment.id}", choices, 900))


def rate_until_done(rater, campaign, rng, limit=200):
    given = []
    for _ in range(limit):
        assignment = engine.next_assignment(rater, campaign, rng=rng)
        if assignment is None:
            return given
        answer(assignment, rng.choice(["left", "right", "tie", "both_bad"]))
        given.append(assignment)
    raise AssertionError("the engine never ran out of pairs")


def test_pairs_are_built_from_same_prompt_and_seed_images_of_two_models(campaign):
    made = engine.prepare_campaign(campaign)
    assert made["new_pairs"] == 9  # 3 model pairs x 3 prompts
    for pair in ImagePair.objects.select_related("image_a", "image_b"):
        assert pair.image_a.prompt_id == pair.image_b.prompt_id == pair.prompt_id
        assert pair.image_a.seed == pair.image_b.seed
        assert pair.model_a_id < pair.model_b_id == pair.image_b.model_id
    assert engine.prepare_campaign(campaign)["new_pairs"] == 0  # idempotent


def test_a_model_missing_a_seed_is_paired_across_seeds_of_the_same_prompt(make_run, make_campaign):
    from evalsite.runs.models import Image

    run = make_run(n_models=2, seeds=(0, 1), prompt_texts=["a cat"])
    first_model = run.image_models.order_by("id").first()
    Image.objects.filter(model=first_model, seed=1).update(status=Image.Status.FAILED)
    Image.objects.exclude(model=first_model).filter(seed=0).update(status=Image.Status.FAILED)
    campaign = make_campaign(run=run, gold_rate=0.0)
    engine.prepare_campaign(campaign)
    pair = ImagePair.objects.select_related("image_a", "image_b").get()
    assert {pair.image_a.seed, pair.image_b.seed} == {0, 1}


def test_a_rater_never_gets_the_same_pair_twice_and_every_pair_once(campaign, rater_of):
    rater = rater_of(campaign)
    given = rate_until_done(rater, campaign, np.random.default_rng(0))
    keys = [a.pair_key for a in given]
    assert len(keys) == len(set(keys)) == ImagePair.objects.filter(campaign=campaign).count() == 9


def test_left_and_right_are_balanced_per_model_for_each_rater(make_run, make_campaign, rater_of):
    run = make_run(n_models=3, prompt_texts=[f"prompt {i}" for i in range(8)])
    campaign = make_campaign(run=run, gold_rate=0.0)
    rater = rater_of(campaign)
    given = rate_until_done(rater, campaign, np.random.default_rng(1))
    assert len(given) == 24
    lean = Counter()
    for a in given:
        lean[a.image_left.model_id] += 1
        lean[a.image_right.model_id] -= 1
    assert all(abs(v) <= 1 for v in lean.values()), lean


def test_every_model_pair_is_covered_before_any_gets_a_second_round(make_run, make_campaign, rater_of):
    run = make_run(n_models=4, prompt_texts=[f"prompt {i}" for i in range(3)])
    campaign = make_campaign(run=run, gold_rate=0.0, min_votes_per_model_pair=1)
    raters = [rater_of(campaign, f"r{i}") for i in range(6)]
    rng = np.random.default_rng(2)
    seen = Counter()
    for rater in raters:  # 6 answered assignments = the 6 model pairs of 4 models, one each
        a = engine.next_assignment(rater, campaign, rng=rng)
        answer(a)
        seen[frozenset((a.image_left.model_id, a.image_right.model_id))] += 1
        engine.cache.delete(f"rating:wins:{campaign.pk}")  # the policy sees each vote at once
    assert len(seen) == 6 and set(seen.values()) == {1}


def test_the_votes_per_pair_target_is_never_exceeded(make_run, make_campaign, rater_of):
    run = make_run(n_models=2, prompt_texts=["one prompt", "another prompt"])
    campaign = make_campaign(run=run, gold_rate=0.0, votes_per_pair=2)
    raters = [rater_of(campaign, f"r{i}") for i in range(5)]
    rng = np.random.default_rng(3)
    handed = [a for r in raters for a in rate_until_done(r, campaign, rng)]
    per_pair = Counter(a.pair_key for a in handed)
    assert sorted(per_pair.values()) == [2, 2]  # two pairs, each exactly at target, never above
    assert Vote.objects.filter(criterion="prompt_following").count() == 4
    assert set(ImagePair.objects.values_list("assigned", "answered")) == {(2, 2)}


def test_an_open_assignment_is_returned_again_after_a_break(campaign, rater_of):
    rater = rater_of(campaign)
    first = engine.next_assignment(rater, campaign)
    assert engine.next_assignment(rater, campaign).id == first.id


def test_the_preloaded_next_pair_is_a_second_open_assignment_and_no_more(campaign, rater_of):
    rater = rater_of(campaign)
    first = engine.next_assignment(rater, campaign)
    second = engine.next_assignment(rater, campaign, exclude=(first.id,))
    assert second.id != first.id and second.pair_key != first.pair_key
    assert engine.next_assignment(rater, campaign, exclude=(first.id,)).id == second.id
    with pytest.raises(engine.TooManyOpenAssignments):
        engine.next_assignment(rater, campaign, exclude=(first.id, second.id))
    answer(first)
    third = engine.next_assignment(rater, campaign, exclude=(second.id,))
    assert third.id not in (first.id, second.id)


def test_a_refusal_without_a_savepoint_leaves_the_callers_transaction_to_commit(campaign, rater_of):
    """hand_out(savepoint=False) runs in the caller's transaction (the vote with next=1): its refusal is raised
    without marking that transaction for rollback, so what the caller wrote before it commits."""
    rater = rater_of(campaign)
    first = engine.next_assignment(rater, campaign)
    second = engine.next_assignment(rater, campaign, exclude=(first.id,))
    seen_at = timezone.now() - timedelta(days=1)
    with transaction.atomic():
        Rater.objects.filter(pk=rater.pk).update(instructions_seen_at=seen_at)
        with pytest.raises(engine.TooManyOpenAssignments):
            engine.hand_out(rater, campaign, exclude=(first.id, second.id), savepoint=False)
        assert not transaction.get_connection().needs_rollback
    rater.refresh_from_db()
    assert rater.instructions_seen_at == seen_at


def test_an_expired_assignment_is_not_resumed_and_gives_its_slot_back(campaign, rater_of):
    campaign.votes_per_pair = 1
    campaign.save()
    rater, other = rater_of(campaign, "a"), rater_of(campaign, "b")
    first = engine.next_assignment(rater, campaign)
    assert ImagePair.objects.get(pk=first.image_pair_id).assigned == 1
    later = timezone.now() + timedelta(seconds=campaign.assignment_ttl_seconds + 1)
    assert engine.expire_assignments(now=later) == 1
    first.refresh_from_db()
    assert first.status == Assignment.Status.EXPIRED
    assert ImagePair.objects.get(pk=first.image_pair_id).assigned == 0
    # The freed slot goes to another rater: at target 1, b can now get all 9 pairs, a's included.
    given = rate_until_done(other, campaign, np.random.default_rng(7))
    assert len(given) == 9 and first.pair_key in {g.pair_key for g in given}
    # a is never shown that pair again, and every other pair is at its target now.
    engine.cache.clear()
    assert engine.next_assignment(rater, campaign, now=later) is None


def test_a_vote_on_an_expired_assignment_is_refused(campaign, rater_of):
    from evalsite.rating.voting import VoteRefused

    rater = rater_of(campaign)
    a = engine.next_assignment(rater, campaign)
    Assignment.objects.filter(pk=a.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(VoteRefused) as refused:
        answer(a)
    assert refused.value.code == "assignment_expired" and not Vote.objects.exists()


def test_a_rater_can_be_limited_to_a_number_of_pairs(campaign, rater_of):
    campaign.pairs_per_rater = 2
    campaign.save()
    rater = rater_of(campaign)
    given = rate_until_done(rater, campaign, np.random.default_rng(4))
    assert len(given) == 2
    assert engine.progress(rater, campaign) == engine.Progress(answered=2, target=2)


def test_gold_checks_are_mixed_in_at_the_campaign_rate(make_campaign, rater_of):
    campaign = make_campaign(gold_rate=1.0)
    rater = rater_of(campaign)
    made = engine.prepare_campaign(campaign)
    assert made["new_gold_checks"] == 3  # one per prompt of the 3-prompt fixture
    a = engine.next_assignment(rater, campaign)
    assert a.gold is not None and a.image_pair is None
    assert a.prompt_id == a.gold.prompt_id
    assert {a.image_left_id, a.image_right_id} == {a.gold.correct_image_id, a.gold.wrong_image_id}
    correct, wrong = a.gold.correct_image, a.gold.wrong_image
    assert correct.model_id == wrong.model_id and correct.prompt_id != wrong.prompt_id

    none = make_campaign(name="no gold", gold_rate=0.0, run=campaign.run)
    rater2 = rater_of(none, "r2")
    given = rate_until_done(rater2, none, np.random.default_rng(8))
    assert len(given) == 9 and all(g.gold_id is None for g in given)


def test_gold_rate_is_respected_over_many_assignments(make_run, make_campaign, rater_of):
    run = make_run(n_models=2, prompt_texts=[f"prompt {i}" for i in range(40)])
    campaign = make_campaign(run=run, gold_rate=0.25)
    rater = rater_of(campaign)
    given = rate_until_done(rater, campaign, np.random.default_rng(5), limit=60)[:40]
    gold = sum(a.gold_id is not None for a in given)
    assert 4 <= gold <= 18  # binomial(40, 0.25): mean 10, this is far outside 4 sd


def test_an_integrity_error_moves_on_to_the_next_candidate(campaign, rater_of, monkeypatch):
    rater = rater_of(campaign)
    held = engine.next_assignment(rater, campaign)
    answer(held)
    original = engine._lock_image_pair
    calls = []

    def stale_first(rater_, campaign_, model_a, model_b, refused):
        calls.append(list(refused))
        if len(calls) == 1:  # pretend the rater's earlier pair looked free (a stale read)
            return ImagePair.objects.get(pk=held.image_pair_id)
        return original(rater_, campaign_, model_a, model_b, refused)

    monkeypatch.setattr(engine, "_lock_image_pair", stale_first)
    # The ORM hand-out (SQLite's; PostgreSQL's when every free row is locked): the one-statement hand-out of
    # PostgreSQL reads the rater's pairs in the statement that inserts, so it has no stale read to test.
    monkeypatch.setattr(engine, "_take_image_pair", lambda *args: None)
    fresh = engine.next_assignment(rater, campaign)
    assert fresh.pair_key != held.pair_key
    assert calls[1] == [held.pair_key]
    assert ImagePair.objects.get(pk=held.image_pair_id).assigned == 1


def test_the_wins_matrix_uses_prompt_following_without_gold_or_flagged_raters(campaign, rater_of):
    good, bad = rater_of(campaign, "good"), rater_of(campaign, "bad")
    a = engine.next_assignment(good, campaign)
    answer(a, "left")
    b = engine.next_assignment(bad, campaign)
    answer(b, "right")
    bad.flagged = True
    bad.save()
    model_ids = engine.campaign_model_ids(campaign)
    wins = engine.wins_matrix(campaign, model_ids)
    i, j = model_ids.index(a.image_left.model_id), model_ids.index(a.image_right.model_id)
    assert wins[i, j] == 1 and wins.sum() == 1


def test_ties_and_both_bad_count_half_for_each_side(campaign, rater_of):
    r1, r2 = rater_of(campaign, "r1"), rater_of(campaign, "r2")
    answer(engine.next_assignment(r1, campaign), "tie")
    answer(engine.next_assignment(r2, campaign), "both_bad")
    wins = engine.wins_matrix(campaign, engine.campaign_model_ids(campaign))
    assert wins.sum() == 2 and np.allclose(wins, wins.T)


@pytest.mark.parametrize("policy", ["active", "uniform"])
def test_both_policies_hand_out_every_pair(campaign, rater_of, policy):
    campaign.pair_policy = policy
    campaign.min_votes_per_model_pair = 1
    campaign.save()
    given = rate_until_done(rater_of(campaign), campaign, np.random.default_rng(6))
    assert len(given) == 9
    assert {frozenset((a.image_left.model_id, a.image_right.model_id)) for a in given} == {
        frozenset(p) for p in itertools.combinations(engine.campaign_model_ids(campaign), 2)
    }


def test_new_campaigns_take_expiry_and_gold_threshold_from_settings(make_campaign, rater_of, settings):
    settings.EVALSITE_ASSIGNMENT_TTL_SECONDS = 42
    settings.EVALSITE_MIN_GOLD_ACCURACY = 0.9
    campaign = make_campaign(gold_rate=0.0)
    assert (campaign.assignment_ttl_seconds, campaign.min_gold_accuracy) == (42, 0.9)
    before = timezone.now()
    a = engine.next_assignment(rater_of(campaign), campaign)
    assert timedelta(seconds=41) <= a.expires_at - before <= timedelta(seconds=43)


def test_a_wins_refresh_counts_each_new_vote_once_and_recounts_when_a_rater_is_flagged(campaign, rater_of):
    raters = [rater_of(campaign, f"r{i}") for i in range(4)]
    model_ids = engine.campaign_model_ids(campaign)
    answer(engine.next_assignment(raters[0], campaign), "left")
    engine.cache.delete(f"rating:wins:{campaign.pk}")
    wins = engine._cached_wins(campaign, model_ids).wins
    assert wins.sum() == 1

    def refreshed():
        state = engine.cache.get(f"rating:wins:{campaign.pk}")
        state.refreshed -= engine.WINS_CACHE_SECONDS  # as if the refresh interval had passed
        engine.cache.set(f"rating:wins:{campaign.pk}", state)
        return engine._cached_wins(campaign, model_ids).wins

    for rater in raters[1:3]:  # newer votes, then a refresh; none is counted twice by the next refreshes
        answer(engine.next_assignment(rater, campaign), "tie")
    assert np.array_equal(refreshed(), engine.wins_matrix(campaign, model_ids))
    Vote.objects.update(created_at=timezone.now() - timedelta(seconds=engine.WINS_SETTLE_SECONDS + 1))
    assert np.array_equal(refreshed(), engine.wins_matrix(campaign, model_ids))
    newest = Vote.objects.filter(criterion=engine.WINS_CRITERION).latest("id").id
    assert engine.cache.get(f"rating:wins:{campaign.pk}").settled_id == newest
    answer(engine.next_assignment(raters[3], campaign), "right")
    assert np.array_equal(refreshed(), engine.wins_matrix(campaign, model_ids)) and refreshed().sum() == 4

    raters[1].flagged = True  # a flagged rater's votes leave the matrix at the next refresh
    raters[1].save()
    assert np.array_equal(refreshed(), engine.wins_matrix(campaign, model_ids)) and refreshed().sum() == 3
