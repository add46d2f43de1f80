"""Suspicious raters in a campaign: found where quality is updated, their votes held out of every count
until a researcher accepts them, and the dashboards showing the effect of including them."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client

from evalsite.rating import engine, quality
from evalsite.rating.models import CampaignJoin, Choice, Rater, RaterReview, Vote
from evalsite.rating.tasks import update_rater_quality as update_task
from evalsite.rating.voting import VoteSubmission, record_votes

STRENGTH = {0: 1.5, 1: 0.0, 2: -1.5}  # model index in the run -> true strength


@pytest.fixture
def voted(make_run, make_campaign, rater_of):
    """3 models x 24 prompts; five careful raters and one who picks the worst model whenever it is shown."""
    run = make_run(n_models=3, prompt_texts=[f"prompt {i}" for i in range(24)])
    campaign = make_campaign(run=run, gold_rate=0.0, votes_per_pair=3, min_votes_per_model_pair=0)
    models = sorted(run.image_models.values_list("pk", flat=True))
    strength = {pk: STRENGTH[i] for i, pk in enumerate(models)}
    raters = [rater_of(campaign, f"careful-{i}") for i in range(5)] + [rater_of(campaign, "pusher")]
    rng = np.random.default_rng(7)
    active = list(raters)
    while active:
        for rater in list(active):
            a = engine.next_assignment(rater, campaign, rng=rng)
            if a is None:
                active.remove(rater)
                continue
            left, right = a.image_left.model_id, a.image_right.model_id
            if rater.user.username == "pusher" and models[2] in (left, right):
                side = Choice.LEFT if left == models[2] else Choice.RIGHT
            else:
                p_left = 1 / (1 + np.exp(-(strength[left] - strength[right])))
                side = Choice.LEFT if rng.random() < p_left else Choice.RIGHT
            choices = {c: side for c in campaign.criteria_for(a.prompt)}
            record_votes(a.id, rater, VoteSubmission(f"k-{a.id}", choices, 3000))
    return campaign


def test_quality_update_holds_the_rater_who_pushes_a_model_and_no_careful_one(voted):
    quality.update_rater_quality(voted)
    review = RaterReview.objects.get(campaign=voted)
    assert review.rater.user.username == "pusher" and review.state == RaterReview.State.HELD
    assert "favours run-model-2" in review.reasons and "the crowd" in review.reasons
    counted = quality.votes_for_analysis(voted)
    assert not counted.filter(rater=review.rater).exists()
    assert counted.count() == Vote.objects.filter(campaign=voted).exclude(rater=review.rater).count()
    assert quality.votes_for_analysis(voted, exclude_flagged=False).filter(rater=review.rater).exists()


def test_the_celery_task_body_runs_the_checks(voted):
    assert update_task(voted.pk) == {"raters": 6, "flagged": 0, "held": 1}
    assert RaterReview.objects.filter(campaign=voted, state=RaterReview.State.HELD).count() == 1


def test_an_accepted_rater_counts_again_and_is_not_held_again(voted, staff_client):
    quality.update_rater_quality(voted)
    review = RaterReview.objects.get(campaign=voted)
    url = f"/staff/campaigns/{voted.pk}/raters"
    page = staff_client.get(url).content.decode()
    assert "pusher" in page and "favours run-model-2" in page
    assert staff_client.post(url, {"action": "accept", "review": review.pk}).status_code == 200
    review.refresh_from_db()
    assert review.state == RaterReview.State.ACCEPTED and review.reviewed_by.username == "researcher"
    assert quality.votes_for_analysis(voted).filter(rater=review.rater).exists()
    quality.update_rater_quality(voted)  # the checks still find them: the verdict stands
    review.refresh_from_db()
    assert review.state == RaterReview.State.ACCEPTED
    staff_client.post(url, {"action": "reject", "review": review.pk})
    assert not quality.votes_for_analysis(voted).filter(rater=review.rater).exists()


def test_raters_cannot_review_themselves(voted, rater_of, login):
    quality.update_rater_quality(voted)
    review = RaterReview.objects.get(campaign=voted)
    response = login(review.rater).post(
        f"/staff/campaigns/{voted.pk}/raters", {"action": "accept", "review": review.pk}
    )
    assert response.status_code == 302  # to the staff login
    review.refresh_from_db()
    assert review.state == RaterReview.State.HELD


def test_the_dashboard_shows_the_leaderboard_with_and_without_the_held_votes(voted, staff_client):
    quality.update_rater_quality(voted)
    api = staff_client.get(f"/dashboards/api/campaigns/{voted.pk}/results", {"criterion": "prompt_following"}).json()
    held = api["held_out"]
    assert [r["rater"] for r in held["raters"]] == ["pusher"] and "favours" in held["raters"][0]["reasons"]
    assert held["votes"] == Vote.objects.filter(rater__user__username="pusher", criterion="prompt_following").count()
    board = {row["model"]: row for row in held["leaderboard"]}
    assert set(board) == {"run-model-0", "run-model-1", "run-model-2"}
    assert board["run-model-2"]["with"]["score"] > board["run-model-2"]["without"]["score"]
    assert "pusher" in api["excluded_raters"]
    assert {r["rater"]: r["review"] for r in api["raters"]}["pusher"] == "held"
    page = staff_client.get(f"/dashboards/campaign/{voted.pk}/").content.decode()
    assert 'id="held-out"' in page and "Rank without" in page
    included = staff_client.get(f"/dashboards/api/campaigns/{voted.pk}/results", {"flagged": "include"}).json()
    assert "pusher" not in included["excluded_raters"]


def test_a_burst_of_joins_through_the_invite_link_is_held_and_the_simulation_link_is_not(campaign, settings):
    settings.EVALSITE_JOIN_RATE = "1000/hour"
    for _ in range(10):
        Client().post(f"/join/{campaign.invite_token}")
    for _ in range(10):
        Client().post(f"/join/{campaign.simulation_token}")
    assert CampaignJoin.objects.filter(campaign=campaign).count() == 20
    quality.update_rater_quality(campaign)
    held = RaterReview.objects.filter(campaign=campaign, state=RaterReview.State.HELD)
    assert held.count() == 10
    assert not held.filter(rater__simulated=True).exists()
    assert all("join burst" in r.reasons for r in held)


def test_flagged_raters_votes_are_left_out_of_the_crowd_the_checks_compare_with(voted):
    votes, _ = quality.suspicion_frames(voted)
    assert "careful-0" in set(votes["rater"])
    Rater.objects.filter(user__username="careful-0").update(flagged=True, flagged_reason="by hand")
    votes, _ = quality.suspicion_frames(voted)
    assert "careful-0" not in set(votes["rater"]) and "careful-1" in set(votes["rater"])


def test_the_admin_action_accepts_held_raters(voted, django_user_model):
    quality.update_rater_quality(voted)
    review = RaterReview.objects.get(campaign=voted)
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("admin", password="pw-admin-1"))
    response = admin.post(
        "/admin/rating/raterreview/", {"action": "accept", "_selected_action": [review.pk]}, follow=True
    )
    assert response.status_code == 200
    review.refresh_from_db()
    assert review.state == RaterReview.State.ACCEPTED and review.reviewed_by.username == "admin"
