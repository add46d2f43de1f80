"""Style covariates of one image from its pixels: what a model could win votes on without answering the
question better (brighter, more colourful, sharper images; images with text on them).

`image_covariates(pixels)` takes an (H, W, 3) uint8 RGB array and returns plain floats:

  brightness     mean luma, Rec. 601 weights (0.299 R + 0.587 G + 0.114 B) / 255, in [0, 1]
  saturation     mean HSV saturation (max - min) / max per pixel (0 for black pixels), in [0, 1]
  colourfulness  Hasler & Suesstrunk (2003): sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)
                 with rg = R - G, yb = (R + G) / 2 - B on the 0-255 scale
  sharpness      variance of the 4-neighbour Laplacian of the grey image (0-255 scale), border excluded
  pixels         width * height
  text_present   1.0 if the image holds text-like marks, else 0.0 (`looks_like_text`, a cheap heuristic)

The generation time is not in the pixels: the site takes it from the stored image record.
May import numpy and scipy, nothing from analysis/.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PIXEL_COVARIATES = ("brightness", "saturation", "colourfulness", "sharpness", "pixels", "text_present")
LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601

# text_present: a glyph is a mark that differs clearly from the background, small (between GLYPH_AREA of the
# image), taller than wide (GLYPH_ASPECT), and text is at least MIN_GLYPHS of them side by side on one line.
INK_CONTRAST = 0.25  # |grey - background grey| above this share of the full range counts as ink
GLYPH_AREA = (0.002, 0.06)  # a glyph's pixels as a share of the image
MIN_GLYPHS = 2
GLYPH_ASPECT = 1.2  # height / width of a glyph's box at least this (letters are taller than wide)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or min(pixels.shape[:2]) < 3:
        raise ValueError(f"pixels must be an (H, W, 3) RGB array of at least 3 x 3, got shape {pixels.shape}")
    return pixels[..., :3].astype(np.float64)  # (H, W, 3), 0-255


def image_covariates(pixels: np.ndarray) -> dict[str, float]:
    """The pixel covariates of one image (see the module docstring): (H, W, 3) uint8 RGB -> {name: value}."""
    rgb = _rgb(pixels)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = rgb @ LUMA  # (H, W), 0-255
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-12), 0.0)
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    laplacian = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    return {
        "brightness": float(grey.mean() / 255.0),
        "saturation": float(saturation.mean()),
        "colourfulness": float(colourfulness),
        "sharpness": float(laplacian.var()),
        "pixels": float(grey.size),
        "text_present": 1.0 if looks_like_text(rgb) else 0.0,
    }


def looks_like_text(pixels: np.ndarray) -> bool:
    """A cheap text detector, no OCR: at least MIN_GLYPHS glyph-sized marks on one line.

    pixels: (H, W, 3) RGB 0-255. The background is the median colour of the border; "ink" is a pixel whose
    colour differs from it by more than INK_CONTRAST of the range in some channel; its 8-connected pieces of
    glyph size (GLYPH_AREA, GLYPH_ASPECT) whose centres lie within one glyph height of each other
    vertically count as letters on a line. It finds rendered words on plain backgrounds (the demo domain's
    typography prompts) and misses text on busy photographs; it is a covariate, not a typography score.
    """
    rgb = _rgb(pixels)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (n, 3)
    ink = (np.abs(rgb - np.median(border, axis=0)) > INK_CONTRAST * 255.0).any(axis=2)
    area = ink.size
    labels, n = ndimage.label(ink, structure=np.ones((3, 3)))
    if n < MIN_GLYPHS:
        return False
    rows, cols = np.nonzero(labels)
    piece = labels[rows, cols] - 1  # (ink pixels,) piece index
    size = np.bincount(piece, minlength=n)
    top, left = np.full(n, ink.shape[0]), np.full(n, ink.shape[1])
    bottom, right = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    np.minimum.at(top, piece, rows)
    np.minimum.at(left, piece, cols)
    np.maximum.at(bottom, piece, rows + 1)
    np.maximum.at(right, piece, cols + 1)
    height, width = bottom - top, right - left
    glyph = (size >= GLYPH_AREA[0] * area) & (size <= GLYPH_AREA[1] * area) & (height >= GLYPH_ASPECT * width)
    if glyph.sum() < MIN_GLYPHS:
        return False
    centres = 0.5 * (top + bottom)[glyph]
    tolerance = float(np.median(height[glyph]))
    on_line = np.abs(centres[:, None] - centres[None, :]) <= tolerance  # (glyphs, glyphs)
    return bool(on_line.sum(axis=1).max() >= MIN_GLYPHS)
