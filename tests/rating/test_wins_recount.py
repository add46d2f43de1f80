"""The full wins recount runs in the Celery task rating.recount_wins, not in /next: a process takes the task's
count up from the shared cache and adds the newest votes; a stale count asks the task (after commit, once); only
a cold start with no count anywhere counts in the request, once, and shares it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.cache import caches
from django.utils import timezone

from evalsite.celery import app
from evalsite.rating import engine, tasks
from evalsite.rating.models import Vote
from evalsite.rating.voting import VoteSubmission, record_votes


def _vote(rater, campaign, choice):
    a = engine.next_assignment(rater, campaign)
    choices = {c: choice for c in campaign.criteria_for(a.prompt)}
    record_votes(a.id, rater, VoteSubmission(f"k-{a.id}", choices, 900))


def _forget_this_process(campaign):
    engine.cache.delete(f"rating:wins:{campaign.pk}")


def _no_full_count_in_requests(monkeypatch):
    monkeypatch.setattr(engine, "_count_all", lambda *a, **k: pytest.fail("a request counted every vote"))


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(app, "send_task", lambda name, args: calls.append((name, args)))
    return calls


def test_a_process_takes_the_tasks_count_up_and_adds_the_newest_votes(campaign, rater_of, monkeypatch):
    raters = [rater_of(campaign, f"r{i}") for i in range(3)]
    model_ids = engine.campaign_model_ids(campaign)
    _vote(raters[0], campaign, "left")
    _vote(raters[1], campaign, "tie")
    assert tasks.recount_wins(campaign.pk) == 2.0  # the task body, as the worker runs it
    Vote.objects.update(created_at=timezone.now() - timedelta(seconds=engine.WINS_SETTLE_SECONDS + 1))
    _vote(raters[2], campaign, "right")

    _forget_this_process(campaign)
    _no_full_count_in_requests(monkeypatch)
    fit = engine._cached_wins(campaign, model_ids)
    wins, theta = fit.wins, fit.theta
    assert np.array_equal(wins, engine.wins_matrix(campaign, model_ids)) and wins.sum() == 3
    assert theta is not None


def test_a_stale_count_asks_the_task_once_after_commit_and_is_not_counted_again_in_the_request(
    campaign, rater_of, sent, monkeypatch, django_capture_on_commit_callbacks
):
    rater = rater_of(campaign)
    model_ids = engine.campaign_model_ids(campaign)
    _vote(rater, campaign, "left")
    tasks.recount_wins(campaign.pk)
    full = caches["shared"].get(f"rating:wins-full:{campaign.pk}")
    full.recounted -= engine.WINS_RECOUNT_SECONDS  # ten minutes old
    caches["shared"].set(f"rating:wins-full:{campaign.pk}", full)
    _no_full_count_in_requests(monkeypatch)
    for _ in range(2):
        _forget_this_process(campaign)
        with django_capture_on_commit_callbacks(execute=True):
            wins = engine._cached_wins(campaign, model_ids).wins
        assert np.array_equal(wins, engine.wins_matrix(campaign, model_ids)) and wins.sum() == 1
    assert sent == [("rating.recount_wins", [campaign.pk])]  # asked once, not at every refresh


def test_a_cold_start_counts_once_in_the_request_and_shares_the_count(campaign, rater_of, sent):
    model_ids = engine.campaign_model_ids(campaign)
    _vote(rater_of(campaign), campaign, "left")
    _forget_this_process(campaign)
    caches["shared"].delete(f"rating:wins-full:{campaign.pk}")
    wins = engine._cached_wins(campaign, model_ids).wins
    assert wins.sum() == 1 and sent == []
    shared = caches["shared"].get(f"rating:wins-full:{campaign.pk}")
    assert np.array_equal(shared.wins, wins)


@pytest.mark.worker
def test_a_real_worker_leaves_its_count_where_a_web_process_takes_it_up(
    celery_worker_process, campaign, rater_of, monkeypatch
):
    model_ids = engine.campaign_model_ids(campaign)
    for i, choice in enumerate(("left", "both_bad")):
        _vote(rater_of(campaign, f"r{i}"), campaign, choice)
    assert tasks.recount_wins.delay(campaign.pk).get(timeout=90) == 2.0
    _forget_this_process(campaign)
    _no_full_count_in_requests(monkeypatch)
    wins = engine._cached_wins(campaign, model_ids).wins
    assert np.array_equal(wins, engine.wins_matrix(campaign, model_ids)) and wins.sum() == 2
