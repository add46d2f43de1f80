"""Style covariates of stored images, measured once and cached on the Image row (Image.style_covariates).

`covariates_frame(tokens)` is what style control (analysis.style_control) takes: one row per image token with
the pixel covariates of analysis.image_style plus the generation time from the image record. Images not yet
measured, or measured by an older definition (STYLE_VERSION), are decoded now and saved, so a dashboard
decodes each image once, at its first view, and reads the row after that.

The pixels are those of the stored file (the image as generated or imported), not the square the run shows
raters; `pixels` is therefore the stored width x height, which differs between models only when their native
sizes do.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from PIL import Image as PILImage

from analysis.image_style import PIXEL_COVARIATES, image_covariates
from evalsite.outages import storage_away
from evalsite.runs.models import Image

STYLE_VERSION = 1  # bump when analysis.image_style's definitions change: cached values are measured again
QUERY_CHUNK = 900  # tokens per query (SQLite allows a limited number of parameters in one statement)


def measure(image: Image) -> dict:
    """The pixel covariates of one stored image, with the version; an unreadable file gives its error."""
    try:
        with image.file.open("rb") as stored, PILImage.open(stored) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        values: dict = image_covariates(pixels)
    except (OSError, ValueError) as exc:  # missing or broken file: no values, imputed as average in the fit
        if storage_away(exc):  # an S3 timeout is an OSError too: measure again later rather than keep an error
            raise
        values = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"version": STYLE_VERSION, **values}


def cached_covariates(images: Iterable[Image]) -> int:
    """Measure and save the images whose covariates are missing or stale; returns how many were measured."""
    stale = [
        image
        for image in images
        if not image.style_covariates or image.style_covariates.get("version") != STYLE_VERSION
    ]
    for image in stale:
        image.style_covariates = measure(image)
    Image.objects.bulk_update(stale, ["style_covariates"], batch_size=500)
    return len(stale)


def covariates_frame(tokens: Iterable[str]) -> pd.DataFrame:
    """One row per image token: the pixel covariates and generation_seconds (NaN where unknown)."""
    wanted = sorted(set(tokens))
    fields = ("id", "token", "file", "generation_seconds", "style_covariates")
    images = [
        image
        for start in range(0, len(wanted), QUERY_CHUNK)
        for image in Image.objects.filter(token__in=wanted[start : start + QUERY_CHUNK]).only(*fields)
    ]
    cached_covariates(images)
    rows = {}
    for image in images:
        stored = image.style_covariates or {}
        row = {name: stored.get(name, np.nan) for name in PIXEL_COVARIATES}
        row["generation_seconds"] = np.nan if image.generation_seconds is None else image.generation_seconds
        rows[image.token] = row
    return pd.DataFrame.from_dict(rows, orient="index", columns=[*PIXEL_COVARIATES, "generation_seconds"])
