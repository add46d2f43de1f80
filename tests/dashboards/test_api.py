"""The results API and its OpenAPI schema."""

import pytest
from django.urls import reverse

from analysis.leaderboard import fit_bradley_terry
from evalsite.dashboards.data import votes_frame


@pytest.mark.django_db
def test_results_api_returns_the_leaderboard_and_every_section(staff_client, voted_campaign):
    response = staff_client.get(
        reverse("dashboards:api-results", args=[voted_campaign.pk]), {"criterion": "aesthetics", "flagged": "include"}
    )
    assert response.status_code == 200
    data = response.json()
    votes = votes_frame(voted_campaign)
    fit = fit_bradley_terry(votes[(votes.criterion == "aesthetics") & ~votes.is_gold])
    assert [row["model"] for row in data["leaderboard"]] == list(fit.index)
    for row in data["leaderboard"]:
        assert row["score"] == pytest.approx(fit.loc[row["model"], "score"])
        assert row["lower"] == pytest.approx(fit.loc[row["model"], "lower"])
        assert row["votes"] == fit.loc[row["model"], "votes"]
    for key in ("win_rates", "sd3", "breakdowns", "raters", "metrics", "progress", "decisions"):
        assert data[key], key
    assert data["excluded_raters"] == []
    assert (
        staff_client.get(reverse("dashboards:api-results", args=[voted_campaign.pk]), {"flagged": "maybe"}).status_code
        == 400
    )


@pytest.mark.django_db
def test_campaign_list_api(staff_client, voted_campaign):
    data = staff_client.get(reverse("dashboards:api-campaigns")).json()
    assert data == [
        {
            "id": voted_campaign.pk,
            "name": voted_campaign.name,
            "run_id": voted_campaign.run_id,
            "run": voted_campaign.run.name,
            "criteria": voted_campaign.criteria,
            "votes": 250,
            "is_open": True,
        }
    ]


@pytest.mark.django_db
def test_schema_documents_the_dashboard_endpoints(staff_client):
    schema = staff_client.get(reverse("api-schema")).content.decode()
    for path in (
        "/dashboards/api/campaigns/{campaign_id}/results",
        "/dashboards/api/campaigns/{campaign_id}/votes",
        "/dashboards/api/campaigns/{campaign_id}/images",
        "/dashboards/api/campaigns/{campaign_id}/results-table",
        "/dashboards/api/runs/{run_id}/metrics",
    ):
        assert path in schema, path
