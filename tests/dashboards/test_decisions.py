"""Issue 7's decisions on the page and in the API, equal to analysis.decisions.campaign_decisions."""

import html

import pytest
from django.urls import reverse

from analysis.decisions import campaign_decisions
from analysis.votes import count_pairs
from evalsite.dashboards.data import votes_frame


def expected_decisions(campaign, criterion):
    votes = votes_frame(campaign)
    counted = votes[(votes.criterion == criterion) & ~votes.is_gold & (votes.rater != "speedy")]
    pairs = count_pairs(counted)
    return campaign_decisions(
        pairs.half_wins(),
        0.05,
        model_names=list(pairs.models),
        policy=campaign.pair_policy,
        min_votes_per_pair=campaign.min_votes_per_model_pair,
    )


@pytest.mark.django_db
def test_api_decisions_equal_campaign_decisions(staff_client, voted_campaign):
    data = staff_client.get(reverse("dashboards:api-results", args=[voted_campaign.pk])).json()
    blocks = {b["criterion"]: b["decision"] for b in data["decisions"]["by_criterion"]}
    assert set(blocks) == {"prompt_following", "aesthetics"}
    for criterion, shown in blocks.items():
        expected = expected_decisions(voted_campaign, criterion)
        assert shown["top_model"]["model_name"] == expected["top_model"]["model_name"]
        assert shown["top_model"]["certified"] == expected["top_model"]["certified"]
        assert shown["top_model"]["confidence"] == pytest.approx(expected["top_model"]["confidence"])
        assert shown["top_model"]["votes_still_needed"] == expected["top_model"]["votes_still_needed"]

        def summary(decision):
            return [
                (n["higher_name"], n["lower_name"], n["settled"], n["votes_still_needed"])
                for n in decision["neighbours"]
            ]

        assert summary(shown) == summary(expected)
    assert data["decisions"]["level"] == pytest.approx(0.95)


@pytest.mark.django_db
def test_page_explains_each_decision_in_plain_words(voted_campaign, campaign_page):
    page = html.unescape(campaign_page(voted_campaign))
    decisions = page.split('id="decisions"')[1].split("</section>")[0]
    assert "the chance that the top-model claim is ever wrong is at most 5%" in decisions
    for criterion in ("prompt_following", "aesthetics"):
        expected = expected_decisions(voted_campaign, criterion)
        assert expected["top_model"]["explain"] in decisions
        for item in expected["neighbours"]:
            assert item["explain"] in decisions
        top_two = expected["neighbours"][0]
        progress = page.split('id="progress"')[1].split("</section>")[0]
        assert f"{top_two['higher_name']} vs {top_two['lower_name']}" in progress


@pytest.mark.django_db
def test_a_clear_leader_is_certified_with_its_confidence(staff_client, campaign_page, make_campaign, make_rater):
    from evalsite.rating.models import Choice, Image
    from tests.dashboards.conftest import add_votes

    raters = [make_rater(f"r{i}") for i in range(20)]
    campaign = make_campaign(raters=raters, criteria=["prompt_following"])
    images = list(Image.objects.filter(run=campaign.run).select_related("model").order_by("model__name", "prompt_id"))
    by_model = {}
    for image in images:
        by_model.setdefault(image.model.name, []).append(image)
    best, *others = sorted(by_model)
    answers = []
    for r, rater in enumerate(raters):
        for other in others:
            for p, (a, b) in enumerate(zip(by_model[best], by_model[other], strict=True)):
                # the best model wins 55 of its 60 votes against each other model; the others split evenly
                choice = Choice.RIGHT if (r * 3 + p) % 12 == 5 else Choice.LEFT
                answers.append(
                    {"rater": rater, "left": a, "right": b, "criterion": "prompt_following", "choice": choice}
                )
        for p, (a, b) in enumerate(zip(by_model[others[0]], by_model[others[1]], strict=True)):
            answers.append(
                {
                    "rater": rater,
                    "left": a,
                    "right": b,
                    "criterion": "prompt_following",
                    "choice": Choice.LEFT if (r + p) % 2 else Choice.RIGHT,
                }
            )
    add_votes(campaign, answers)
    data = staff_client.get(reverse("dashboards:api-results", args=[campaign.pk])).json()
    top = data["decisions"]["by_criterion"][0]["decision"]["top_model"]
    assert top["certified"] and top["model_name"] == best
    page = html.unescape(campaign_page(campaign))
    assert f"certified</span> {best} at 95% confidence" in page
    assert f"{best} is the best of the 3 models, with 95% confidence" in page
