"""Can a rater tell the models apart without looking at the pictures? A classifier on what the HTTP layer shows.

    .venv/bin/python bench/anonymity.py [--prompts 40] [--seeds 2]

In one command, on an embedded database in a temporary folder:
  1. three outside systems' images, made here from the demo domain's renderer: each model draws the prompt in
     its own way (clean, noisy, soft) and delivers its own format, size and metadata, as real systems do:
       outside-jpeg  JPEG 1024x1024 with EXIF and an embedded colour profile
       outside-png   PNG 1792x1024 with a text chunk naming its sampler
       outside-webp  WebP 512x512
     imported with manage.py import_images into one run; a campaign with gold checks opened on it;
  2. a rater (Django's test client: the full middleware stack) asks for every pair through the API and fetches
     both images of each, keeping what it can observe without decoding a pixel: Content-Length, the response
     headers, the URL (and how often it has seen that URL before), the PNG header's width and height and the
     file's chunk layout;
  3. a classifier learns model <- observations on half of the images (split by prompt) and names the model of
     the held-out half. Two learners, the better one reported: a lookup table on the discrete observations
     (headers, dimensions, chunk layout, URL form and reuse: the best possible learner for discrete features)
     and 1-nearest-neighbour on Content-Length;
  4. the baseline, in the same run and on the same images: what the serving before this change let a rater
     observe (one token URL per image in every pair, the image's own size, its re-encoded PNG length).

Bar (issue 13): held-out accuracy no better than chance + 5 points (chance = 1/3).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import tempfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("outside-jpeg", "outside-png", "outside-webp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=40, help="prompts of the demo set used (it has 40)")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="anonymity-")
    os.environ.update(
        {
            "EVALSITE_VAR_DIR": var_dir,
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "EVALSITE_RATER_RATE": "1000000/min",
        }
    )
    for name in ("DATABASE_URL", "CACHE_URL", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    manifest, truth = make_outside_images(Path(var_dir) / "outside", args.prompts, args.seeds)
    call_command("import_images", str(manifest), "--run", "outside study", "--prompt-set", "demo", stdout=io.StringIO())
    served, old = rate_everything(truth)
    print(f"{len(served)} image views over {len({s['image'] for s in served})} images of {len(MODELS)} models")
    chance = max(Counter(s["model"] for s in served).values()) / len(served)
    now = held_out_accuracy(served)
    before = held_out_accuracy(old)
    print()
    print("| serving | lookup table | 1-NN on Content-Length | best | chance | bar (chance + 5) |")
    print("|---|---|---|---|---|---|")
    for label, result in (("before (token URLs, own size and length)", before), ("now", now)):
        best = max(result.values())
        print(
            f"| {label} | {result['lookup']:.1%} | {result['length_1nn']:.1%} | {best:.1%} | {chance:.1%} | "
            f"{chance + 0.05:.1%} |"
        )
    distinct = {k: len({tuple(s[k]) if isinstance(s[k], list) else s[k] for s in served}) for k in FEATURES}
    print(f"\ndistinct values a rater sees now, per observation: {json.dumps(distinct)}")
    print(f"ratio best accuracy now / before: {max(now.values()) / max(before.values()):.2f}")
    verdict = max(now.values()) <= chance + 0.05
    print(f"bar met: {verdict}")
    if not verdict:
        raise SystemExit(1)


# --------------------------------------------------------------------------------------------------
# The outside systems


def make_outside_images(folder: Path, n_prompts: int, n_seeds: int):
    """Three systems' deliveries of the demo prompts, and the prompt set; returns (manifest path, truth)."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageCms, ImageFilter, PngImagePlugin

    from evalsite.catalog.services import create_prompt_set
    from evalsite.demo.management.commands.seed_demo import demo_prompt_rows
    from generation.demo_domain import parse_prompt, render

    rows = demo_prompt_rows()[:n_prompts]
    create_prompt_set("demo", rows, source_file="generation.demo_domain")
    folder.mkdir(parents=True)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    manifest, truth = [], {}
    for index, row in enumerate(rows):
        spec = parse_prompt(row.text)
        for seed in range(n_seeds):
            base = render(spec, np.random.default_rng(1000 * index + seed))
            for model in MODELS:
                rng = np.random.default_rng(zlib.crc32(f"{model}-{index}-{seed}".encode()))
                pixels = base.astype(np.int16)
                if model == "outside-png":  # a noisy system: its files compress badly
                    pixels = pixels + rng.normal(0, 18, pixels.shape).astype(np.int16)
                picture = PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                if model == "outside-webp":  # a soft one
                    picture = picture.filter(ImageFilter.GaussianBlur(0.8))
                name = f"{model}-{index:03d}-{seed}"
                if model == "outside-jpeg":
                    exif = PILImage.Exif()
                    exif[0x0131] = "OutsideSystem v6"
                    path = f"{name}.jpg"
                    picture.resize((1024, 1024), PILImage.Resampling.BICUBIC).save(
                        folder / path, "JPEG", quality=92, exif=exif, icc_profile=profile
                    )
                elif model == "outside-png":
                    info = PngImagePlugin.PngInfo()
                    info.add_text("parameters", f"sampler: secret-sampler, seed {seed}")
                    path = f"{name}.png"
                    picture.resize((1792, 1024), PILImage.Resampling.BICUBIC).save(folder / path, "PNG", pnginfo=info)
                else:
                    path = f"{name}.webp"
                    picture.resize((512, 512), PILImage.Resampling.BICUBIC).save(folder / path, "WEBP", quality=85)
                manifest.append({"model": model, "prompt": row.text, "seed": seed, "path": path})
                truth[(model, row.text, seed)] = path
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    return path, truth


# --------------------------------------------------------------------------------------------------
# The rater's view


FEATURES = ("length", "headers", "dims", "chunks", "url_seen_before", "url_shape")


def png_layout(data: bytes) -> tuple[tuple[int, int], list[str]]:
    """(width, height) from the IHDR chunk, and the chunk types in order: read, not decoded (their lengths add up
    to the Content-Length, the nearest-neighbour learner's feature)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return (0, 0), ["not-png"]
    chunks, offset, dims = [], 8, (0, 0)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IHDR":
            dims = struct.unpack(">II", data[offset + 8 : offset + 16])
        chunks.append(kind.decode("latin-1"))
        offset += 12 + length
    return dims, chunks


def rate_everything(truth):
    """Every pair of the campaign through the API; per image view, what a rater observes now and what the
    serving before this change let it observe (same images, same order)."""
    from django.test import Client
    from django.utils import timezone

    from evalsite.rating import engine
    from evalsite.rating.models import Assignment, Campaign, Rater
    from evalsite.rating.views import clean_png
    from evalsite.runs.models import ComparisonRun

    run = ComparisonRun.objects.get(name="outside study")
    campaign = Campaign.objects.create(name="anonymity", run=run, votes_per_pair=1, gold_rate=0.1)
    engine.prepare_campaign(campaign)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("observer", password="observer-pw-1")
    rater = Rater.objects.create(user=user, instructions_seen_at=timezone.now())
    campaign.raters.add(rater)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    served, old, seen_urls, seen_tokens = [], [], Counter(), Counter()
    while True:
        body = client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]
        if body is None:
            break
        assignment = Assignment.objects.select_related("image_left__model", "image_right__model").get(pk=body["id"])
        for side in ("left", "right"):
            url = body["images"][side]["url"]
            response = client.get(url)
            image = assignment.image_left if side == "left" else assignment.image_right
            dims, chunks = png_layout(response.content)
            headers = sorted(f"{k}: {v}" for k, v in response.headers.items() if k.lower() not in ("date",))
            served.append(
                {
                    "image": image.pk,
                    "prompt": image.prompt_id,
                    "model": image.model.name,
                    "length": len(response.content),
                    "headers": headers,
                    "dims": list(dims),
                    "chunks": chunks,
                    "url_seen_before": seen_urls[url],
                    "url_shape": url_shape(url),
                }
            )
            seen_urls[url] += 1
            # Before: /i/<token>.png (the same URL in every pair), the image's own size, its re-encoded length.
            old_data = clean_png(image)
            old_dims, old_chunks = png_layout(old_data)
            old.append(
                {
                    "image": image.pk,
                    "prompt": image.prompt_id,
                    "model": image.model.name,
                    "length": len(old_data),
                    "headers": headers,
                    "dims": list(old_dims),
                    "chunks": old_chunks,
                    "url_seen_before": seen_tokens[image.token],
                    "url_shape": "token",
                }
            )
            seen_tokens[image.token] += 1
        choices = {c["key"]: "left" for c in body["criteria"]}
        vote = {"idempotency_key": f"observer-{body['id']}", "choices": choices, "time_taken_ms": 3000}
        client.post(body["votes_url"], json.dumps(vote), content_type="application/json")
    return served, old


def url_shape(url: str) -> str:
    """The URL with its random parts replaced: what its form says, not which one it is."""
    import re

    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", url)


# --------------------------------------------------------------------------------------------------
# The classifier


def held_out_accuracy(views: list[dict]) -> dict[str, float]:
    """Train on the views of half the prompts, test on the other half; accuracy of each learner."""

    def held_out(view) -> bool:
        return hashlib.sha256(str(view["prompt"]).encode()).digest()[0] % 2 == 1

    train = [v for v in views if not held_out(v)]
    test = [v for v in views if held_out(v)]
    majority = Counter(v["model"] for v in train).most_common(1)[0][0]

    def key(view):  # the discrete observations (Content-Length is the nearest-neighbour learner's)
        return tuple(json.dumps(view[f], sort_keys=True) for f in FEATURES if f != "length")

    table: dict[tuple, Counter] = defaultdict(Counter)
    for view in train:
        table[key(view)][view["model"]] += 1
    lookup = [
        (table[key(v)].most_common(1)[0][0] if key(v) in table else majority) == v["model"] for v in test
    ]  # fmt: skip
    by_length = sorted((v["length"], v["model"]) for v in train)
    lengths = [length for length, _ in by_length]

    def nearest(length: int) -> str:
        import bisect

        i = bisect.bisect_left(lengths, length)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(lengths)]
        return by_length[min(candidates, key=lambda j: abs(lengths[j] - length))][1]

    one_nn = [nearest(v["length"]) == v["model"] for v in test]
    return {"lookup": sum(lookup) / len(test), "length_1nn": sum(one_nn) / len(test)}


if __name__ == "__main__":
    main()
