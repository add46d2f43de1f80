"""The OCR typography metric: Tesseract reads text rendered with a real font; CER and exact-word match."""

import numpy as np
import pytest

from analysis import typography as t
from generation import demo_domain
from generation.checker import check_image
from tests.support import DEJAVU_SANS, ocr_missing_reason, render_text

needs_ocr = pytest.mark.skipif(bool(ocr_missing_reason()), reason=ocr_missing_reason() or "OCR available")


# --------------------------------------------------------------------------------------------- comparing


def test_character_error_rate_is_edit_distance_over_the_requested_length():
    assert t.character_error_rate("OPEN", "OPEN") == 0.0
    assert t.character_error_rate("0PEN", "OPEN") == 0.25  # one substitution
    assert t.character_error_rate("HELLO", "HELP") == 0.5  # one substitution, one insertion
    assert t.character_error_rate("", "CAT") == 1.0
    assert t.character_error_rate("XXXXXXXX", "AB") == 4.0  # not clipped per reading
    assert t.character_error_rate("  hello\n  world ", "HELLO WORLD") == 0.0  # case and white space ignored


def test_exact_word_match_needs_every_requested_word_as_a_whole_word():
    assert t.exact_word_match("Grand OPENING!", "grand opening")
    assert t.exact_word_match("sale: OPEN 24/7", "open")
    assert not t.exact_word_match("OPENING", "OPEN")  # part of a word does not count
    assert not t.exact_word_match("OPEN", "OPEN NOW")
    with pytest.raises(ValueError, match="no words"):
        t.exact_word_match("x", "!!")


def test_the_mean_error_rate_clips_each_image_at_one():
    scores = t.TypographyScores(readings=["", "CAT", "XXXXXXXXX"], cer=[1.0, 0.0, 3.0], exact=[False, True, False])
    assert scores.mean_cer == pytest.approx(2 / 3)
    assert scores.exact_rate == pytest.approx(1 / 3)


def test_a_missing_engine_says_how_to_install_it():
    with pytest.raises(t.TesseractMissing, match="apt-get install tesseract-ocr"):
        t.read_text(np.zeros((8, 8, 3), dtype=np.uint8), binary="/nonexistent/tesseract")
    assert not t.tesseract_available("/nonexistent/tesseract")


def test_a_missing_language_model_says_so_too():
    if not t.tesseract_available():
        pytest.skip(ocr_missing_reason())
    with pytest.raises(t.TesseractMissing, match="no 'xyz' language model"):
        t.read_text(render_text("OPEN", 24), lang="xyz")


# --------------------------------------------------------------------------------------------- reading


@needs_ocr
@pytest.mark.parametrize("size", [12, 20, 36])
@pytest.mark.parametrize("text", ["OPEN", "Hello World", "CAFE 24"])
def test_tesseract_reads_text_rendered_in_dejavu_sans_exactly(text, size):
    reading = t.read_text(render_text(text, size))
    assert reading == text
    assert t.character_error_rate(reading, text) == 0.0
    assert t.exact_word_match(reading, text)


@needs_ocr
def test_a_misspelled_image_gets_the_error_rate_of_its_spelling():
    reading = t.read_text(render_text("HELLO", 24))
    assert reading == "HELLO"
    assert t.character_error_rate(reading, "HELP") == 0.5
    assert not t.exact_word_match(reading, "HELP")


@needs_ocr
def test_coloured_text_and_an_empty_image_are_scored():
    scores = t.typography_scores(
        [render_text("SALE", 28, colour=(200, 30, 30), background=(250, 240, 200)), render_text("", 28)],
        ["SALE", "SALE"],
    )
    assert scores.readings == ["SALE", ""]
    assert scores.cer == [0.0, 1.0]
    assert scores.exact == [True, False]


@needs_ocr
def test_demo_words_are_mostly_read_and_where_ocr_is_right_the_checker_is_too():
    """32 px demo drawings in the 3x5 bitmap font, read with `flat`: a measured floor, not a perfect score
    (bench/ocr_typography.py prints the full table)."""
    rng = np.random.default_rng(0)
    specs = demo_domain.all_specs("all", ["word"])
    chosen = [specs[i] for i in rng.choice(len(specs), size=24, replace=False)]
    images = [demo_domain.render(s, rng) for s in chosen]
    scores = t.typography_scores(images, [s.word for s in chosen], flat=True)
    assert scores.exact_rate >= 0.5
    assert scores.mean_cer <= 0.3
    for image, spec, exact in zip(images, chosen, scores.exact, strict=True):
        if exact:
            assert check_image(image, spec).checks["word"]


@needs_ocr
def test_text_in_a_scene_is_read_from_the_colour_image():
    """Dark text over a grey gradient with a light ellipse below: Tesseract thresholds the colour image
    itself; the same image converted to greyscale by PIL first reads ") »"."""
    from PIL import Image, ImageDraw, ImageFont

    gradient = np.linspace(180, 250, 256)[None, :, None] * np.ones((256, 1, 3))
    image = Image.fromarray(gradient.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([80, 168, 242, 250], fill=(130, 160, 250))
    bold = str(DEJAVU_SANS).replace("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
    draw.text((28, 60), "SALE", font=ImageFont.truetype(bold, 26), fill=(20, 20, 60))
    assert t.read_text(image) == "SALE"
