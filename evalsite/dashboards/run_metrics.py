"""CLIP score and FID of every model of a comparison run, stored as MetricResult rows.

Which CLIP model: settings.EVALSITE_CLIP_MODEL (env EVALSITE_CLIP_MODEL), a local folder holding either a
transformers CLIPModel + processor or the demo dual encoder (generation/dual_encoder.py); by default the
committed demo encoder in demo_models/clip-demo, trained on the demo domain so the numbers mean something
offline. FID uses CLIP image features (as the SD3 paper reports); with settings.EVALSITE_INCEPTION_WEIGHTS
(a local torch-fidelity Inception weights file) it also computes the usual Inception FID.

Reference images for FID: when every prompt of the run is a demo-domain prompt, ground-truth images drawn
by `generation.demo_domain` for the same prompts (REFERENCE_PER_IMAGE per generated image, seeded);
otherwise the images of a reference model of the run (`reference_model`), whose own FID is not computed.

OCR typography metrics (`compute_ocr_metrics`): for the images of prompts that ask for text (`Prompt.needs_text`
with a `rendered_text`), Tesseract reads each image and `analysis.typography` compares the reading with the
requested text: mean character error rate and the share of images whose every requested word was read.
Demo-domain images (flat colours, 32 px) are read with `flat=True` (ink told from background by colour).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from PIL import Image as PILImage

from analysis import metrics as m
from evalsite.catalog.models import ImageModel, Prompt
from evalsite.dashboards.models import MetricResult
from evalsite.runs.models import ComparisonRun, Image

REFERENCE_PER_IMAGE = 4  # ground-truth images drawn per generated image (FID's real side)
REFERENCE_SEED = 1234  # seeds the ground-truth drawings


def clip_model_path() -> Path:
    return Path(settings.EVALSITE_CLIP_MODEL)


def inception_weights_path() -> Path | None:
    return Path(settings.EVALSITE_INCEPTION_WEIGHTS) if settings.EVALSITE_INCEPTION_WEIGHTS else None


def load_clip(path: Path) -> tuple[object, object]:
    """(model, processor) from a local folder: the demo dual encoder or a transformers CLIPModel."""
    from generation.dual_encoder.checkpoint import is_dual_encoder_dir, load_dual_encoder

    if is_dual_encoder_dir(path):
        return load_dual_encoder(path)
    return m.clip_from_directory(path)()


def read_pixels(image: Image) -> np.ndarray:
    """(H, W, 3) uint8 of a stored image."""
    with image.file.open("rb") as handle:
        data = handle.read()
    return np.array(PILImage.open(io.BytesIO(data)).convert("RGB"))


def _stack(pixels: list[np.ndarray]) -> np.ndarray:
    sizes = {p.shape for p in pixels}
    if len(sizes) != 1:  # mixed resolutions: bring everything to the most common size
        target = max(sizes, key=lambda s: sum(p.shape == s for p in pixels))
        pixels = [
            p
            if p.shape == target
            else np.asarray(PILImage.fromarray(p).resize((target[1], target[0]), PILImage.BICUBIC))
            for p in pixels
        ]
    return np.stack(pixels)


def ground_truth_images(prompts: list[str]) -> np.ndarray | None:
    """REFERENCE_PER_IMAGE demo-domain drawings per prompt, or None if some prompt is not a demo prompt."""
    from generation import demo_domain

    try:
        specs = [demo_domain.parse_prompt(p) for p in prompts]
    except ValueError:
        return None
    rng = np.random.default_rng(REFERENCE_SEED)
    return np.stack([demo_domain.render(s, rng) for s in specs for _ in range(REFERENCE_PER_IMAGE)])


def compute_run_metrics(
    run: ComparisonRun, *, reference_model: ImageModel | None = None, clip_path: Path | None = None
) -> list[MetricResult]:
    """Compute and store CLIP score and FID for every model with finished images in `run`."""
    clip_path = clip_path or clip_model_path()
    model, processor = load_clip(clip_path)
    features = m.ClipImageFeatures(model, processor)
    inception = inception_weights_path()
    inception_module = m.inception_features(inception) if inception else None

    done = (
        Image.objects.filter(run=run, status=Image.Status.DONE)
        .exclude(file="")
        .select_related("model", "prompt")
        .order_by("model__name", "prompt__position", "seed")
    )
    by_model: dict[ImageModel, list[Image]] = {}
    for image in done:
        by_model.setdefault(image.model, []).append(image)
    if not by_model:
        raise ValueError(f"run {run.pk} has no finished images to score")

    pixels = {mod: _stack([read_pixels(i) for i in imgs]) for mod, imgs in by_model.items()}
    if reference_model is not None and reference_model not in by_model:
        raise ValueError(f"reference model {reference_model} has no finished images in run {run.pk}")

    results = []
    for image_model, images in by_model.items():
        prompts = [i.prompt.text for i in images]
        fake = pixels[image_model]
        value, seconds = m.timed(m.clip_score, fake, prompts, (model, processor))
        results.append(
            (
                image_model,
                MetricResult.Metric.CLIP_SCORE,
                value,
                len(images),
                {"clip_model": str(clip_path), "seconds": round(seconds, 3)},
            )
        )

        if reference_model is not None:
            if image_model == reference_model:
                continue
            real, reference = pixels[reference_model], f"images of {reference_model.name}"
        else:
            real, reference = ground_truth_images(prompts), "demo-domain ground truth for the same prompts"
            if real is None:
                continue  # not demo prompts and no reference model: no FID
        for metric, module in (
            (MetricResult.Metric.FID_CLIP, features),
            (MetricResult.Metric.FID_INCEPTION, inception_module),
        ):
            if module is None:
                continue
            value, seconds = m.timed(m.fid, real, fake, module)
            results.append(
                (
                    image_model,
                    metric,
                    value,
                    len(images),
                    {
                        "reference": reference,
                        "n_reference": int(len(real)),
                        "num_features": module.num_features,
                        "reliable": m.fid_is_reliable(len(real), len(fake), module.num_features),
                        "feature_model": str(clip_path) if metric == MetricResult.Metric.FID_CLIP else str(inception),
                        "seconds": round(seconds, 3),
                    },
                )
            )

    return store_metric_results(run, results)


def store_metric_results(run: ComparisonRun, results: list[tuple]) -> list[MetricResult]:
    """(model, metric, value, n, details) rows stored in one transaction, each replacing its earlier value."""
    stored = []
    with transaction.atomic():
        for image_model, metric, value, n, details in results:
            row, _ = MetricResult.objects.update_or_create(
                run=run, model=image_model, metric=metric, defaults={"value": value, "n": n, "details": details}
            )
            stored.append(row)
    return stored


def requested_text(prompt: Prompt) -> str:
    """The text an image of `prompt` should show ("" when it asks for none or does not say which).
    Several quoted strings are stored as "A / B"; the image should show them all."""
    if not prompt.needs_text:
        return ""
    return " ".join(part.strip() for part in prompt.rendered_text.split(" / ") if part.strip())


def demo_spec(text: str):
    """The demo-domain spec of a prompt, or None. Demo images are flat colour areas (OCR reads them with
    `flat`), and for word prompts the pixel checker reads them too, so OCR's reading can be set beside it."""
    from generation import demo_domain

    try:
        return demo_domain.parse_prompt(text)
    except ValueError:
        return None


def checker_reading(pixels: np.ndarray, spec) -> str | None:
    """What the demo's pixel checker reads in a word prompt's image (None for other prompts)."""
    from generation.checker import check_image
    from generation.demo_domain import WordSpec

    return str(check_image(pixels, spec).found["word"]) if isinstance(spec, WordSpec) else None


def compute_ocr_metrics(run: ComparisonRun, *, keep_readings: int = 200) -> list[MetricResult]:
    """Store the OCR character error rate and exact-word match of every model with finished images of text
    prompts in `run` (nothing when the run has none). Raises typography.TesseractMissing without Tesseract.

    `details` keeps the engine's version, the settings and the first `keep_readings` readings of the model
    (image token, requested text, reading, CER, and for demo word prompts the pixel checker's reading), so a
    surprising number can be checked image by image; for demo word prompts also the share of images in which
    the checker reads the word (`checker_exact_word`), the reference OCR can be compared with."""
    from analysis import typography

    version = typography.tesseract_version()
    done = (
        Image.objects.filter(run=run, status=Image.Status.DONE, prompt__rendered_text__gt="")
        .exclude(file="")
        .select_related("model", "prompt")
        .order_by("model__name", "prompt__position", "seed")
    )
    by_model: dict[ImageModel, list[tuple[Image, str]]] = {}
    for image in done:
        text = requested_text(image.prompt)
        if text and typography.words(text):
            by_model.setdefault(image.model, []).append((image, text))

    specs: dict[int, object] = {}  # prompt id -> demo spec or None
    results = []
    for image_model, items in by_model.items():
        start = time.perf_counter()
        readings, cers, exact, entries = [], [], [], []
        for image, text in items:
            if image.prompt_id not in specs:
                specs[image.prompt_id] = demo_spec(image.prompt.text)
            spec, pixels = specs[image.prompt_id], read_pixels(image)
            reading = typography.read_text(pixels, flat=spec is not None)
            readings.append(reading)
            cers.append(typography.character_error_rate(reading, text))
            exact.append(typography.exact_word_match(reading, text))
            entry = {"image": str(image.token), "text": text, "reading": reading, "cer": round(cers[-1], 4)}
            checker = checker_reading(pixels, spec) if spec is not None else None
            if checker is not None:
                entry["checker"] = checker
            entries.append(entry)
        scores = typography.TypographyScores(readings=readings, cer=cers, exact=exact)
        checked = [e for e in entries if "checker" in e]
        details = {
            "engine": version,
            "psm": typography.DEFAULT_PSM,
            "min_height": typography.DEFAULT_MIN_HEIGHT,
            "flat_images": sum(specs[image.prompt_id] is not None for image, _ in items),
            "checker_exact_word": (
                sum(typography.exact_word_match(e["checker"], e["text"]) for e in checked) / len(checked)
                if checked
                else None
            ),
            "seconds": round(time.perf_counter() - start, 3),
            "readings": entries[:keep_readings],
        }
        results.append((image_model, MetricResult.Metric.OCR_CER, scores.mean_cer, scores.n, details))
        results.append((image_model, MetricResult.Metric.OCR_WORD_MATCH, scores.exact_rate, scores.n, details))

    return store_metric_results(run, results)


def timed_run_metrics(run: ComparisonRun, **kwargs) -> dict:
    """CLIP score and FID, then the OCR typography metrics (skipped, with the reason, without Tesseract)."""
    from analysis.typography import TesseractMissing

    start = time.perf_counter()
    rows = compute_run_metrics(run, **kwargs)
    try:
        ocr = compute_ocr_metrics(run)
        ocr_note = f"{len(ocr)} OCR results"
    except TesseractMissing as exc:
        ocr, ocr_note = [], f"OCR skipped: {exc}"
    return {
        "run": run.pk,
        "results": len(rows) + len(ocr),
        "ocr": ocr_note,
        "seconds": round(time.perf_counter() - start, 2),
    }
