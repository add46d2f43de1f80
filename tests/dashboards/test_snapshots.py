"""Snapshots of a campaign's results: taken each day and on demand, refitted to identical numbers, exported
with their id, drawn over time on the dashboard."""

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.conf import settings
from django.urls import reverse

from evalsite.dashboards import snapshots
from evalsite.dashboards.models import ResultSnapshot
from evalsite.dashboards.results import CAMPAIGN_TOP_RULE, ResultOptions, campaign_results
from evalsite.rating.models import Vote

DAY = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.mark.django_db
def test_a_snapshot_holds_the_dashboards_numbers_and_refits_to_them(voted_campaign):
    snapshot = snapshots.take_snapshot(voted_campaign)
    assert snapshot.n_votes == Vote.objects.filter(campaign=voted_campaign).count()
    for criterion in ("prompt_following", "aesthetics"):
        page = campaign_results(voted_campaign, ResultOptions(criterion=criterion, project=False))
        stored = snapshot.results[criterion]
        assert [(r["model"], r["score"], r["lower"], r["upper"]) for r in stored["leaderboard"]] == [
            (r["model"], r["score"], r["lower"], r["upper"]) for r in page["leaderboard"]
        ]
        assert stored["excluded_raters"] == page["excluded_raters"] == ["speedy"]
        shown = next(b["decision"] for b in page["decisions"]["by_criterion"] if b["criterion"] == criterion)
        assert stored["decision"]["top_rule"] == shown["top_rule"] == CAMPAIGN_TOP_RULE
        assert stored["decision"]["certified"] == shown["top_model"]["certified"]
        assert stored["decision"]["confidence"] == pytest.approx(shown["top_model"]["confidence"])
        assert stored["decision"]["bonferroni"] == pytest.approx(shown["top_model"]["bonferroni"])
    assert snapshot.settings["top_rule"] == CAMPAIGN_TOP_RULE and snapshot.settings["top_evidence_look_every"] == 25
    assert snapshot.settings["rounds"] == 100 and snapshot.settings["seed"] == 0
    assert snapshot.software["pandas"] == pd.__version__

    snapshot.refresh_from_db()  # what the database gave back, not what was written
    again = snapshots.refit(snapshot)
    assert again["identical"] is True and again["differences"] == []
    assert again["results"] == snapshot.results


def _refit_as_if_taken_with(snapshot, settings_then: dict) -> tuple[dict, pd.DataFrame]:
    """Store the snapshot as one taken under older settings (its numbers computed with them), refit it from the
    database, and return the refit with the snapshot's votes."""
    votes = snapshots.snapshot_votes(snapshot)
    snapshot.settings, snapshot.results = settings_then, snapshots.snapshot_numbers(votes, settings_then)
    snapshot.save()
    snapshot.refresh_from_db()
    again = snapshots.refit(snapshot)
    assert again["identical"] is True
    return again, votes


@pytest.mark.django_db
def test_a_snapshot_taken_before_the_rebalanced_rule_refits_with_the_rule_it_used(voted_campaign):
    snapshot = snapshots.take_snapshot(voted_campaign)
    old_settings = {k: v for k, v in snapshot.settings.items() if k not in ("top_rule", "top_evidence_look_every")}
    again, votes = _refit_as_if_taken_with(snapshot, old_settings)
    new_numbers = snapshots.snapshot_numbers(votes, snapshots.snapshot_settings(voted_campaign))
    for criterion, block in again["results"].items():
        assert "top_rule" not in block["decision"]  # the stateless rule, as such snapshots were taken
        assert block["decision"]["confidence"] == pytest.approx(
            new_numbers[criterion]["decision"]["bonferroni"]["confidence"]
        )


@pytest.mark.django_db
def test_a_snapshot_taken_under_the_narrower_prior_refits_with_it(voted_campaign):
    """Snapshots taken while the site ran 'rebalanced_ties' (the mixtures' prior precision 20) keep their rule:
    the rule's name in the settings says which prior the replay uses."""
    snapshot = snapshots.take_snapshot(voted_campaign)
    assert CAMPAIGN_TOP_RULE == "rebalanced_ties_rho8"
    again, votes = _refit_as_if_taken_with(snapshot, {**snapshot.settings, "top_rule": "rebalanced_ties"})
    today = snapshots.snapshot_numbers(votes, snapshots.snapshot_settings(voted_campaign))
    for criterion, block in again["results"].items():
        assert block["decision"]["top_rule"] == "rebalanced_ties"
        assert today[criterion]["decision"]["top_rule"] == "rebalanced_ties_rho8"
    confidences = [(again["results"][c]["decision"]["confidence"], today[c]["decision"]["confidence"]) for c in today]
    assert any(old != new for old, new in confidences)  # the two priors give different e-values


@pytest.mark.django_db
def test_a_refit_names_a_number_that_does_not_match(voted_campaign):
    snapshot = snapshots.take_snapshot(voted_campaign)
    snapshot.results["aesthetics"]["leaderboard"][0]["score"] += 1e-9
    snapshot.save()
    again = snapshots.refit(snapshot)
    assert again["identical"] is False
    assert again["differences"] == [{"criterion": "aesthetics", "fields": ["leaderboard"]}]


@pytest.mark.django_db
def test_a_changed_votes_file_is_refused(voted_campaign):
    snapshot = snapshots.take_snapshot(voted_campaign)
    with snapshot.votes_file.storage.open(snapshot.votes_file.name, "wb") as handle:
        handle.write(snapshots.votes_parquet(pd.DataFrame({"criterion": ["aesthetics"]})))
    with pytest.raises(ValueError, match="its votes file has changed"):
        snapshots.refit(snapshot)


@pytest.mark.django_db
def test_the_content_hash_names_the_votes_and_settings(voted_campaign):
    first = snapshots.take_snapshot(voted_campaign)
    second = snapshots.take_snapshot(voted_campaign)
    assert first.pk != second.pk and first.content_hash == second.content_hash
    Vote.objects.filter(campaign=voted_campaign).order_by("id").first().delete()
    third = snapshots.take_snapshot(voted_campaign)
    assert third.content_hash != first.content_hash and third.n_votes == first.n_votes - 1


@pytest.mark.django_db
def test_one_daily_snapshot_per_campaign_and_day(voted_campaign, make_campaign):
    make_campaign(name="no votes yet")
    first = snapshots.take_daily_snapshots(now=DAY)
    assert snapshots.take_daily_snapshots(now=DAY + timedelta(hours=5)) == first  # the same day: unchanged
    snapshots.take_daily_snapshots(now=DAY + timedelta(days=1))
    daily = ResultSnapshot.objects.filter(kind=ResultSnapshot.Kind.DAILY)
    assert list(daily.values_list("campaign", "day")) == [
        (voted_campaign.pk, DAY.date()),
        (voted_campaign.pk, (DAY + timedelta(days=1)).date()),
    ]
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "dashboards.take_daily_snapshots" in schedule
    from evalsite.celery import app

    app.loader.import_default_modules()
    assert "dashboards.take_daily_snapshots" in app.tasks


@pytest.mark.django_db
def test_the_page_draws_history_and_takes_snapshots_on_demand(staff_client, voted_campaign):
    for days in (0, 1):
        snapshots.take_snapshot(voted_campaign, kind=ResultSnapshot.Kind.DAILY, now=DAY + timedelta(days=days))
    response = staff_client.post(reverse("dashboards:take-snapshot", args=[voted_campaign.pk]))
    assert response.status_code == 302 and response["Location"].endswith("#history")
    taken = ResultSnapshot.objects.filter(campaign=voted_campaign, kind=ResultSnapshot.Kind.ON_DEMAND).get()
    page = staff_client.get(reverse("dashboards:campaign", args=[voted_campaign.pk])).content.decode()
    assert page.count('<g class="series"') == 3  # one line per model through the three snapshots
    assert f"<td>{taken.pk}</td>" in page


@pytest.mark.django_db
def test_exports_of_a_snapshot_carry_its_id(staff_client, voted_campaign):
    snapshot = snapshots.take_snapshot(voted_campaign)
    response = staff_client.get(reverse("dashboards:snapshot-export", args=[snapshot.pk, "votes", "csv"]))
    assert response.status_code == 200
    assert f"snapshot-{snapshot.pk}-votes.csv" in response["Content-Disposition"]
    votes = pd.read_csv(io.BytesIO(response.content))
    assert set(votes["snapshot_id"]) == {snapshot.pk} and set(votes["content_hash"]) == {snapshot.content_hash}
    assert len(votes) == snapshot.n_votes
    results = pd.read_parquet(
        io.BytesIO(
            staff_client.get(reverse("dashboards:snapshot-export", args=[snapshot.pk, "results", "parquet"])).content
        )
    )
    assert set(results["snapshot_id"]) == {snapshot.pk} and len(results) == 2 * 3


@pytest.mark.django_db
def test_the_snapshot_api(staff_client, voted_campaign, make_rater):
    url = reverse("dashboards:api-snapshots", args=[voted_campaign.pk])
    created = staff_client.post(url)
    assert created.status_code == 201
    snapshot_id = created.json()["id"]
    assert [s["id"] for s in staff_client.get(url).json()] == [snapshot_id]
    detail = staff_client.get(reverse("dashboards:api-snapshot", args=[snapshot_id])).json()
    assert detail["results"]["prompt_following"]["leaderboard"][0]["rank"] == 1
    refit = staff_client.get(reverse("dashboards:api-snapshot-refit", args=[snapshot_id])).json()
    assert refit["identical"] is True and refit["content_hash"] == detail["content_hash"]
    staff_client.force_login(make_rater("curious").user)
    assert staff_client.get(url).status_code == 403


@pytest.mark.django_db
def test_raters_held_in_review_are_left_out_as_on_the_dashboard(voted_campaign):
    from evalsite.rating.models import Rater, RaterReview

    alice = Rater.objects.get(user__username="alice")
    RaterReview.objects.create(campaign=voted_campaign, rater=alice, state=RaterReview.State.HELD, reasons="test")
    snapshot = snapshots.take_snapshot(voted_campaign)
    page = campaign_results(voted_campaign, ResultOptions(criterion="aesthetics", project=False))
    assert snapshot.settings["held_out_raters"] == ["alice"]
    assert snapshot.results["aesthetics"]["excluded_raters"] == page["excluded_raters"] == ["alice", "speedy"]
    assert [r["score"] for r in snapshot.results["aesthetics"]["leaderboard"]] == [
        r["score"] for r in page["leaderboard"]
    ]
    RaterReview.objects.filter(rater=alice).update(state=RaterReview.State.ACCEPTED)  # later reviews change
    assert snapshots.refit(snapshot)["identical"] is True  # nothing in a taken snapshot
