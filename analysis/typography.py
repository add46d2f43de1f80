"""A typography metric that reads: OCR of each image compared with the text its prompt asks for.

The OCR engine is Tesseract (Debian's `tesseract-ocr` + `tesseract-ocr-eng`), called as a program: no Python
binding, no model download, the English model ships in the package. Numbers in, numbers out; no Django.

    reading = read_text(image)                                # what Tesseract reads, e.g. "OPEN"
    character_error_rate(reading, "OPEN")                     # 0.0 (edit distance / requested length)
    exact_word_match(reading, "OPEN")                         # True: every requested word was read
    scores = typography_scores(images, ["OPEN", "CAT", ...])  # per image and their means

What counts (case and punctuation are ignored, as a rater judging spelling would):
- character error rate (CER): Levenshtein distance between the reading and the requested text, both
  upper-cased with runs of white space made one space, divided by the requested text's length. 0 is perfect;
  it exceeds 1 when OCR reads more wrong characters than were asked for, so the per-model mean clips each
  image at 1 (an image with nothing right counts 1, however much garbage it shows).
- exact-word match: every requested word appears, as a whole word, among the words read (letters and digits
  only). The per-model value is the share of images that pass.

Small images (the demo domain's are 32 px) are upscaled with nearest-neighbour sampling to at least
`min_height` pixels, blurred a little and given a margin before OCR (`prepare`); Tesseract reads text whose
capitals are 20-40 px high best. `flat=True` separates ink from background by colour distance, for images of
flat colour areas such as the demo domain's.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

INSTALL_HINT = "install it with `apt-get install tesseract-ocr tesseract-ocr-eng` (Debian/Ubuntu)"
DEFAULT_PSM = 7  # Tesseract page segmentation mode: 7 = the image is one line of text (a requested caption)
DEFAULT_MIN_HEIGHT = 128  # upscale images shorter than this (pixels) by a whole factor before OCR
FLAT_DISTANCE = 60.0  # RGB units: with `flat`, a pixel this far from the background colour is ink
MARGIN = 16  # pixels of background added around the (upscaled) image; Tesseract misses text at the edge


class TesseractMissing(RuntimeError):
    """The tesseract program (or its language model) is not installed."""


def tesseract_binary(binary: str | None = None) -> str:
    """Path of the tesseract program: `binary`, else $TESSERACT, else `tesseract` on PATH."""
    name = binary or os.environ.get("TESSERACT") or "tesseract"
    found = shutil.which(name)
    if found is None:
        raise TesseractMissing(f"the OCR engine `{name}` was not found: {INSTALL_HINT}")
    return found


def tesseract_version(binary: str | None = None) -> str:
    """First line of `tesseract --version`, e.g. "tesseract 5.3.0"."""
    out = subprocess.run([tesseract_binary(binary), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def tesseract_available(binary: str | None = None, lang: str = "eng") -> bool:
    """Whether tesseract is installed with the language model `lang`."""
    try:
        out = subprocess.run(
            [tesseract_binary(binary), "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        )
    except (TesseractMissing, OSError, subprocess.TimeoutExpired):
        return False
    return lang in (out.stdout + out.stderr).split()


# --------------------------------------------------------------------------------------------- reading


def prepare(image: Image.Image | np.ndarray, min_height: int = DEFAULT_MIN_HEIGHT, flat: bool = False) -> Image.Image:
    """The image as Tesseract should see it: in colour (or, when `flat`, black where a pixel's colour is far
    from the background's and white elsewhere), upscaled by a whole factor with nearest-neighbour sampling
    until at least `min_height` pixels high and then blurred by half the factor (which rounds the blocks of
    pixel art into strokes Tesseract's recogniser knows), with a MARGIN of the border's median colour around.

    Colour, not greyscale: Tesseract converts and thresholds colour images itself, and does it better (dark
    text over a grey gradient with a light ellipse reads "SALE" in colour, ") »" after PIL's greyscale).
    `flat` is for images of flat colour areas such as the demo domain's: there a colour's luminance may be
    close to the background's (yellow on white), its distance in RGB never is."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    prepared = image.convert("RGB")
    if flat:
        rgb = np.asarray(prepared).astype(np.float32)  # (H, W, 3)
        distance = np.sqrt(((rgb - _border_colour(rgb)) ** 2).sum(-1))  # (H, W) from the background
        prepared = Image.fromarray(np.where(distance > FLAT_DISTANCE, 0, 255).astype(np.uint8)).convert("RGB")
    factor = max(1, -(-min_height // max(prepared.height, 1)))  # ceil
    if factor > 1:
        prepared = prepared.resize((prepared.width * factor, prepared.height * factor), Image.Resampling.NEAREST)
        prepared = prepared.filter(ImageFilter.GaussianBlur(factor / 2))
    fill = tuple(int(round(v)) for v in _border_colour(np.asarray(prepared).astype(np.float32)))
    return ImageOps.expand(prepared, border=MARGIN, fill=fill)


def _border_colour(rgb: np.ndarray) -> np.ndarray:
    """(3,) median colour of the one-pixel border of an (H, W, 3) image: the background, robust to noise."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (P, 3)
    return np.median(border, axis=0)


def read_text(
    image: Image.Image | np.ndarray,
    *,
    psm: int = DEFAULT_PSM,
    lang: str = "eng",
    min_height: int = DEFAULT_MIN_HEIGHT,
    flat: bool = False,
    binary: str | None = None,
    timeout: float = 60.0,
) -> str:
    """What Tesseract reads in `image` (PIL image or (H, W, 3) / (H, W) uint8 array), stripped.

    Raises TesseractMissing when the program or the language model is not installed, RuntimeError when it
    fails on the image."""
    command = [tesseract_binary(binary), "stdin", "stdout", "--psm", str(psm), "-l", lang]
    prepared = prepare(image, min_height, flat)
    if np.ptp(np.asarray(prepared)) == 0:
        return ""  # one flat colour: nothing to read (Tesseract may answer "_" on a blank page)
    buffer = io.BytesIO()
    prepared.save(buffer, format="PNG")
    # One thread: Tesseract's OpenMP threads only fight each other on a busy machine, and callers run images
    # one after another anyway.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run(command, input=buffer.getvalue(), capture_output=True, timeout=timeout, env=env)
    if out.returncode != 0:
        message = out.stderr.decode(errors="replace").strip()
        if "Failed loading language" in message or "Error opening data file" in message:
            raise TesseractMissing(f"tesseract has no {lang!r} language model: {INSTALL_HINT}. ({message})")
        raise RuntimeError(f"tesseract failed (exit {out.returncode}): {message}")
    return out.stdout.decode(errors="replace").strip()


# --------------------------------------------------------------------------------------------- comparing


def normalise(text: str) -> str:
    """Upper case, runs of white space as one space, trimmed."""
    return " ".join(text.upper().split())


def words(text: str) -> list[str]:
    """The words of `text`: runs of letters and digits, upper-cased (punctuation dropped)."""
    return re.findall(r"[^\W_]+", text.upper())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each costing 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(reading: str, expected: str) -> float:
    """Edit distance between the normalised reading and requested text over the requested text's length."""
    target = normalise(expected)
    if not target:
        raise ValueError("the requested text is empty")
    return levenshtein(normalise(reading), target) / len(target)


def exact_word_match(reading: str, expected: str) -> bool:
    """Every requested word is among the words read (whole words, case and punctuation ignored)."""
    wanted = words(expected)
    if not wanted:
        raise ValueError(f"the requested text {expected!r} has no words")
    seen = set(words(reading))
    return all(w in seen for w in wanted)


@dataclass(frozen=True)
class TypographyScores:
    """OCR typography scores of a set of images (one model's, say)."""

    readings: list[str]  # what OCR read in each image
    cer: list[float]  # character error rate of each image (not clipped)
    exact: list[bool]  # exact-word match of each image

    @property
    def n(self) -> int:
        return len(self.readings)

    @property
    def mean_cer(self) -> float:
        """Mean character error rate, each image clipped at 1."""
        return float(np.mean(np.minimum(self.cer, 1.0))) if self.cer else float("nan")

    @property
    def exact_rate(self) -> float:
        """Share of images whose every requested word was read."""
        return float(np.mean(self.exact)) if self.exact else float("nan")


def typography_scores(images: Sequence, texts: Sequence[str], **read_options) -> TypographyScores:
    """Read every image and compare it with its requested text (`read_options` go to `read_text`)."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} requested texts")
    readings = [read_text(image, **read_options) for image in images]
    return TypographyScores(
        readings=readings,
        cer=[character_error_rate(r, t) for r, t in zip(readings, texts, strict=True)],
        exact=[exact_word_match(r, t) for r, t in zip(readings, texts, strict=True)],
    )
