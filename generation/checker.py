"""Score an image against its demo prompt from the pixels alone (no learned model, no OCR library).

How each attribute is read:
- every pixel is mapped to its nearest PALETTE colour;
- background: the most common colour on the one-pixel border;
- object colour: the most common non-background colour;
- shape: the largest 4-connected region of the object colour is compared, by intersection over union, with
  an ideal circle, square and triangle drawn (by the renderer's own `shape_mask`) into the region's bounding
  box; the best match wins, so no threshold is tuned;
- position prompts: each named colour's largest region, its shape, and the relation of the two centroids
  along the axis where they differ most;
- word prompts: text colour as above; the letters are read by cutting the text's bounding box into the
  3x5 font grid the word would occupy and matching each cell block against every glyph (Hamming distance).

    result = check_image(image, "a red circle on a blue background")
    result.checks   # {'background': True, 'colour': True, 'shape': False}
    result.found    # {'background': 'blue', 'colour': 'red', 'shape': 'square'}
    summary = score_images(images, prompts)   # accuracy per kind and attribute
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from PIL import Image
from scipy import ndimage

from generation.demo_domain import (
    COLOURS,
    FONT,
    GLYPH_H,
    GLYPH_W,
    PALETTE,
    SHAPES,
    DemoSpec,
    PositionSpec,
    ShapeSpec,
    WordSpec,
    parse_prompt,
    shape_mask,
)

_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)  # (C, 3)
_GLYPHS = {ch: np.array([[c == "#" for c in row] for row in rows], dtype=bool) for ch, rows in FONT.items()}
MIN_REGION = 4  # pixels: a colour region smaller than this counts as absent


@dataclass
class CheckResult:
    """What the checker read from one image and which prompt attributes it found right."""

    kind: str  # "shape", "position" or "word"
    checks: dict[str, bool] = field(default_factory=dict)  # attribute -> whether the image shows it
    found: dict[str, object] = field(default_factory=dict)  # attribute -> what was read from the pixels

    @property
    def correct(self) -> bool:
        return all(self.checks.values())


def to_array(image) -> np.ndarray:
    """PIL image or (H, W, 3) array -> (H, W, 3) float32 in 0..255."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    return arr.astype(np.float32)


def palette_labels(image) -> np.ndarray:
    """(H, W) index into COLOURS of each pixel's nearest palette colour."""
    arr = to_array(image)
    dist = ((arr[:, :, None, :] - _PALETTE_RGB[None, None]) ** 2).sum(-1)  # (H, W, C)
    return dist.argmin(-1)


def read_background(labels: np.ndarray) -> str:
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    return COLOURS[Counter(border.tolist()).most_common(1)[0][0]]


def largest_region(labels: np.ndarray, colour: str) -> np.ndarray | None:
    """Boolean mask of the largest 4-connected region of `colour`, or None if it is under MIN_REGION."""
    regions, n = ndimage.label(labels == COLOURS.index(colour))
    if n == 0:
        return None
    sizes = np.bincount(regions.ravel())[1:]
    best = int(sizes.argmax())
    if sizes[best] < MIN_REGION:
        return None
    return regions == best + 1


def read_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """The shape whose ideal drawing in `mask`'s bounding box overlaps `mask` best, and all the IoUs."""
    ys, xs = np.nonzero(mask)
    x0, y0 = xs.min(), ys.min()
    w, h = xs.max() - x0 + 1, ys.max() - y0 + 1
    ious = {}
    for shape in SHAPES:
        ideal = shape_mask(shape, float(x0), float(y0), float(w), float(h), size=mask.shape[0])
        if mask.shape[1] != mask.shape[0]:
            raise ValueError("the checker needs square images")
        ious[shape] = float((ideal & mask).sum() / max((ideal | mask).sum(), 1))
    return max(ious, key=lambda shape: ious[shape]), ious


def read_relation(first: np.ndarray, second: np.ndarray) -> str:
    """Where `first` is relative to `second`, from their centroids."""
    (y1, x1), (y2, x2) = ndimage.center_of_mass(first), ndimage.center_of_mass(second)
    dy, dx = y1 - y2, x1 - x2
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def read_letters(mask: np.ndarray, n_letters: int) -> str:
    """Read `n_letters` letters from the pixels in `mask`, assuming the demo font's layout (letters three
    font units wide, one unit apart, five units high) fills the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return ""
    x0, y0 = xs.min(), ys.min()
    w, h = xs.max() - x0 + 1, ys.max() - y0 + 1
    unit_x, unit_y = w / (4 * n_letters - 1), h / GLYPH_H
    box = mask[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    letters = []
    for i in range(n_letters):
        cells = np.zeros((GLYPH_H, GLYPH_W), dtype=bool)
        for r in range(GLYPH_H):
            for c in range(GLYPH_W):
                ya, yb = int(round(r * unit_y)), max(int(round((r + 1) * unit_y)), int(round(r * unit_y)) + 1)
                u = 4 * i + c
                xa, xb = int(round(u * unit_x)), max(int(round((u + 1) * unit_x)), int(round(u * unit_x)) + 1)
                cells[r, c] = box[ya:yb, xa:xb].mean() >= 0.5 if box[ya:yb, xa:xb].size else False
        letters.append(min(_GLYPHS, key=lambda ch: int((_GLYPHS[ch] != cells).sum())))
    return "".join(letters)


def check_image(image, prompt: str | DemoSpec) -> CheckResult:
    """Check one image against a demo prompt (its text or its spec)."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    labels = palette_labels(image)
    background = read_background(labels)
    others = labels[labels != COLOURS.index(background)]
    main_colour = COLOURS[Counter(others.tolist()).most_common(1)[0][0]] if others.size else None
    result = CheckResult(kind=spec.kind)
    result.found["background"] = background
    result.checks["background"] = background == spec.background

    if isinstance(spec, ShapeSpec):
        result.found["colour"] = main_colour
        result.checks["colour"] = main_colour == spec.colour
        region = largest_region(labels, spec.colour)
        shape = read_shape(region)[0] if region is not None else None
        result.found["shape"] = shape
        result.checks["shape"] = shape == spec.shape
    elif isinstance(spec, PositionSpec):
        first, second = largest_region(labels, spec.colour), largest_region(labels, spec.colour2)
        result.checks["colour"] = first is not None and second is not None
        shapes = [read_shape(m)[0] if m is not None else None for m in (first, second)]
        result.found["shape"], result.found["shape2"] = shapes
        result.checks["shape"] = shapes == [spec.shape, spec.shape2]
        relation = read_relation(first, second) if first is not None and second is not None else None
        result.found["relation"] = relation
        result.checks["relation"] = relation == spec.relation
    elif isinstance(spec, WordSpec):
        result.found["colour"] = main_colour
        result.checks["colour"] = main_colour == spec.colour
        text = read_letters(labels == COLOURS.index(spec.colour), len(spec.word))
        result.found["word"] = text
        result.found["letters_right"] = sum(a == b for a, b in zip(text, spec.word, strict=False))
        result.checks["word"] = text == spec.word
    return result


def score_images(images: Sequence, prompts: Sequence[str | DemoSpec]) -> dict[str, dict[str, float]]:
    """Accuracy per prompt kind and attribute, plus 'all' (every attribute right) and 'n' (images).

    Returns {kind: {attribute: fraction, ..., 'all': fraction, 'n': count}}; word prompts also get
    'letters' (fraction of letters read right)."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    hits: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for image, prompt in zip(images, prompts, strict=True):
        spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
        r = check_image(image, spec)
        for name, ok in r.checks.items():
            hits[r.kind][name].append(float(ok))
        hits[r.kind]["all"].append(float(r.correct))
        if isinstance(spec, WordSpec):
            hits[r.kind]["letters"].append(cast(int, r.found["letters_right"]) / len(spec.word))
    out = {}
    for kind, per in hits.items():
        out[kind] = {name: float(np.mean(v)) for name, v in per.items()}
        out[kind]["n"] = len(per["all"])
    return out
