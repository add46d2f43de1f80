"""Issue 7's decisions on the page and in the API, equal to analysis.decisions.campaign_decisions."""

import html
import itertools

import numpy as np
import pytest
from django.urls import reverse

from analysis.decisions import campaign_decisions, replay_top_evidence, top_evidence_at_looks, top_rule_settings
from analysis.votes import count_pairs, vote_sequence
from evalsite.dashboards.data import votes_frame
from evalsite.dashboards.results import CAMPAIGN_TOP_RULE
from tests.support import ordered_votes

SITE_RULE = top_rule_settings(CAMPAIGN_TOP_RULE)  # {'tie_variance': each vote's variance from the ties, 'rho'}


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
        # the top model by the campaign's rule: the counted votes replayed in the order they were cast
        top_evidence=replay_top_evidence(*vote_sequence(counted.sort_values("vote_id"), pairs.models), 3, **SITE_RULE),
        ties=pairs.dense()[1] if SITE_RULE["tie_variance"] else None,  # votes still needed with the rule's variance
        top_rho=SITE_RULE["rho"],
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
        assert shown["top_model"]["rule"] == shown["top_rule"] == CAMPAIGN_TOP_RULE
        assert shown["top_model"]["bonferroni"] == pytest.approx(expected["top_model"]["bonferroni"])

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


def _store_in_order(campaign, raters, a, b, score, *, interleave=None, slots=None):
    """Store the votes (a beat b with `score`) in this order, model k = the run's k-th model by name, each on
    a fresh image pair for its rater; interleave(n) may give extra answers to store before vote n."""
    from evalsite.rating.models import Choice, Image
    from tests.dashboards.conftest import add_votes

    images = list(Image.objects.filter(run=campaign.run).select_related("model").order_by("model__name", "pk"))
    by_model: dict = {}
    for image in images:
        by_model.setdefault(image.model.name, []).append(image)
    names = sorted(by_model)
    slots = {} if slots is None else slots  # (model pair) -> counter of the rater / image slots used so far
    answers = []
    for n, (i, j, s) in enumerate(zip(a.tolist(), b.tolist(), score.tolist(), strict=True)):
        answers.extend(interleave(n) if interleave else [])
        used = slots.setdefault((min(i, j), max(i, j)), itertools.count())
        slot = next(used)
        rater, image = raters[slot % len(raters)], slot // len(raters)
        left, right = (by_model[names[i]][image], by_model[names[j]][image])
        if n % 2:  # the right-hand side alternates
            left, right, s = right, left, 1.0 - s
        choice = Choice.TIE if s == 0.5 else (Choice.LEFT if s == 1.0 else Choice.RIGHT)
        answers.append(
            {"rater": rater, "left": left, "right": right, "criterion": "prompt_following", "choice": choice}
        )
    add_votes(campaign, answers)
    return names


@pytest.mark.django_db
def test_a_clear_best_model_is_certified_by_the_campaigns_rule_before_bonferroni(
    staff_client, campaign_page, make_run, make_campaign, make_rater
):
    strengths = np.array([0.0, -0.5, -1.0, -1.5])
    a, b, score = ordered_votes(strengths, 1200, seed=2)
    # the first look at which the campaign's rule certifies, on the votes alone; Bonferroni is still open there
    looks = top_evidence_at_looks(a, b, score, 4, **SITE_RULE)
    n = 25 * (1 + int(np.argmax((np.delete(looks, 0, axis=1) >= np.log(20)).all(axis=1))))
    wins = np.zeros((4, 4))
    np.add.at(wins, (a[:n], b[:n]), score[:n])
    np.add.at(wins, (b[:n], a[:n]), 1 - score[:n])
    assert not campaign_decisions(wins, project=False)["top_model"]["certified"]

    raters = [make_rater(f"r{i}") for i in range(16)]
    spammer = make_rater("spammer")
    spammer.flagged, spammer.flagged_reason = True, "manual: test"
    spammer.save()
    run = make_run(n_models=4, seeds=(0, 1, 2, 3), name="clear")
    campaign = make_campaign(raters=[*raters, spammer], run=run, criteria=["prompt_following"])

    def spam(vote):  # a flagged rater who always picks the worst model: left out, as on every other number
        from evalsite.rating.models import Choice, Image

        if vote % 10 or vote // 10 >= 12:
            return []
        images = Image.objects.filter(run=run).order_by("model__name", "pk")
        best, worst = (
            images.filter(model__name=images[0].model.name),
            images.filter(model__name=images.last().model.name),
        )
        k = vote // 10
        return [
            {
                "rater": spammer,
                "left": best[k % 12],
                "right": worst[k % 12],
                "criterion": "prompt_following",
                "choice": Choice.RIGHT,
            }
        ]

    names = _store_in_order(campaign, raters, a[:n], b[:n], score[:n], interleave=spam)
    data = staff_client.get(reverse("dashboards:api-results", args=[campaign.pk])).json()
    decision = data["decisions"]["by_criterion"][0]["decision"]
    top = decision["top_model"]
    assert data["excluded_raters"] == ["spammer"] and data["decisions"]["top_rule"] == CAMPAIGN_TOP_RULE
    assert top["rule"] == decision["top_rule"] == CAMPAIGN_TOP_RULE and decision["top_evidence_look_every"] == 25
    assert top["certified"] and top["model_name"] == names[0]
    assert top["bonferroni"]["certified"] is False and top["bonferroni"]["confidence"] < 0.95
    assert top["votes"] == n
    page = html.unescape(campaign_page(campaign))
    assert f"certified</span> {names[0]} at 95% confidence" in page
    assert f"({CAMPAIGN_TOP_RULE} rule; the older Bonferroni rule:" in page
    assert f'the "{CAMPAIGN_TOP_RULE}" rule' in page

    # the cheap polling endpoint says the same
    now = staff_client.get(reverse("dashboards:api-decisions", args=[campaign.pk])).json()
    assert now["top_rule"] == CAMPAIGN_TOP_RULE and now["by_criterion"][0]["decision"]["top_model"]["certified"]


@pytest.mark.django_db
def test_equal_models_are_never_certified_by_the_campaigns_rule(staff_client, make_run, make_campaign, make_rater):
    raters = [make_rater(f"r{i}") for i in range(16)]
    run = make_run(n_models=3, seeds=tuple(range(8)), name="equal")
    campaign = make_campaign(raters=raters, run=run, criteria=["prompt_following"])
    _store_in_order(campaign, raters, *ordered_votes(np.zeros(3), 1000, seed=5))
    data = staff_client.get(reverse("dashboards:api-results", args=[campaign.pk])).json()
    top = data["decisions"]["by_criterion"][0]["decision"]["top_model"]
    assert top["votes"] == sum(r["n_votes"] for r in data["raters"] if not r["flagged"]) and top["votes"] > 800
    assert top["rule"] == CAMPAIGN_TOP_RULE
    assert not top["certified"] and not top["bonferroni"]["certified"]


@pytest.mark.django_db
def test_the_resumed_replay_gives_the_full_replays_numbers_as_votes_come_and_raters_are_flagged(
    make_run, make_campaign, make_rater, monkeypatch
):
    from django.core.cache import cache

    from analysis.decisions import TopEvidenceReplay
    from evalsite.dashboards.results import ResultOptions, campaign_decisions_now

    resumed_from = []  # votes already replayed when a replay is fed the history (0: from the start)
    run_replay = TopEvidenceReplay.run

    def spy(self, a, b, score):
        resumed_from.append(self.looked)
        return run_replay(self, a, b, score)

    monkeypatch.setattr(TopEvidenceReplay, "run", spy)

    raters = [make_rater(f"r{i}") for i in range(16)]
    run = make_run(n_models=3, seeds=tuple(range(8)), name="resume")
    campaign = make_campaign(raters=raters, run=run, criteria=["prompt_following"])
    a, b, score = ordered_votes(np.array([0.0, -0.3, -0.6]), 330, seed=9)
    cache.clear()
    slots: dict = {}

    def shown():
        """The top model as the polled endpoint shows it, and the counted votes (without excluded raters)."""
        now = campaign_decisions_now(campaign, ResultOptions(criterion="prompt_following"))
        votes = votes_frame(campaign)
        return now["by_criterion"][0]["decision"]["top_model"], votes[~votes.rater.isin(now["excluded_raters"])]

    def full_replay(counted):
        pairs = count_pairs(counted)
        evidence = replay_top_evidence(*vote_sequence(counted, pairs.models), 3, **SITE_RULE)
        return campaign_decisions(pairs.half_wins(), project=False, top_evidence=evidence)["top_model"]

    for stop in (110, 230, 330):  # votes arrive between loads; the second and third loads resume
        part = slice(stop - 110, stop)
        _store_in_order(campaign, raters, a[part], b[part], score[part], slots=slots)
        top, counted = shown()
        assert top["votes"] == len(counted) > stop - 50
        assert top["confidence"] == full_replay(counted)["confidence"]  # bit for bit
    site = resumed_from[0::2]  # (the odd calls are full_replay's, always from the start)
    assert site[0] == 0 and 0 < site[1] < site[2]
    before = len(counted)
    raters[0].flagged = True  # flagged later: the history changes, the replay starts over
    raters[0].save()
    top, counted = shown()
    assert "r0" not in set(counted.rater) and top["votes"] == len(counted) < before
    assert top["confidence"] == full_replay(counted)["confidence"]
    assert resumed_from[6] == 0  # the stored state no longer matched the history
