"""The demo domain: seeded, procedurally drawn captioned images whose content can be checked from pixels.

Three kinds of prompt, all on a 32x32 RGB canvas of pure palette colours (no anti-aliasing, so every
pixel of a ground-truth image is exactly one palette colour and `generation.checker` can read it back):

    shape     "a red circle on a blue background"
    position  "a red circle above a blue square on a white background"   (above / below / left of / right of)
    word      'the word "CAT" in red letters on a white background'        (2-3 letters, 3x5 bitmap font)

A fixed set of prompt combinations is held out of training (`all_prompts('heldout')`); the split is chosen
so that every pair of attribute values of a held-out prompt still occurs together in some training prompt,
so held-out prompts test composition, not unseen vocabulary.

    specs = all_specs("train")                        # every training combination, as DemoSpec objects
    img = render(specs[0], np.random.default_rng(0))  # (32, 32, 3) uint8
    images, captions, specs = sample_batch(64, np.random.default_rng(0), "train")
    spec = parse_prompt("a red circle on a blue background")   # -> ShapeSpec(...)
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

IMAGE_SIZE = 32  # height = width of every demo image, in pixels

# Pure colours, far apart in RGB so that nearest-palette-colour reading is unambiguous under blur and noise.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
# 2-3 letter words with no colour or shape name among them; letters whose 3x5 glyphs are distinct.
WORDS: tuple[str, ...] = ("CAT", "DOG", "SKY", "BIG", "HI", "OK", "GO", "UP", "FLY", "ICE", "TOP", "ART")

# Layout of the drawings (pixels). Single objects sit near the centre; the side of the square box that holds
# a shape is drawn uniformly from SHAPE_SIZE, its centre is the image centre moved by up to SHAPE_JITTER.
SHAPE_SIZE = (12, 20)
SHAPE_JITTER = 5
PAIR_SIZE = (9, 13)  # side of each object in a position prompt
GLYPH_SCALE = 2  # each font pixel becomes a GLYPH_SCALE x GLYPH_SCALE block
GLYPH_GAP = 2  # blank pixels between letters
HELDOUT_SEED = 20240305  # fixes the held-out split; changing it changes which prompts are held out
HELDOUT_COUNT = {"shape": 14, "position": 432, "word": 36}  # how many combinations of each kind are held out

# A 3x5 uppercase bitmap font, rows from top to bottom. Every glyph touches all four sides of its 3x5 cell,
# so the bounding box of a rendered word is exactly its layout box.
FONT: dict[str, tuple[str, ...]] = {
    "A": (".#.", "#.#", "###", "#.#", "#.#"),
    "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"),
    "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"),
    "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"),
    "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"),
    "J": ("..#", "..#", "..#", "#.#", ".#."),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"),
    "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"),
    "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": (".#.", "#.#", "#.#", "#.#", ".#."),
    "P": ("##.", "#.#", "##.", "#..", "#.."),
    "Q": ("###", "#.#", "#.#", "###", "..#"),
    "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": (".##", "#..", ".#.", "..#", "##."),
    "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"),
    "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "###", "###", "#.#"),
    "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."),
    "Z": ("###", "..#", ".#.", "#..", "###"),
}
GLYPH_H, GLYPH_W = 5, 3

Kind = Literal["shape", "position", "word"]
Split = Literal["train", "heldout", "all"]
KINDS: tuple[str, ...] = ("shape", "position", "word")


# --------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ShapeSpec:
    """One coloured shape on a plain background."""

    colour: str  # colour of the shape, a PALETTE name
    shape: str  # one of SHAPES
    background: str  # background colour, a PALETTE name different from `colour`
    kind: str = "shape"

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"

    def attribute_pairs(self) -> set[tuple]:
        return _pairs(self.kind, {"colour": self.colour, "shape": self.shape, "background": self.background})


@dataclass(frozen=True)
class PositionSpec:
    """Two shapes of different colours, the first one `relation` the second."""

    colour: str  # colour of the first shape
    shape: str  # first shape
    relation: str  # one of RELATIONS: where the first shape is, relative to the second
    colour2: str  # colour of the second shape, different from `colour`
    shape2: str  # second shape
    background: str  # background colour, different from both shape colours
    kind: str = "position"

    @property
    def caption(self) -> str:
        return (
            f"a {self.colour} {self.shape} {self.relation} a {self.colour2} {self.shape2} "
            f"on a {self.background} background"
        )

    def attribute_pairs(self) -> set[tuple]:
        return _pairs(
            self.kind,
            {
                "colour": self.colour,
                "shape": self.shape,
                "relation": self.relation,
                "colour2": self.colour2,
                "shape2": self.shape2,
                "background": self.background,
            },
        )


@dataclass(frozen=True)
class WordSpec:
    """A short upper-case word drawn in the 3x5 bitmap font."""

    word: str  # 2-3 letters A-Z
    colour: str  # letter colour
    background: str  # background colour, different from `colour`
    kind: str = "word"

    @property
    def caption(self) -> str:
        return f'the word "{self.word}" in {self.colour} letters on a {self.background} background'

    def attribute_pairs(self) -> set[tuple]:
        return _pairs(self.kind, {"word": self.word, "colour": self.colour, "background": self.background})


DemoSpec = ShapeSpec | PositionSpec | WordSpec


def _pairs(kind: str, attrs: dict[str, str]) -> set[tuple]:
    items = sorted(attrs.items())
    return {(kind, a, b) for i, a in enumerate(items) for b in items[i + 1 :]}


def validate_spec(spec: DemoSpec) -> DemoSpec:
    """Raise ValueError if `spec` names unknown attributes or cannot be drawn checkably."""
    colours = [spec.colour, spec.background] + ([spec.colour2] if isinstance(spec, PositionSpec) else [])
    for c in colours:
        if c not in PALETTE:
            raise ValueError(f"unknown colour {c!r}; known: {', '.join(COLOURS)}")
    if len(set(colours)) != len(colours):
        raise ValueError(f"colours must all differ in a demo prompt, got {colours}")
    if isinstance(spec, WordSpec):
        if not (2 <= len(spec.word) <= 3) or any(ch not in FONT for ch in spec.word):
            raise ValueError(f"a demo word has 2-3 letters A-Z, got {spec.word!r}")
    else:
        shapes = [spec.shape] + ([spec.shape2] if isinstance(spec, PositionSpec) else [])
        for s in shapes:
            if s not in SHAPES:
                raise ValueError(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
        if isinstance(spec, PositionSpec) and spec.relation not in RELATIONS:
            raise ValueError(f"unknown relation {spec.relation!r}; known: {', '.join(RELATIONS)}")
    return spec


# --------------------------------------------------------------------------------------------- prompt sets


def _every_spec(kind: str) -> list[DemoSpec]:
    if kind == "shape":
        return [ShapeSpec(c, s, bg) for bg in COLOURS for c in COLOURS for s in SHAPES if c != bg]
    if kind == "position":
        return [
            PositionSpec(c, s, rel, c2, s2, bg)
            for bg in COLOURS
            for c in COLOURS
            for c2 in COLOURS
            for s in SHAPES
            for s2 in SHAPES
            for rel in RELATIONS
            if len({c, c2, bg}) == 3
        ]
    if kind == "word":
        return [WordSpec(w, c, bg) for w in WORDS for bg in COLOURS for c in COLOURS if c != bg]
    raise ValueError(f"unknown prompt kind {kind!r}; known: {', '.join(KINDS)}")


def _choose_heldout(specs: list[DemoSpec], count: int, seed: int) -> set[DemoSpec]:
    """Greedily hold out `count` specs (in a seeded order) such that every attribute pair of every held-out
    spec keeps at least one training spec that has it."""
    train_count = Counter(p for s in specs for p in s.attribute_pairs())
    order = list(specs)
    random.Random(seed).shuffle(order)
    held: set[DemoSpec] = set()
    for spec in order:
        if len(held) == count:
            break
        pairs = spec.attribute_pairs()
        if all(train_count[p] >= 2 for p in pairs):
            held.add(spec)
            for p in pairs:
                train_count[p] -= 1
    if len(held) != count:
        raise RuntimeError(f"could only hold out {len(held)} of {count} combinations")
    return held


@cache
def _split_specs(kind: str) -> tuple[tuple[DemoSpec, ...], tuple[DemoSpec, ...]]:
    specs = _every_spec(kind)
    held = _choose_heldout(specs, HELDOUT_COUNT[kind], HELDOUT_SEED + KINDS.index(kind))
    return tuple(s for s in specs if s not in held), tuple(s for s in specs if s in held)


def all_specs(split: Split = "all", kinds: Iterable[str] = KINDS) -> list[DemoSpec]:
    """Every prompt combination of `kinds` in `split`, in a fixed order."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    out: list[DemoSpec] = []
    for kind in kinds:
        train, held = _split_specs(kind)
        out += list(train) if split == "train" else list(held) if split == "heldout" else list(train + held)
    return out


def all_prompts(split: Split = "all", kinds: Iterable[str] = KINDS) -> list[str]:
    """The captions of `all_specs(split, kinds)`."""
    return [s.caption for s in all_specs(split, kinds)]


# --------------------------------------------------------------------------------------------- parsing

_SHAPE_RE = re.compile(r"^an? (\w+) (\w+) on an? (\w+) background$")
_POSITION_RE = re.compile(r"^an? (\w+) (\w+) (above|below|left of|right of) an? (\w+) (\w+) on an? (\w+) background$")
_WORD_RE = re.compile(r'^the word ["“]([a-z]+)["”] in (\w+) letters on an? (\w+) background$', re.IGNORECASE)


def parse_prompt(text: str) -> DemoSpec:
    """Turn a demo caption back into its spec (case and surrounding space/full stop do not matter).

    Raises ValueError for text that is not a demo prompt, so a prompt from the database can be checked."""
    t = " ".join(text.strip().rstrip(".").split())
    low = t.lower()
    if m := _WORD_RE.match(t):
        spec: DemoSpec = WordSpec(m.group(1).upper(), m.group(2).lower(), m.group(3).lower())
    elif m := _POSITION_RE.match(low):
        spec = PositionSpec(m.group(1), m.group(2), m.group(3), m.group(4), m.group(5), m.group(6))
    elif m := _SHAPE_RE.match(low):
        spec = ShapeSpec(m.group(1), m.group(2), m.group(3))
    else:
        raise ValueError(f"not a demo prompt: {text!r}")
    return validate_spec(spec)


# --------------------------------------------------------------------------------------------- drawing


def shape_mask(shape: str, x0: float, y0: float, w: float, h: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of `shape` filling the box with top-left (x0, y0) and size w x h.

    A pixel is inside when its centre is; triangles point up. The checker uses the same function as
    its templates."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "square":
        return (xs >= x0) & (xs <= x0 + w) & (ys >= y0) & (ys <= y0 + h)
    if shape == "circle":
        return ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 <= 1.0
    if shape == "triangle":
        depth = (ys - y0) / h  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(xs - cx) <= (w / 2) * depth)
    raise ValueError(f"unknown shape {shape!r}")


def word_mask(word: str, x0: int, y0: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of `word` in the bitmap font, top-left corner at (x0, y0)."""
    mask = np.zeros((size, size), dtype=bool)
    for i, ch in enumerate(word):
        glyph = np.array([[c == "#" for c in row] for row in FONT[ch]], dtype=bool)
        block = np.kron(glyph, np.ones((GLYPH_SCALE, GLYPH_SCALE), dtype=bool))
        x = x0 + i * (GLYPH_W * GLYPH_SCALE + GLYPH_GAP)
        mask[y0 : y0 + block.shape[0], x : x + block.shape[1]] |= block
    return mask


def word_box(word: str) -> tuple[int, int]:
    """(width, height) in pixels of `word` as drawn."""
    n = len(word)
    return n * GLYPH_W * GLYPH_SCALE + (n - 1) * GLYPH_GAP, GLYPH_H * GLYPH_SCALE


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: str) -> None:
    canvas[mask] = PALETTE[colour]


def render(spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """Draw one image of `spec`; the layout (size, position) comes from `rng`. Returns (H, W, 3) uint8."""
    validate_spec(spec)
    n = IMAGE_SIZE
    img = np.empty((n, n, 3), dtype=np.uint8)
    img[:] = PALETTE[spec.background]
    if isinstance(spec, ShapeSpec):
        side = int(rng.integers(SHAPE_SIZE[0], SHAPE_SIZE[1] + 1))
        x0 = int(rng.integers(-SHAPE_JITTER, SHAPE_JITTER + 1)) + (n - side) // 2
        y0 = int(rng.integers(-SHAPE_JITTER, SHAPE_JITTER + 1)) + (n - side) // 2
        x0, y0 = int(np.clip(x0, 1, n - side - 1)), int(np.clip(y0, 1, n - side - 1))
        _paint(img, shape_mask(spec.shape, x0, y0, side, side), spec.colour)
    elif isinstance(spec, PositionSpec):
        (ax, ay, aside), (bx, by, bside) = _pair_layout(spec.relation, rng)
        _paint(img, shape_mask(spec.shape, ax, ay, aside, aside), spec.colour)
        _paint(img, shape_mask(spec.shape2, bx, by, bside, bside), spec.colour2)
    else:
        w, h = word_box(spec.word)
        x0 = int(rng.integers(1, n - w)) if n - w > 1 else 0
        y0 = int(rng.integers(2, n - h - 1))
        _paint(img, word_mask(spec.word, x0, y0), spec.colour)
    return img


def _pair_layout(relation: str, rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Boxes (x0, y0, side) of the first and the second object: the first in the half of the image that
    `relation` names, the second in the opposite half, offset along the other axis by at most 4 px."""
    n = IMAGE_SIZE
    sides = [int(rng.integers(PAIR_SIZE[0], PAIR_SIZE[1] + 1)) for _ in range(2)]
    along = [int(rng.integers(1, n // 2 - s)) for s in sides]  # position inside its half, main axis
    across = int(rng.integers(1, n - max(sides) - 1))  # shared position on the other axis
    jitter = [int(np.clip(across + rng.integers(-4, 5), 1, n - s - 1)) for s in sides]
    first_half = {"above": 0, "below": 1, "left of": 0, "right of": 1}[relation]
    boxes = []
    for i, side in enumerate(sides):
        half = first_half if i == 0 else 1 - first_half
        main = along[i] + half * (n // 2)
        boxes.append((jitter[i], main, side) if relation in ("above", "below") else (main, jitter[i], side))
    return boxes[0], boxes[1]


# --------------------------------------------------------------------------------------------- batches

DEFAULT_KIND_WEIGHTS: dict[str, float] = {"shape": 1.0, "position": 0.0, "word": 0.0}


def sample_specs(
    n: int, rng: np.random.Generator, split: Split = "train", kind_weights: dict[str, float] | None = None
) -> list[DemoSpec]:
    """`n` specs: a kind drawn by `kind_weights`, then a combination of that kind uniformly from `split`."""
    weights = dict(DEFAULT_KIND_WEIGHTS if kind_weights is None else kind_weights)
    kinds = [k for k in KINDS if weights.get(k, 0.0) > 0]
    unknown = set(weights) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kind weights need positive weights for some of {KINDS}, got {weights}")
    p = np.array([weights[k] for k in kinds], dtype=np.float64)
    pools = {k: all_specs(split, [k]) for k in kinds}
    chosen = rng.choice(len(kinds), size=n, p=p / p.sum())
    return [pools[kinds[c]][int(rng.integers(len(pools[kinds[c]])))] for c in chosen]


def sample_batch(
    n: int, rng: np.random.Generator, split: Split = "train", kind_weights: dict[str, float] | None = None
) -> tuple[np.ndarray, list[str], list[DemoSpec]]:
    """`n` fresh images with their captions and specs: ((n, H, W, 3) uint8, captions, specs)."""
    specs = sample_specs(n, rng, split, kind_weights)
    images = np.stack([render(s, rng) for s in specs]) if specs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3))
    return images.astype(np.uint8), [s.caption for s in specs], specs


# --------------------------------------------------------------------------------------------- platform rows

CATEGORY = {"shape": "Colours & Shapes", "position": "Positions", "word": "Writing & Symbols"}
CHALLENGE = {"shape": "Basic", "position": "Spatial", "word": "Writing"}
DEMO_ROWS_PER_KIND = {"shape": (8, 8), "position": (6, 6), "word": (6, 6)}  # (train, held-out) prompts


def demo_prompt_rows() -> list[dict]:
    """The demo prompt set the platform imports: a fixed selection of training and held-out prompts.

    Each row: text, category, challenge, note, needs_text, rendered_text. Held-out prompts say so in the
    note ("held-out combination: never seen in training")."""
    rows = []
    for kind in KINDS:
        n_train, n_held = DEMO_ROWS_PER_KIND[kind]
        train, held = _split_specs(kind)
        rng = random.Random(HELDOUT_SEED + 100 + KINDS.index(kind))
        picked = [(s, False) for s in rng.sample(list(train), n_train)]
        picked += [(s, True) for s in rng.sample(list(held), n_held)]
        for spec, heldout in picked:
            note = "held-out combination: never seen in training" if heldout else "training combination"
            word = spec.word if isinstance(spec, WordSpec) else ""
            rows.append(
                {
                    "text": spec.caption,
                    "category": CATEGORY[kind],
                    "challenge": CHALLENGE[kind],
                    "note": f"demo domain, {note}",
                    "needs_text": bool(word),
                    "rendered_text": word,
                }
            )
    return rows
