"""The pixel checker reads background, colour, shape, position and letters back from drawings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from generation import demo_domain as dd
from generation.checker import check_image, score_images

ALL_KINDS = {"shape": 1, "position": 1, "word": 1}


def test_checker_is_right_on_at_least_98_percent_of_ground_truth_images_of_every_kind():
    images, captions, _ = dd.sample_batch(600, np.random.default_rng(1234), "all", ALL_KINDS)
    scores = score_images(images, captions)
    assert set(scores) == {"shape", "position", "word"}
    for kind, per in scores.items():
        assert per["all"] >= 0.98, (kind, per)


def test_checker_survives_mild_blur_and_noise():
    rng = np.random.default_rng(5)
    images, captions, _ = dd.sample_batch(300, rng, "all", ALL_KINDS)
    blurred = np.stack([ndimage.gaussian_filter(x.astype(np.float32), sigma=(0.6, 0.6, 0)) for x in images])
    noisy = np.clip(blurred + rng.normal(0, 20, blurred.shape), 0, 255).astype(np.uint8)
    for per in score_images(noisy, captions).values():
        assert per["all"] >= 0.98, per


def test_checker_catches_wrong_attributes():
    rng = np.random.default_rng(0)
    img = dd.render(dd.ShapeSpec("red", "circle", "blue"), rng)
    assert check_image(img, "a red circle on a blue background").correct
    wrong_shape = check_image(img, "a red square on a blue background")
    assert wrong_shape.checks == {"background": True, "colour": True, "shape": False}
    assert wrong_shape.found["shape"] == "circle"
    assert check_image(img, "a green circle on a blue background").checks["colour"] is False
    assert check_image(img, "a red circle on a white background").checks["background"] is False

    pair = dd.render(dd.PositionSpec("red", "circle", "above", "green", "square", "white"), rng)
    assert check_image(pair, "a red circle above a green square on a white background").correct
    assert check_image(pair, "a green square above a red circle on a white background").checks["relation"] is False
    assert check_image(pair, "a red circle left of a green square on a white background").checks["relation"] is False

    word = dd.render(dd.WordSpec("CAT", "black", "yellow"), rng)
    assert check_image(word, 'the word "CAT" in black letters on a yellow background').correct
    other = check_image(word, 'the word "HAT" in black letters on a yellow background')
    assert other.checks["word"] is False and other.found["word"] == "CAT" and other.found["letters_right"] == 2


def test_a_blank_image_fails_everything_but_the_background():
    blank = np.zeros((32, 32, 3), np.uint8) + np.array(dd.PALETTE["white"], np.uint8)
    r = check_image(Image.fromarray(blank), "a red circle on a white background")
    assert r.checks == {"background": True, "colour": False, "shape": False}


def test_checker_refuses_non_demo_prompts_and_mismatched_lengths():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="not a demo prompt"):
        check_image(img, "an astronaut riding a horse")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        score_images([img, img], ["a red circle on a white background"])
