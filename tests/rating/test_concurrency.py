"""Raters asking and answering at the same moment, on PostgreSQL (row locks with SKIP LOCKED).

SQLite serialises every write transaction (BEGIN IMMEDIATE), so there these races cannot happen; the tests
run where CI runs the suite, on PostgreSQL (DATABASE_URL=postgres://...)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import OperationalError, connection, transaction

from evalsite.rating import engine
from evalsite.rating.models import Assignment, ImagePair, Vote
from evalsite.rating.voting import VoteRefused, VoteSubmission, record_votes, submit_votes
from tests.support import wait_until_a_lock_waits

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite", reason="needs PostgreSQL row locks (DATABASE_URL=postgres://...)"
    ),
]


def run_at_once(functions):
    """Run the functions in threads released together; returns their results (or exceptions)."""
    barrier = threading.Barrier(len(functions))
    results = [None] * len(functions)

    def worker(index, function):
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=30)
            results[index] = function()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[index] = exc
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=worker, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_raters_never_get_a_double_booked_pair(make_run, make_campaign, rater_of):
    run = make_run(n_models=2, prompt_texts=["one", "two", "three"])  # 3 image pairs
    campaign = make_campaign(run=run, gold_rate=0.0, votes_per_pair=1)
    engine.prepare_campaign(campaign)
    raters = [rater_of(campaign, f"r{i}") for i in range(8)]
    results = run_at_once([lambda r=r: engine.next_assignment(r, campaign) for r in raters])
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    given = [a for a in results if a is not None]
    assert len(given) == 3  # three pairs at one vote each: five raters get nothing, nobody gets a taken pair
    assert len({a.pair_key for a in given}) == 3
    assert list(ImagePair.objects.values_list("assigned", flat=True)) == [1, 1, 1]
    assert Assignment.objects.count() == 3


def test_many_raters_at_once_fill_pairs_exactly_to_target(make_run, make_campaign, rater_of):
    run = make_run(n_models=3, prompt_texts=["one", "two"])  # 6 image pairs
    campaign = make_campaign(run=run, gold_rate=0.0, votes_per_pair=2)
    engine.prepare_campaign(campaign)
    raters = [rater_of(campaign, f"r{i}") for i in range(10)]

    def current_and_preloaded(rater):
        first = engine.next_assignment(rater, campaign)
        return first and engine.next_assignment(rater, campaign, exclude=(first.id,))

    results = run_at_once([lambda r=r: current_and_preloaded(r) for r in raters])
    assert not [r for r in results if isinstance(r, Exception)], results
    per_pair = Counter(Assignment.objects.values_list("pair_key", flat=True))
    assert sorted(per_pair.values()) == [2] * 6  # 12 slots, 20 requests: every slot once, none twice
    assert all(n == 1 for n in Counter(Assignment.objects.values_list("rater", "pair_key")).values())
    assert set(ImagePair.objects.values_list("assigned", flat=True)) == {2}


def test_one_rater_in_two_tabs_gets_the_same_open_assignment(campaign, rater_of):
    rater = rater_of(campaign)
    engine.prepare_campaign(campaign)
    first, second = run_at_once([lambda: engine.next_assignment(rater, campaign)] * 2)
    assert first.id == second.id and Assignment.objects.count() == 1


def test_a_double_submission_at_the_same_moment_is_stored_once(campaign, rater_of):
    rater = rater_of(campaign)
    a = engine.next_assignment(rater, campaign)
    submission = VoteSubmission("same-key-twice", {c: "left" for c in campaign.criteria_for(a.prompt)}, 100)
    results = run_at_once([lambda: record_votes(a.id, rater, submission)] * 4)
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert Vote.objects.count() == len(campaign.criteria_for(a.prompt))


def test_two_different_submissions_at_once_store_one_and_refuse_the_other(campaign, rater_of):
    rater = rater_of(campaign)
    a = engine.next_assignment(rater, campaign)
    asked = campaign.criteria_for(a.prompt)
    results = run_at_once(
        [
            lambda: record_votes(a.id, rater, VoteSubmission("key-one-xx", {c: "left" for c in asked}, 1)),
            lambda: record_votes(a.id, rater, VoteSubmission("key-two-xx", {c: "right" for c in asked}, 1)),
        ]
    )
    refused = [r for r in results if isinstance(r, VoteRefused)]
    assert len(refused) == 1 and refused[0].code == "already_answered"
    assert Vote.objects.values("idempotency_key").distinct().count() == 1


def test_expiry_sweeps_running_at_once_free_each_slot_once(campaign, rater_of):
    from datetime import timedelta

    from django.utils import timezone

    raters = [rater_of(campaign, f"r{i}") for i in range(4)]
    for r in raters:
        engine.next_assignment(r, campaign)
    later = timezone.now() + timedelta(seconds=campaign.assignment_ttl_seconds + 5)
    results = run_at_once([lambda: engine.expire_assignments(now=later)] * 3)
    assert sum(results) == 4
    assert set(ImagePair.objects.values_list("assigned", flat=True)) == {0}


def test_one_personal_invite_used_by_many_at_the_same_moment_makes_one_account(campaign):
    from django.test import Client

    from evalsite.rating.models import PersonalInvite, Rater

    invite = PersonalInvite.objects.create(campaign=campaign)
    statuses = run_at_once([lambda: Client().post(f"/join/{invite.token}").status_code for _ in range(6)])
    assert sorted(statuses) == [302, 410, 410, 410, 410, 410], statuses
    assert Rater.objects.count() == 1 and campaign.raters.count() == 1
    invite.refresh_from_db()
    assert invite.used_by == Rater.objects.get()


def test_a_double_submission_that_asks_for_the_next_pair_stores_the_vote_once_and_hands_out_one_pair(
    campaign, rater_of
):
    """The page's request (votes?next=1: the vote and the next pair's hand-out in one transaction) sent four times
    at once: one stores the vote, the others replay it, and all four get the same next pair."""
    import json

    from django.test import Client

    rater = rater_of(campaign)
    a = engine.next_assignment(rater, campaign)
    body = json.dumps({"idempotency_key": "same-key-next", "choices": dict.fromkeys(campaign.criteria_for(a.prompt),
                                                                                   "left")})  # fmt: skip

    def send():
        client = Client()
        client.force_login(rater.user)
        response = client.post(f"/api/assignments/{a.id}/votes?next=1", body, content_type="application/json")
        return response.status_code, response.json()["next"]["assignment"]["id"]

    results = run_at_once([send] * 4)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    assert sorted(code for code, _ in results) == [200, 200, 200, 201]
    assert len({handed for _, handed in results}) == 1
    assert Vote.objects.count() == len(campaign.criteria_for(a.prompt))
    assert Assignment.objects.filter(rater=rater, status="open").count() == 1


@pytest.mark.parametrize("mode", ["UPDATE", "NO KEY UPDATE"])
def test_a_stored_vote_holds_its_rater_until_it_commits(campaign, rater_of, mode):
    """A vote with next=1 hands out the next pair without locking the rater again (engine.hand_out's rater_locked):
    the vote's own statement must already hold the rater's row against every other hand-out (FOR UPDATE) and every
    other tally write of theirs (the trigger's FOR NO KEY UPDATE) until the transaction ends."""
    rater = rater_of(campaign)
    shown = engine.next_assignment(rater, campaign)
    choices = {c: "left" for c in campaign.criteria_for(shown.prompt)}

    def lock_elsewhere():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM rating_rater WHERE id = %s FOR {mode} NOWAIT", [rater.pk])
        return "locked"

    with transaction.atomic():
        recorded = submit_votes(shown.id, rater.user_id, VoteSubmission("held-0001", choices, 900), savepoint=False)
        assert recorded.created
        (while_voting,) = run_at_once([lock_elsewhere])
    (after_commit,) = run_at_once([lock_elsewhere])
    assert isinstance(while_voting, OperationalError), while_voting
    assert after_commit == "locked"


@pytest.mark.parametrize("fills", [True, False], ids=["filled-meanwhile", "room-left"])
def test_a_wait_for_a_locked_image_pair_takes_it_if_it_has_room_and_keeps_no_lock_if_not(
    make_run, make_campaign, rater_of, fills
):
    """A hand-out that found every free image pair locked waits for one (engine._lock_image_pair) and takes it if it
    still has room. When the row it waited for fills up meanwhile, the hand-out goes on without it and must not keep
    it locked: it may go on to wait for a row of another model pair, and a rater waiting the other way round would
    close a deadlock (CI saw one: ten raters at once, 'deadlock detected ... while locking tuple ... in relation
    rating_imagepair')."""

    run = make_run(n_models=2, prompt_texts=["one"])  # one image pair
    campaign = make_campaign(run=run, gold_rate=0.0, votes_per_pair=1 if fills else 2)
    engine.prepare_campaign(campaign)
    pair = ImagePair.objects.get()
    waiter = rater_of(campaign, "waiter")
    looked, checked = threading.Event(), threading.Event()
    outcome = {}

    def wait_for_the_pair():
        from django.db import connection as thread_connection

        try:
            with transaction.atomic():
                outcome["pair"] = engine._lock_image_pair(waiter, campaign, pair.model_a_id, pair.model_b_id, [])
                looked.set()
                checked.wait(timeout=30)  # the transaction stays open while the test looks at the row
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome["error"] = exc
        finally:
            looked.set()
            thread_connection.close()

    thread = threading.Thread(target=wait_for_the_pair)
    with transaction.atomic():  # another rater's hand-out in flight: it holds the pair and takes a slot
        locked = ImagePair.objects.select_for_update().get(pk=pair.pk)
        ImagePair.objects.filter(pk=locked.pk).update(assigned=1)
        thread.start()
        wait_until_a_lock_waits("the hand-out")  # until the waiter queues behind this transaction
    assert looked.wait(timeout=30)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT id FROM rating_imagepair WHERE id = %s FOR UPDATE NOWAIT", [pair.pk])
        locked_by_waiter = False
    except OperationalError:
        locked_by_waiter = True
    finally:
        checked.set()
        thread.join(timeout=30)
    assert "error" not in outcome, outcome
    if fills:
        assert outcome["pair"] is None and not locked_by_waiter  # the only pair is full, and let go
    else:
        assert outcome["pair"].pk == pair.pk and locked_by_waiter  # taken, held until the hand-out commits
