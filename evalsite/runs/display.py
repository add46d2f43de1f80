"""What a rater is shown: every image of a run at the run's one size, encoded the same way, so that nothing but
the pixels can tell models apart.

Images arrive in many shapes: generated at a model's own resolution, or imported from other systems (JPEG,
WebP, 1792x1024, 512x512...). Before a rater sees one it is

  1. decoded to RGB pixels (the stored file holds nothing else: generation and import write pixels only);
  2. brought to the run's square size (ComparisonRun.image_size, or the width most of its images have) by the
     run's policy for other aspect ratios: `crop` (the centre square) or `letterbox` (the whole image on a
     neutral grey square), then resampled with one filter (Lanczos);
  3. written as a PNG by one encoder with one setting, compression off, and no metadata chunk.

With compression off a PNG's length depends on its width and height only, so every image of a run has the
same Content-Length whatever its model: the size signal (a noisy model's files are larger) is gone without
padding. The price is bandwidth: width x height x 3 bytes (3 KB at 32 px, 786 KB at 512 px, 3 MB at 1024 px).

A text-to-3D run's images are turntables: generation.contract.TURNTABLE_VIEWS views side by side. Each view goes
through steps 1-2 on its own (the run's size is the side of one view) and the views are put back side by side
before step 3, so a turntable is shown as TURNTABLE_VIEWS squares of the run's size, every one of the same length.
"""

from __future__ import annotations

import functools
import io

from django.core.cache import cache
from django.db.models import Count
from PIL import Image as PILImage

from evalsite.outages import storage_missing
from evalsite.runs.models import IMAGE_FITS, ComparisonRun, Image
from generation.contract import TURNTABLE_VIEWS

FITS = tuple(value for value, _ in IMAGE_FITS)
CROP, LETTERBOX = FITS
LETTERBOX_GREY = (128, 128, 128)
DEFAULT_SIZE = 512  # a run with no finished image yet
SIZE_CACHE_SECONDS = 60
PIXELS_CACHE_SECONDS = 3600
PIXELS_CACHE_MAX_BYTES = 2 * 1024 * 1024


def views_shown(run: ComparisonRun) -> int:
    """How many squares one image of the run is shown as: TURNTABLE_VIEWS for a text-to-3D run, else 1."""
    key = f"runs:views-shown:{run.pk}"
    views = cache.get(key)
    if views is None:
        views = TURNTABLE_VIEWS if run.is_3d else 1
        cache.set(key, views, PIXELS_CACHE_SECONDS)  # a run's models never change
    return views


def display_size(run: ComparisonRun) -> int:
    """The side of the square every image (every view of a turntable) of the run is shown at."""
    if run.image_size:
        return run.image_size
    key = f"runs:display-size:{run.pk}"
    size = cache.get(key)
    if size is None:
        side = "height" if views_shown(run) > 1 else "width"  # a turntable's height is one view's side
        widths = (
            Image.objects.in_run(run)
            .filter(status=Image.Status.DONE)
            .exclude(**{side: None})
            .values(side)
            .annotate(n=Count("id"))
            .order_by("-n", side)
        )
        first = widths.first()
        size = first[side] if first else DEFAULT_SIZE
        cache.set(key, size, SIZE_CACHE_SECONDS)
    return size


def fit_square(picture: PILImage.Image, size: int, fit: str) -> PILImage.Image:
    """The picture as an RGB size x size square: its centre square (crop) or all of it on grey (letterbox)."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; known: {', '.join(FITS)}")
    picture = picture.convert("RGB")
    width, height = picture.size
    if fit == CROP:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = picture.crop((left, top, left + side, top + side))
        return square if side == size else square.resize((size, size), PILImage.Resampling.LANCZOS)
    scale = size / max(width, height)
    inner = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = picture if inner == picture.size else picture.resize(inner, PILImage.Resampling.LANCZOS)
    canvas = PILImage.new("RGB", (size, size), LETTERBOX_GREY)
    canvas.paste(resized, ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


def fit_turntable(picture: PILImage.Image, size: int, fit: str, views: int) -> PILImage.Image:
    """A turntable (`views` equal frames side by side) with each frame brought to a size x size square."""
    width, height = picture.size
    frame = width / views
    strip = PILImage.new("RGB", (views * size, size))
    for i in range(views):
        box = (round(i * frame), 0, round((i + 1) * frame), height)
        strip.paste(fit_square(picture.crop(box), size, fit), (i * size, 0))
    return strip


def uniform_png(picture: PILImage.Image) -> bytes:
    """The one encoding every shown image gets: RGB, compression off, no metadata (length = f(width, height))."""
    pixels_only = PILImage.frombytes("RGB", picture.size, picture.convert("RGB").tobytes())
    out = io.BytesIO()
    pixels_only.save(out, format="PNG", compress_level=0)
    return out.getvalue()


class ImageUnreadable(Exception):
    """The stored file of a finished image is gone or is not a picture: it cannot be shown, now or later."""


def stored_picture(image: Image) -> PILImage.Image:
    """The image's stored file, decoded. ImageUnreadable when the file is missing (locally or in the object
    store) or cannot be decoded; an outage of the store (evalsite.outages) is raised as it is, to be waited out."""
    try:
        with image.file.open("rb") as stored:
            data = stored.read()
    except Exception as exc:
        if storage_missing(exc):
            raise ImageUnreadable(f"the stored file of {image} is missing") from exc
        raise
    try:
        picture = PILImage.open(io.BytesIO(data))
        picture.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, bomb errors
        raise ImageUnreadable(f"the stored file of {image} is not a readable image ({exc})") from exc
    return picture


def shown_png(image: Image, run: ComparisonRun) -> bytes:
    """The image as a rater of `run` sees it. The normalised pixels are cached (compressed) per image, size and
    fit; the uniform encoding is made per response."""
    size, fit, views = display_size(run), run.image_fit, views_shown(run)
    key = f"runs:shown:{image.token}:{size}:{fit}:{views}"
    compressed = cache.get(key)
    if compressed is not None:
        return uniform_png(PILImage.open(io.BytesIO(compressed)))
    picture = stored_picture(image)
    square = fit_square(picture, size, fit) if views == 1 else fit_turntable(picture, size, fit, views)
    out = io.BytesIO()
    square.save(out, format="PNG", compress_level=1)
    if out.tell() <= PIXELS_CACHE_MAX_BYTES:
        cache.set(key, out.getvalue(), PIXELS_CACHE_SECONDS)
    return uniform_png(square)


@functools.lru_cache(maxsize=64)
def uniform_length(size: int, views: int = 1) -> int:
    """The length of every uniform PNG of `views` size x size squares side by side (it depends on those only)."""
    return len(uniform_png(PILImage.new("RGB", (views * size, size))))


def shown_length(run: ComparisonRun) -> int:
    """The Content-Length of every image of the run, as a rater sees it (a HEAD request needs no picture)."""
    return uniform_length(display_size(run), views_shown(run))
