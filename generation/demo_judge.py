"""Score one demo-domain image on each rating question, from its pixels and its prompt alone.

This is what a simulated rater "sees": the prompt text and the image file, nothing else. The scores are
graded (0..1) so that two imperfect images can still be compared:

- prompt following: the share of the checker's attribute checks the image passes (`generation.checker`:
  background, object colour, shape, the relation of two objects, the word). For word prompts the word
  counts by the share of letters read right, so "CAI" for "CAT" is better than "XYZ".
- typography (only for prompts that ask for text): the share of the requested letters read right, with
  the exact word worth a full point.
- aesthetics: how clean the drawing is, the only thing it measures. The demo domain's images are flat,
  noise-free areas of six pure colours; a pixel counts as clean when it lies within CLEAN_DISTANCE of a
  palette colour and its nearest palette colour agrees with at least two of its four neighbours (no
  speckle). Noise, blur, off-palette colours and ragged edges lower the score; it says nothing about
  whether the picture is what the prompt asks for, which is the other questions' business.

    scores = judge_image(image, "a red circle on a blue background")
    scores.prompt_following, scores.typography, scores.aesthetics      # 1.0, None, 0.98

A turntable (a text-to-3D model's image: generation.contract.TURNTABLE_VIEWS square views side by side) is judged
view by view (`judge_turntable`, or `judge_picture`, which tells the two apart by shape):

- prompt following: the mean over views of each view's prompt following as a picture's (background, object
  colour and shape: seen from the side a circle that became a bell or a bicone still reads as a circle, a
  cylinder as a square, a cone as a triangle, while a shapeless blob reads as none of them); aesthetics: the
  mean cleanliness of the views.
- multi-view consistency: how much the views agree with each other, as the checker reads them: the share of
  views whose reading (background, object colour) is the most common one, times the mean intersection over
  union of the object's silhouette in neighbouring views (an object that changes colour, appears or vanishes
  as it turns loses on the first, one that changes shape on the second).

A prompt outside the demo domain raises CannotJudge: a simulated rater must refuse it, not guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import cast

import numpy as np

from generation.checker import check_image, palette_labels, read_background, to_array
from generation.contract import TURNTABLE_VIEWS
from generation.demo_domain import COLOURS, PALETTE, DemoSpec, WordSpec, parse_prompt

CLEAN_DISTANCE = 48.0  # RGB units (Euclidean): how far a clean pixel may lie from its palette colour
MIN_AGREEING_NEIGHBOURS = 2  # of the 4 neighbours; a lone speckle has 0 or 1, the end of a 2-px stroke 2
QUESTIONS: tuple[str, ...] = ("prompt_following", "aesthetics", "typography", "multiview_consistency")
SIDE_VIEW_CHECKS = ("background", "colour")  # the 3D bar (docs/text-to-3d.md), and what consistency compares


class CannotJudge(ValueError):
    """The prompt is not one whose correctness can be read from the pixels."""


@dataclass(frozen=True)
class ImageScores:
    """Graded answers to the three rating questions for one image (each 0..1, higher is better)."""

    prompt_following: float
    aesthetics: float
    typography: float | None  # None: the prompt asks for no text
    correct: bool  # every attribute the checker reads is right
    multiview_consistency: float | None = None  # None: a picture, not a turntable

    def get(self, question: str) -> float | None:
        if question not in QUESTIONS:
            raise ValueError(f"unknown question {question!r}; known: {', '.join(QUESTIONS)}")
        return getattr(self, question)


def parse_judgeable(prompt: str) -> DemoSpec:
    """The prompt's demo spec, or CannotJudge saying why not."""
    try:
        return parse_prompt(prompt)
    except ValueError as e:
        raise CannotJudge(f"cannot judge {prompt!r} from pixels: not a prompt of the demo domain ({e})") from None


def cleanliness(image) -> float:
    """Share of pixels that are near a palette colour and agree with >= 2 of their 4 neighbours."""
    arr = to_array(image)
    palette = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)  # (C, 3)
    labels = palette_labels(arr)  # (H, W)
    distance = np.sqrt(((arr - palette[labels]) ** 2).sum(-1))  # (H, W)
    padded = np.pad(labels, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    agree = sum((n == labels).astype(np.int32) for n in neighbours)  # (H, W), 0..4
    return float(((distance <= CLEAN_DISTANCE) & (agree >= MIN_AGREEING_NEIGHBOURS)).mean())


def judge_image(image, prompt: str | DemoSpec) -> ImageScores:
    """The graded scores of one image (PIL image or (H, W, 3) array) against its demo prompt."""
    spec = parse_judgeable(prompt) if isinstance(prompt, str) else prompt
    result = check_image(image, spec)
    checks = {name: float(ok) for name, ok in result.checks.items()}
    typography = None
    if isinstance(spec, WordSpec):
        letters = cast(int, result.found["letters_right"]) / len(spec.word)
        typography = 1.0 if result.checks["word"] else letters
        checks["word"] = typography  # partial credit for partly right spelling
    following = float(np.mean(list(checks.values())))
    return ImageScores(
        prompt_following=following,
        aesthetics=cleanliness(image),
        typography=typography,
        correct=result.correct,
    )


def turntable_views(picture, views: int = TURNTABLE_VIEWS) -> list[np.ndarray]:
    """The views of a turntable (PIL image or (H, W, 3) array, `views` equal squares side by side)."""
    arr = to_array(picture)
    height, width = arr.shape[:2]
    if width != views * height:
        raise ValueError(f"a turntable of {views} views is {views} times as wide as high, got {width}x{height}")
    return [arr[:, i * height : (i + 1) * height] for i in range(views)]


def is_turntable(picture) -> bool:
    """Whether a picture (PIL image or array) has a turntable's shape: TURNTABLE_VIEWS squares side by side."""
    height, width = np.asarray(picture).shape[:2] if isinstance(picture, np.ndarray) else picture.size[::-1]
    return width == TURNTABLE_VIEWS * height


def _silhouette(view: np.ndarray) -> np.ndarray:
    labels = palette_labels(view)
    return labels != COLOURS.index(read_background(labels))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def judge_turntable(picture, prompt: str | DemoSpec, views: int = TURNTABLE_VIEWS) -> ImageScores:
    """The graded scores of a turntable against its demo prompt, with multi-view consistency."""
    spec = parse_judgeable(prompt) if isinstance(prompt, str) else prompt
    frames = turntable_views(picture, views)
    results = [check_image(frame, spec) for frame in frames]
    following = [float(np.mean([float(ok) for ok in r.checks.values()])) for r in results]
    readings = [tuple(r.found.get(c) for c in SIDE_VIEW_CHECKS) for r in results]
    agreeing = Counter(readings).most_common(1)[0][1] / len(readings)
    shapes = [_silhouette(frame) for frame in frames]
    overlap = float(np.mean([_iou(shapes[i], shapes[(i + 1) % len(shapes)]) for i in range(len(shapes))]))
    return ImageScores(
        prompt_following=float(np.mean(following)),
        aesthetics=float(np.mean([cleanliness(frame) for frame in frames])),
        typography=None,
        correct=all(f == 1.0 for f in following),
        multiview_consistency=agreeing * overlap,
    )


def judge_picture(picture, prompt: str | DemoSpec) -> ImageScores:
    """`judge_turntable` for a turntable (TURNTABLE_VIEWS times as wide as high), `judge_image` otherwise."""
    return judge_turntable(picture, prompt) if is_turntable(picture) else judge_image(picture, prompt)
