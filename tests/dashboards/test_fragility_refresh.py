"""The replayed "certified best" fragility (seconds at 20k votes) runs in the Celery task
dashboards.refresh_fragility, never in a dashboard or API request: a request with a stale answer shows the latest
one, labelled with the votes and time it was computed for (or "being computed"), and asks for one refresh."""

from __future__ import annotations

import ast
import html
import re
from datetime import timedelta

import pytest
from django.core.cache import caches
from django.urls import reverse
from django.utils import timezone

import analysis.fragility
from analysis.fragility import decision_fragility
from analysis.votes import count_pairs, vote_sequence
from evalsite.dashboards import style, tasks
from evalsite.dashboards.data import counted_votes, votes_frame
from evalsite.dashboards.results import CAMPAIGN_TOP_RULE
from evalsite.dashboards.style import FRAGILITY_REFRESH_TASK
from evalsite.rating.models import Vote
from tests.support import switch_broker, wait_for

CRITERIA = {"prompt_following", "aesthetics"}


@pytest.fixture
def replays(monkeypatch):
    """Every replay of the site's rule for fragility, counted (the real function runs)."""
    calls = []
    real = analysis.fragility.replayed_top_fragility

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis.fragility, "replayed_top_fragility", counting)
    return calls


def api(client, campaign, capture):
    with capture(execute=True):  # the enqueue happens after commit, as in a request outside the test transaction
        response = client.get(reverse("dashboards:api-results", args=[campaign.pk]), {"flagged": "include"})
    assert response.status_code == 200
    return {block["criterion"]: block for block in response.json()["fragility"]}


def expected_decisions(campaign, criterion, replay=True):
    """decision_fragility on the votes the page counts; replay=False: the stateless rule (no replay)."""
    votes = votes_frame(campaign)
    votes = counted_votes(votes[votes.criterion == criterion])
    pairs = count_pairs(votes)
    if not replay:
        return decision_fragility(pairs, 0.05)
    ordered = vote_sequence(votes.sort_values("vote_id", kind="stable"), pairs.models)
    return decision_fragility(pairs, 0.05, top_rule=CAMPAIGN_TOP_RULE, ordered=ordered)


def refresh_messages(broker):
    """The refreshes waiting in the broker, as their argument lists."""
    return [list(ast.literal_eval(m["args"])) for m in broker.messages() if m["task"] == FRAGILITY_REFRESH_TASK]


@pytest.mark.django_db
def test_a_stale_request_does_not_replay_and_asks_once_then_shows_the_tasks_answer(
    staff_client, voted_campaign, replays, broker, django_capture_on_commit_callbacks
):
    blocks = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)
    assert replays == []  # the request never replays the rule
    for criterion, block in blocks.items():
        assert block["refresh"]["state"] == "computing" and block["refresh"]["queued"], block["refresh"]
        top = next(d for d in block["decisions"] if d["kind"] == "top_model_certified")
        assert top["state"] == "computing" and top["votes_to_change"] is None
        others = [
            d for d in expected_decisions(voted_campaign, criterion, replay=False) if d["kind"] != "top_model_certified"
        ]
        assert [d for d in block["decisions"] if d["kind"] != "top_model_certified"] == others
    queued = refresh_messages(broker)
    assert sorted(m[1] for m in queued) == sorted(CRITERIA)

    api(staff_client, voted_campaign, django_capture_on_commit_callbacks)  # again, while the refresh is queued
    assert replays == [] and len(refresh_messages(broker)) == len(CRITERIA)  # no duplicate

    for message in queued:  # what the worker does with each message
        tasks.refresh_fragility(*message)
    assert len(replays) == len(CRITERIA)
    blocks = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)
    assert len(replays) == len(CRITERIA) and len(refresh_messages(broker)) == len(CRITERIA)
    for criterion, block in blocks.items():
        assert block["refresh"]["state"] == "current" and block["refresh"]["computed_at"]
        assert block["decisions"] == expected_decisions(voted_campaign, criterion)


@pytest.mark.django_db
def test_after_a_new_vote_the_page_shows_the_earlier_answer_labelled_with_its_vote_count(
    staff_client, voted_campaign, replays, broker, django_capture_on_commit_callbacks
):
    tasks.refresh_fragility(voted_campaign.pk, "prompt_following", 0.05, False)
    before = expected_decisions(voted_campaign, "prompt_following")
    n_before = len(counted_votes(votes_frame(voted_campaign).query("criterion == 'prompt_following'")))
    Vote.objects.filter(campaign=voted_campaign, criterion="prompt_following", is_gold=False).last().delete()
    replays.clear()

    with django_capture_on_commit_callbacks(execute=True):
        page = staff_client.get(reverse("dashboards:campaign", args=[voted_campaign.pk]), {"flagged": "include"})
    assert replays == []
    card = html.unescape(page.content.decode()).split('id="fragility"')[1].split("</section>")[0]
    assert "is not up to date:</strong> computed on " + f"{n_before:,} counted votes" in card
    assert f"{n_before - 1:,} are counted now" in card
    assert re.search(r"counted votes at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC;", card)  # not a raw ISO string
    assert sorted(m[1] for m in refresh_messages(broker)) == sorted(CRITERIA)

    block = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)["prompt_following"]
    assert block["refresh"] | {"computed_at": None, "asked_at": None} == {
        "state": "stale",
        "votes": n_before - 1,
        "computed_votes": n_before,
        "computed_at": None,
        "queued": True,
        "asked_at": None,
        "overdue": False,  # asked for by the page request a moment ago
    }
    assert block["refresh"]["asked_at"]
    stale_top = next(d for d in block["decisions"] if d["kind"] == "top_model_certified")
    assert stale_top == next(d for d in before if d["kind"] == "top_model_certified") | {"state": "stale"}


@pytest.mark.django_db
def test_a_refresh_no_worker_answers_is_shown_as_overdue_and_not_asked_twice(
    staff_client, voted_campaign, replays, broker, django_capture_on_commit_callbacks
):
    blocks = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)
    first = blocks["prompt_following"]["refresh"]
    assert first["queued"] and not first["overdue"]
    # nothing consumes the broker: two minutes later the marker is still there, with its time
    key = style._asked_marker(voted_campaign.pk, "prompt_following", 0.05, False)
    asked = timezone.now() - timedelta(seconds=style.FRAGILITY_OVERDUE_SECONDS + 30)
    caches["shared"].set(key, asked.isoformat(), style.FRAGILITY_ASKED_SECONDS)
    block = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)["prompt_following"]
    assert block["refresh"]["state"] == "computing" and block["refresh"]["overdue"]
    assert block["refresh"]["asked_at"] == asked.isoformat()
    assert len(refresh_messages(broker)) == len(CRITERIA)  # still the one refresh per criterion

    with django_capture_on_commit_callbacks(execute=True):
        page = staff_client.get(reverse("dashboards:campaign", args=[voted_campaign.pk]), {"flagged": "include"})
    card = html.unescape(page.content.decode()).split('id="fragility"')[1].split("</section>")[0]
    assert card.count("No worker has answered") == 1  # prompt following only: aesthetics was asked just now
    assert re.search(r"No worker has answered</strong> since it was asked for at \d{4}-\d\d-\d\d \d\d:\d\d", card)


@pytest.mark.django_db
def test_a_broker_that_is_away_costs_the_request_nothing_and_the_next_request_asks_again(
    staff_client, voted_campaign, replays, broker, tmp_path, django_capture_on_commit_callbacks
):
    gone = str(tmp_path / "no-such-folder")  # a filesystem broker whose folders are not there: every send fails
    restore = switch_broker("filesystem://", {"data_folder_in": gone, "data_folder_out": gone, "control_folder": gone})
    try:
        blocks = api(staff_client, voted_campaign, django_capture_on_commit_callbacks)
    finally:
        restore()
    assert {b["refresh"]["state"] for b in blocks.values()} == {"computing"} and replays == []
    assert refresh_messages(broker) == []
    api(staff_client, voted_campaign, django_capture_on_commit_callbacks)  # the markers went with the failed sends
    assert sorted(m[1] for m in refresh_messages(broker)) == sorted(CRITERIA)


@pytest.mark.django_db
def test_the_task_names_a_criterion_the_campaign_does_not_have(voted_campaign):
    with pytest.raises(ValueError, match="has no criterion 'typography'"):
        tasks.refresh_fragility(voted_campaign.pk, "typography", 0.05, True)


@pytest.mark.worker
def test_a_real_worker_computes_what_the_next_request_shows(
    celery_worker_process, voted_campaign, staff_client, replays
):
    def blocks():
        response = staff_client.get(reverse("dashboards:api-results", args=[voted_campaign.pk]), {"flagged": "include"})
        return {block["criterion"]: block for block in response.json()["fragility"]}

    first = blocks()  # autocommit here: the refresh is sent at once, to the worker process
    assert {b["refresh"]["state"] for b in first.values()} == {"computing"} and replays == []
    done = wait_for(
        lambda: (found := blocks()) and all(b["refresh"]["state"] == "current" for b in found.values()) and found,
        timeout=120,
        interval=1,
        what="the worker's fragility",
        worker=celery_worker_process,
    )
    assert replays == []  # computed in the worker process, not here
    for criterion, block in done.items():
        assert block["decisions"] == expected_decisions(voted_campaign, criterion)


def test_timestamps_read_as_a_date_and_time_in_the_site_zone():
    from evalsite.dashboards.templatetags.dashboard_format import moment

    assert moment("2026-12-04T13:10:05.123456+00:00") == "2026-12-04 13:10:05 UTC"
    assert moment("2026-12-04T14:10:05+01:00") == "2026-12-04 13:10:05 UTC"
    assert moment(None) == moment("") == moment("yesterday") == "–"
