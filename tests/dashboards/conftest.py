"""Campaigns with votes built through the ORM (Assignment + Vote rows), for the dashboard tests."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

# True strengths of the test models (log-odds): model 0 is clearly best, 1 and 2 are close.
STRENGTHS = {0: 1.2, 1: 0.1, 2: 0.0}
CATEGORIES = ["Animals", "Writing & Symbols", "Animals", "Abstract"]
CHALLENGES = ["Basic", "Writing", "Complex", "Basic"]


def add_votes(campaign, answers):
    """Store answers as Assignment + Vote rows in bulk (one assignment per rater and image pair).

    answers: dicts with rater, left, right (Image rows), criterion, choice and optionally is_gold, gold,
    gold_correct, ms."""
    from evalsite.rating.models import Assignment, Vote

    now = timezone.now()
    assignments = {}
    for a in answers:
        key = (a["rater"].pk, Assignment.make_pair_key(a["left"].pk, a["right"].pk))
        if key not in assignments:
            assignments[key] = Assignment(
                campaign=campaign,
                rater=a["rater"],
                prompt=a["left"].prompt,
                image_left=a["left"],
                image_right=a["right"],
                pair_key=key[1],
                gold=a.get("gold"),
                status=Assignment.Status.ANSWERED,
                expires_at=now + timedelta(minutes=10),
                answered_at=now,
            )
    Assignment.objects.bulk_create(assignments.values())
    votes = []
    for a in answers:
        assignment = assignments[(a["rater"].pk, Assignment.make_pair_key(a["left"].pk, a["right"].pk))]
        votes.append(
            Vote(
                assignment=assignment,
                campaign=campaign,
                rater=a["rater"],
                criterion=a["criterion"],
                choice=a["choice"],
                model_left=a["left"].model,
                model_right=a["right"].model,
                time_taken_ms=a.get("ms", 3000),
                idempotency_key=f"{assignment.pk}-{a['criterion']}",
                is_gold=a.get("is_gold", False),
                gold_correct=a.get("gold_correct"),
            )
        )
    return Vote.objects.bulk_create(votes)


@pytest.fixture
def voted_campaign(make_run, make_rater, make_campaign):
    """3 models x 4 prompts (4 categories) x 2 seeds; 5 raters vote on every same-seed image pair on two
    criteria, drawn from a Bradley-Terry model with STRENGTHS (seeded); left/right alternate. Rater "speedy"
    answers in 0.5 s and is flagged on the platform; each rater also answers two gold checks."""
    from evalsite.rating.models import Choice, Criterion, GoldCheck, Image

    prompts = [
        "a red circle on a blue background",
        'the word "CAT" in red letters on a white background',
        "a green square on a white background",
        "a yellow triangle on a black background",
    ]
    run = make_run(n_models=3, seeds=(0, 1), prompt_texts=prompts, name="dash")
    for prompt in run.prompt_set.prompts.all():
        prompt.category, prompt.challenge = CATEGORIES[prompt.position], CHALLENGES[prompt.position]
        prompt.save()
    raters = [make_rater(name) for name in ("alice", "bob", "carol", "dave", "speedy")]
    raters[-1].flagged = True
    raters[-1].flagged_reason = "manual: test"
    raters[-1].save()
    campaign = make_campaign(raters=raters, run=run, criteria=[Criterion.PROMPT_FOLLOWING, Criterion.AESTHETICS])
    models = sorted(run.image_models.all(), key=lambda m: m.name)
    rng = np.random.default_rng(7)
    images = {(img.model_id, img.prompt_id, img.seed): img for img in Image.objects.filter(run=run)}
    flip = itertools.count()
    answers = []
    for rater in raters:
        for prompt in run.prompt_set.prompts.all():
            for seed in (0, 1):
                for a, b in itertools.combinations(range(3), 2):
                    left, right = (a, b) if next(flip) % 2 else (b, a)
                    img_l = images[(models[left].pk, prompt.pk, seed)]
                    img_r = images[(models[right].pk, prompt.pk, seed)]
                    for criterion in (Criterion.PROMPT_FOLLOWING, Criterion.AESTHETICS):
                        p_left = 1 / (1 + np.exp(-(STRENGTHS[left] - STRENGTHS[right])))
                        u = rng.random()
                        choice = Choice.TIE if u < 0.08 else (Choice.LEFT if rng.random() < p_left else Choice.RIGHT)
                        answers.append(
                            {
                                "rater": rater,
                                "left": img_l,
                                "right": img_r,
                                "criterion": criterion,
                                "choice": choice,
                                "ms": 500 if rater.user.username == "speedy" else int(2500 + 1000 * rng.random()),
                            }
                        )
    # gold checks: an image of prompt 0 against an image of prompt 2 (same model); the first is right
    prompt0, prompt2 = run.prompt_set.prompts.order_by("position")[0], run.prompt_set.prompts.order_by("position")[2]
    for i, rater in enumerate(raters):
        model = models[i % 3]
        for seed in (0, 1):
            correct, wrong = images[(model.pk, prompt0.pk, seed)], images[(model.pk, prompt2.pk, seed)]
            gold, _ = GoldCheck.objects.get_or_create(
                campaign=campaign, prompt=prompt0, correct_image=correct, wrong_image=wrong
            )
            right_answer = rater.user.username != "dave" or seed == 0
            left, right = (correct, wrong) if seed == 0 else (wrong, correct)
            choice = (
                (Choice.LEFT if seed == 0 else Choice.RIGHT)
                if right_answer
                else (Choice.RIGHT if seed == 0 else Choice.LEFT)
            )
            answers.append(
                {
                    "rater": rater,
                    "left": left,
                    "right": right,
                    "criterion": Criterion.PROMPT_FOLLOWING,
                    "choice": choice,
                    "is_gold": True,
                    "gold": gold,
                    "gold_correct": right_answer,
                }
            )
    add_votes(campaign, answers)
    return campaign


@pytest.fixture
def campaign_page(staff_client):
    """The campaign dashboard as a researcher gets it, as text: `campaign_page(campaign, criterion=...)`."""
    from django.urls import reverse

    def get(campaign, **options) -> str:
        return staff_client.get(reverse("dashboards:campaign", args=[campaign.pk]), options).content.decode()

    return get


@pytest.fixture
def rater_client(client, make_rater):
    rater = make_rater("plainrater")
    client.force_login(rater.user)
    return client
