"""Dashboards and their API are for staff only."""

import pytest
from django.urls import reverse


def dashboard_urls(campaign):
    return [
        reverse("dashboards:campaigns"),
        reverse("dashboards:campaign", args=[campaign.pk]),
        reverse("dashboards:votes", args=[campaign.pk]) + "?criterion=prompt_following",
        reverse("dashboards:export", args=[campaign.pk, "votes", "csv"]),
    ]


def api_urls(campaign):
    return [
        reverse("dashboards:api-campaigns"),
        reverse("dashboards:api-results", args=[campaign.pk]),
        reverse("dashboards:api-votes", args=[campaign.pk]) + "?format=csv",
        reverse("dashboards:api-images", args=[campaign.pk]) + "?format=json",
        reverse("dashboards:api-results-table", args=[campaign.pk]) + "?format=parquet",
        reverse("dashboards:api-run-metrics", args=[campaign.run_id]),
    ]


@pytest.mark.django_db
def test_logged_out_visitors_are_sent_to_the_login_page(client, make_campaign):
    campaign = make_campaign()
    for url in dashboard_urls(campaign):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    for url in api_urls(campaign):
        assert client.get(url).status_code == 403, url


@pytest.mark.django_db
def test_raters_get_403_on_every_page_and_endpoint(rater_client, make_campaign):
    campaign = make_campaign()
    for url in dashboard_urls(campaign) + api_urls(campaign):
        assert rater_client.get(url).status_code == 403, url
    assert rater_client.post(reverse("dashboards:compute-metrics", args=[campaign.run_id])).status_code == 403
    assert rater_client.post(reverse("dashboards:api-run-metrics", args=[campaign.run_id])).status_code == 403


@pytest.mark.django_db
def test_staff_can_open_every_page_and_endpoint(staff_client, make_campaign):
    campaign = make_campaign()  # no votes yet: every page must still render
    for url in dashboard_urls(campaign) + api_urls(campaign):
        assert staff_client.get(url).status_code == 200, url
