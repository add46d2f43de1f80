"""The simulated crowd rates a text-to-3D campaign: it downloads both turntables through the rater API, judges
them view by view and answers the three 3D questions, preferring the model whose object stays the same as it
turns."""

from __future__ import annotations

import numpy as np
from django.core.files.base import ContentFile
from django.urls import reverse

from evalsite.catalog.models import ImageModel, Prompt, PromptSet
from evalsite.crowd.crowd import Crowd
from evalsite.rating.models import Campaign, Vote
from evalsite.runs.models import ComparisonRun, Image
from generation import contract, demo_domain
from tests.crowd.conftest import png

PROMPTS = [
    "a red circle on a blue background",
    "a green square on a white background",
    "a blue circle on a yellow background",
]
OTHER = {"red": "green", "green": "blue", "blue": "red"}


def turntable(prompt: str, seed: int, steady: bool) -> np.ndarray:
    """8 views of the prompt's object; an unsteady object shows another colour in every other view."""
    spec = demo_domain.parse_prompt(prompt)
    views = []
    for i in range(contract.TURNTABLE_VIEWS):
        shown = spec if steady or i % 2 == 0 else type(spec)(OTHER[spec.colour], spec.shape, spec.background)
        views.append(demo_domain.render(shown, np.random.default_rng(seed * 10 + i)))
    return np.concatenate(views, axis=1)


def test_a_careful_crowd_rates_turntables_and_prefers_the_consistent_object(live_server, transactional_db, media_root):
    prompt_set = PromptSet.objects.create(name="3d crowd prompts")
    prompts = [Prompt.objects.create(prompt_set=prompt_set, position=i, text=t) for i, t in enumerate(PROMPTS)]
    run = ComparisonRun.objects.create(name="3d crowd run", prompt_set=prompt_set, seeds=[0, 1], status="done")
    models = {}
    for name in ("steady", "unsteady"):
        models[name] = ImageModel.objects.create(name=name, kind=contract.TEXT_TO_3D, source=f"/priors/{name}")
        run.image_models.add(models[name])
        for prompt in prompts:
            for seed in (0, 1):
                image = Image(run=run, model=models[name], prompt=prompt, seed=seed, sampler_settings={},
                              status=Image.Status.DONE, width=8 * 32, height=32)  # fmt: skip
                image.file.save("x.png", ContentFile(png(turntable(prompt.text, seed, name == "steady"))), save=False)
                image.save()
    campaign = Campaign.objects.create(name="3d crowd campaign", run=run, gold_rate=0.0)
    link = live_server.url + reverse("rating:join", args=[campaign.simulation_token])

    summary = Crowd(link, 3, {"careful": 1.0}, seed=1, think_scale=0.01, max_pairs_per_rater=6).run(minutes=3)

    assert summary.pairs == 18 and not summary.stopped and not summary.refused
    votes = list(Vote.objects.filter(campaign=campaign).select_related("model_left", "model_right"))
    assert {v.criterion for v in votes} == {"prompt_following", "aesthetics", "multiview_consistency"}
    wins = [
        (v.model_left if v.choice == "left" else v.model_right).name
        for v in votes
        if v.criterion == "multiview_consistency" and v.choice in ("left", "right")
    ]
    assert len(wins) >= 12 and wins.count("steady") / len(wins) >= 0.9
