"""A finished run of demo-domain images whose truth is known: model "good" draws what each prompt asks,
model "bad" draws the wrong colours with noise. Campaigns on it are what the simulated crowd votes on."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from generation import demo_domain

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the live server and the crowd's threads

PROMPTS = [
    "a red circle on a blue background",
    "a green square on a white background",
    "a yellow triangle on a black background",
    "a blue circle on a yellow background",
    "a red square above a green circle on a white background",
    'the word "CAT" in red letters on a white background',
]


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def good_image(prompt: str, seed: int) -> np.ndarray:
    return demo_domain.render(demo_domain.parse_prompt(prompt), np.random.default_rng(seed))


def bad_image(prompt: str, seed: int) -> np.ndarray:
    """The same layout with every colour swapped for another palette colour, plus noise."""
    image = good_image(prompt, seed)
    swapped = np.empty_like(image)
    colours = list(demo_domain.PALETTE.values())
    for i, colour in enumerate(colours):
        swapped[(image == colour).all(-1)] = colours[(i + 1) % len(colours)]
    noise = np.random.default_rng(seed + 100).normal(0, 35, image.shape)
    return np.clip(swapped + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def demo_campaign(transactional_db, media_root):
    """make(**campaign fields) -> a campaign on a finished run of models good and bad (6 prompts x 3 seeds)."""
    from django.core.files.base import ContentFile

    from evalsite.catalog.models import ImageModel, Prompt, PromptSet
    from evalsite.rating.models import Campaign
    from evalsite.runs.models import ComparisonRun, Image

    def make(prompts=PROMPTS, seeds=(0, 1, 2), **fields):
        prompt_set = PromptSet.objects.create(name=f"crowd prompts {PromptSet.objects.count()}")
        rows = [
            Prompt.objects.create(
                prompt_set=prompt_set,
                position=i,
                text=text,
                category="Writing & Symbols" if '"' in text else "Shapes",
                detected_needs_text='"' in text,
                rendered_text="CAT" if '"' in text else "",
            )
            for i, text in enumerate(prompts)
        ]
        models = {
            name: ImageModel.objects.get_or_create(
                name=name, defaults={"kind": ImageModel.Kind.INHOUSE, "source": f"/checkpoints/{name}"}
            )[0]
            for name in ("good", "bad")
        }
        run = ComparisonRun.objects.create(
            name=f"crowd run {prompt_set.pk}", prompt_set=prompt_set, seeds=list(seeds), status="done"
        )
        run.image_models.set(models.values())
        for name, draw in (("good", good_image), ("bad", bad_image)):
            for prompt in rows:
                for seed in seeds:
                    try:
                        pixels = draw(prompt.text, seed)
                    except ValueError:  # not a demo prompt: any picture will do
                        pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    image = Image(run=run, model=models[name], prompt=prompt, seed=seed, sampler_settings={},
                                  status=Image.Status.DONE, width=32, height=32)  # fmt: skip
                    image.file.save("x.png", ContentFile(png(pixels)), save=False)
                    image.save()
        return Campaign.objects.create(name="crowd campaign", run=run, **fields)

    return make
