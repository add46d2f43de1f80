"""Votes of a simulated crowd are labelled wherever votes are shown or exported, and the decisions API is
the cheap read a running campaign can be polled with."""

import io

import pandas as pd
import pytest
from django.test import Client
from django.urls import reverse

from evalsite.dashboards.data import votes_frame
from evalsite.dashboards.results import ResultOptions, campaign_decisions_now, campaign_results
from evalsite.rating.models import Rater


@pytest.fixture
def partly_simulated(voted_campaign):
    """The voted campaign with two of its raters turned into simulated raters."""
    simulated = list(voted_campaign.raters.order_by("pk")[:2])
    Rater.objects.filter(pk__in=[r.pk for r in simulated]).update(simulated=True, participant_id="sim-careful-0")
    return voted_campaign, {r.user.username for r in simulated}


@pytest.mark.django_db
def test_the_votes_export_says_which_votes_are_simulated(staff_client, partly_simulated):
    campaign, names = partly_simulated
    response = staff_client.get(reverse("dashboards:api-votes", args=[campaign.pk]), {"format": "csv"})
    table = pd.read_csv(io.BytesIO(response.content))
    assert set(table.loc[table["rater_simulated"], "rater"]) == names
    assert not table.loc[~table["rater"].isin(names), "rater_simulated"].any()


@pytest.mark.django_db
def test_the_campaign_page_counts_and_marks_simulated_votes(staff_client, partly_simulated):
    campaign, names = partly_simulated
    html = staff_client.get(reverse("dashboards:campaign", args=[campaign.pk])).content.decode()
    simulated_votes = int(votes_frame(campaign)["rater_simulated"].sum())
    assert f"{simulated_votes:,} of them simulated" in html
    assert html.count('<span class="simulated">simulated</span>') == len(names)


@pytest.mark.django_db
def test_results_and_rater_rows_carry_the_simulated_flag(partly_simulated):
    campaign, names = partly_simulated
    results = campaign_results(campaign, ResultOptions(criterion="prompt_following", project=False))
    assert {r["rater"] for r in results["raters"] if r["simulated"]} == names
    assert results["progress"]["simulated_votes"] == int(votes_frame(campaign)["rater_simulated"].sum())


@pytest.mark.django_db
def test_the_decisions_api_gives_every_criterion_its_decision_in_model_order(staff_client, voted_campaign):
    response = staff_client.get(reverse("dashboards:api-decisions", args=[voted_campaign.pk]), {"flagged": "include"})
    assert response.status_code == 200
    data = response.json()
    full = campaign_results(voted_campaign, ResultOptions(criterion="prompt_following", exclude_flagged=False))
    for row, reference in zip(data["by_criterion"], full["decisions"]["by_criterion"], strict=True):
        assert row["criterion"] == reference["criterion"]
        assert row["decision"]["top_model"]["certified"] == reference["decision"]["top_model"]["certified"]
        assert row["decision"]["models_in_order"][0] == row["decision"]["top_model"]["model_name"]
        assert row["decision"]["projected"] is False
    assert data["progress"]["votes"] == full["progress"]["votes"]
    assert {r["rater"] for r in data["raters"]} == {r["rater"] for r in full["raters"]}


@pytest.mark.django_db
def test_the_decisions_api_is_for_staff_and_refuses_a_bad_option(staff_client, voted_campaign):
    url = reverse("dashboards:api-decisions", args=[voted_campaign.pk])
    assert Client().get(url).status_code in (401, 403)
    assert staff_client.get(url, {"flagged": "maybe"}).status_code == 400


@pytest.mark.django_db
def test_decisions_now_match_the_full_results_without_projection(voted_campaign):
    options = ResultOptions(criterion="prompt_following")
    now = campaign_decisions_now(voted_campaign, options)
    assert [r["criterion"] for r in now["by_criterion"]] == [
        r["criterion"] for r in campaign_results(voted_campaign, options)["decisions"]["by_criterion"]
    ]
