"""Every number on the campaign page leads to exactly the votes behind it."""

import html
import re

import pytest
from django.db.models import Q
from django.urls import reverse

from evalsite.rating.models import Vote


def vote_ids(client, url) -> set[int]:
    page = client.get(url).content.decode()
    return {int(v) for v in re.findall(r'data-vote-id="(\d+)"', page)}


def counted(campaign, criterion):
    return Vote.objects.filter(campaign=campaign, criterion=criterion, is_gold=False).exclude(
        rater__user__username="speedy"
    )


def links(page: str, pattern: str) -> list[str]:
    return [
        html.unescape(h)
        for h in re.findall(r'href="(/dashboards/campaign/\d+/votes/\?[^"]*)"', page)
        if re.search(pattern, html.unescape(h))
    ]


@pytest.mark.django_db
def test_heat_map_cell_lists_the_votes_between_the_two_models(staff_client, voted_campaign, campaign_page):
    page = campaign_page(voted_campaign, criterion="aesthetics")
    cell_links = links(page, r"opponent=")
    assert cell_links  # heat-map cells and SD3 bars link to their votes
    url = next(u for u in cell_links if "model=dash-model-0" in u and "opponent=dash-model-2" in u)
    expected = counted(voted_campaign, "aesthetics").filter(
        Q(model_left__name="dash-model-0", model_right__name="dash-model-2")
        | Q(model_left__name="dash-model-2", model_right__name="dash-model-0")
    )
    assert vote_ids(staff_client, url) == set(expected.values_list("id", flat=True))
    assert len(expected) == 32  # 4 raters x 4 prompts x 2 seeds


@pytest.mark.django_db
def test_leaderboard_row_lists_every_vote_of_the_model(staff_client, voted_campaign, campaign_page):
    page = campaign_page(voted_campaign)
    url = next(
        u
        for u in links(page, r"model=dash-model-1")
        if "opponent" not in u and "category" not in u and "challenge" not in u
    )
    expected = counted(voted_campaign, "prompt_following").filter(
        Q(model_left__name="dash-model-1") | Q(model_right__name="dash-model-1")
    )
    assert vote_ids(staff_client, url) == set(expected.values_list("id", flat=True))


@pytest.mark.django_db
def test_breakdown_cell_lists_the_model_votes_in_that_category(staff_client, voted_campaign, campaign_page):
    page = campaign_page(voted_campaign)
    url = next(u for u in links(page, r"category=Animals") if "model=dash-model-2" in u)
    expected = counted(voted_campaign, "prompt_following").filter(
        Q(model_left__name="dash-model-2") | Q(model_right__name="dash-model-2"), assignment__prompt__category="Animals"
    )
    ids = vote_ids(staff_client, url)
    assert ids == set(expected.values_list("id", flat=True))
    assert len(ids) == 32  # 2 Animals prompts x 2 seeds x 2 pairs x 4 counted raters


@pytest.mark.django_db
def test_drilldown_shows_images_prompts_and_choices(staff_client, voted_campaign):
    vote = counted(voted_campaign, "aesthetics").select_related("assignment__image_left", "assignment__prompt").first()
    url = reverse("dashboards:votes", args=[voted_campaign.pk])
    page = staff_client.get(url, {"criterion": "aesthetics", "rater": vote.rater.user.username}).content.decode()
    row = page.split(f'data-vote-id="{vote.pk}"')[1].split("</tr>")[0]
    image_url = reverse("rating:image", args=[vote.assignment.image_left.token])
    assert image_url in row
    assert html.escape(vote.assignment.prompt.text) in row
    assert vote.choice in row
    assert staff_client.get(image_url).status_code == 200  # staff may view any image


@pytest.mark.django_db
def test_rater_drilldown_includes_gold_checks_and_flagged_votes(staff_client, voted_campaign):
    url = reverse("dashboards:votes", args=[voted_campaign.pk])
    ids = vote_ids(staff_client, f"{url}?rater=speedy&criterion=all&gold=include&flagged=include")
    assert ids == set(
        Vote.objects.filter(campaign=voted_campaign, rater__user__username="speedy").values_list("id", flat=True)
    )
    assert vote_ids(staff_client, f"{url}?rater=speedy&criterion=all") == set()  # excluded by default


@pytest.mark.django_db
def test_drilldown_refuses_unknown_filters(staff_client, voted_campaign):
    url = reverse("dashboards:votes", args=[voted_campaign.pk])
    response = staff_client.get(url, {"colour": "red"})
    assert response.status_code == 400
    assert b"unknown filter" in response.content
    assert staff_client.get(url, {"opponent": "dash-model-1"}).status_code == 400
