import numpy as np
import pytest

from generation import demo_domain
from generation.contract import TURNTABLE_VIEWS
from generation.demo_domain import PositionSpec, ShapeSpec, WordSpec, render
from generation.demo_judge import CannotJudge, cleanliness, judge_image, judge_picture, judge_turntable


def drawn(spec, seed=0):
    return render(spec, np.random.default_rng(seed))


def test_ground_truth_images_score_full_marks_on_every_question_they_ask():
    rng = np.random.default_rng(0)
    for kind in demo_domain.KINDS:
        images, captions, _ = demo_domain.sample_batch(30, rng, "all", {kind: 1.0})
        for image, caption in zip(images, captions, strict=True):
            scores = judge_image(image, caption)
            assert scores.prompt_following == 1.0 and scores.correct
            assert scores.aesthetics >= 0.99
            assert (scores.typography == 1.0) if kind == "word" else (scores.typography is None)


def test_a_wrong_object_colour_scores_lower_on_prompt_following_than_the_right_one():
    right = judge_image(drawn(ShapeSpec("red", "circle", "blue")), "a red circle on a blue background")
    wrong = judge_image(drawn(ShapeSpec("green", "circle", "blue")), "a red circle on a blue background")
    assert wrong.prompt_following < right.prompt_following
    assert not wrong.correct


def test_swapped_positions_lose_only_the_relation():
    prompt = "a red circle above a green square on a white background"
    swapped = judge_image(drawn(PositionSpec("red", "circle", "below", "green", "square", "white")), prompt)
    assert swapped.prompt_following == pytest.approx(3 / 4)  # background, colours and shapes right


def test_typography_gives_credit_per_letter_read_right():
    prompt = 'the word "CAT" in red letters on a white background'
    one_wrong = judge_image(drawn(WordSpec("CAR", "red", "white")), prompt)
    assert one_wrong.typography == pytest.approx(2 / 3)
    assert judge_image(drawn(WordSpec("CAT", "red", "white")), prompt).typography == 1.0


def test_noise_lowers_aesthetics_and_leaves_prompt_following_alone():
    spec = ShapeSpec("yellow", "square", "black")
    clean = drawn(spec)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
    assert cleanliness(noisy) < 0.8 < 0.99 <= cleanliness(clean)
    assert judge_image(noisy, spec).prompt_following == judge_image(clean, spec).prompt_following


def test_a_prompt_outside_the_demo_domain_is_refused_not_guessed():
    with pytest.raises(CannotJudge, match="not a prompt of the demo domain"):
        judge_image(drawn(ShapeSpec("red", "circle", "blue")), "an astronaut riding a horse")


def test_a_question_that_does_not_exist_is_an_error():
    scores = judge_image(drawn(ShapeSpec("red", "circle", "blue")), "a red circle on a blue background")
    with pytest.raises(ValueError, match="unknown question"):
        scores.get("realism")


# ---------------------------------------------------------------------------------------------- turntables


def strip(views):
    """Square views side by side, as a text-to-3D model's turntable."""
    return np.concatenate([np.asarray(v) for v in views], axis=1)


RED_CIRCLE = "a red circle on a blue background"


def test_a_turntable_that_shows_the_prompt_from_every_side_scores_full_marks_and_full_consistency():
    view = drawn(ShapeSpec("red", "circle", "blue"))
    scores = judge_picture(strip([view] * TURNTABLE_VIEWS), RED_CIRCLE)
    assert scores.prompt_following == 1.0 and scores.correct
    assert scores.multiview_consistency == 1.0 and scores.typography is None
    assert scores.aesthetics >= 0.99


def test_a_turntable_whose_object_changes_colour_and_shape_as_it_turns_loses_consistency_and_prompt_following():
    red = drawn(ShapeSpec("red", "circle", "blue"))
    green = drawn(ShapeSpec("green", "square", "blue"), seed=1)
    changing = judge_picture(strip([red, green] * (TURNTABLE_VIEWS // 2)), RED_CIRCLE)
    steady = judge_picture(strip([red] * TURNTABLE_VIEWS), RED_CIRCLE)
    assert changing.multiview_consistency < 0.5 * steady.multiview_consistency
    assert changing.prompt_following == pytest.approx(2 / 3)  # half the views: background right, colour and shape not
    assert not changing.correct


def test_a_turntable_of_the_wrong_shape_loses_prompt_following_as_a_picture_does():
    """The views are asked the prompt's shape: an object of the right colour but the wrong shape (the shapeless
    blob of a weak prior) loses to one whose side views read as the prompt's shape."""
    square = drawn(ShapeSpec("red", "square", "blue"))
    wrong_shape = judge_picture(strip([square] * TURNTABLE_VIEWS), RED_CIRCLE)
    assert wrong_shape.prompt_following == pytest.approx(judge_image(square, RED_CIRCLE).prompt_following)
    assert wrong_shape.prompt_following == pytest.approx(2 / 3) and not wrong_shape.correct


def test_a_square_picture_is_judged_as_an_image_and_a_strip_of_another_length_is_refused():
    view = drawn(ShapeSpec("red", "circle", "blue"))
    assert judge_picture(view, RED_CIRCLE).multiview_consistency is None
    with pytest.raises(ValueError, match="times as wide"):
        judge_turntable(strip([view] * 3), RED_CIRCLE)
