import numpy as np
import pytest

from evalsite.crowd.behaviour import RaterProfile, assign_kinds, decide, draw_profile, parse_mix, think_time
from evalsite.crowd.crowd import crowd_mix
from generation.demo_judge import ImageScores


def scores(following, aesthetics=0.95, typography=None):
    return ImageScores(prompt_following=following, aesthetics=aesthetics, typography=typography, correct=following == 1)


def test_a_careful_rater_picks_the_image_that_follows_the_prompt_nearly_always():
    rng = np.random.default_rng(0)
    careful = draw_profile("careful", rng)
    answers = [decide(careful, scores(1.0), scores(0.5), "prompt_following", rng) for _ in range(500)]
    assert answers.count("left") / len(answers) > 0.9
    assert "right" in answers or "tie" in answers  # people are not perfect


def test_two_equally_good_images_split_about_evenly_with_some_ties():
    rng = np.random.default_rng(1)
    careful = RaterProfile("careful", sharpness=10, position_bias=0.0, tie_rate=0.15, think_seconds=3)
    answers = [decide(careful, scores(1.0), scores(1.0), "prompt_following", rng) for _ in range(2000)]
    assert abs(answers.count("left") - answers.count("right")) < 200
    assert 0.1 < answers.count("tie") / len(answers) < 0.2


def test_a_tie_between_two_failures_is_called_both_bad():
    rng = np.random.default_rng(2)
    careful = RaterProfile("careful", sharpness=10, position_bias=0.0, tie_rate=0.5, think_seconds=3)
    answers = {decide(careful, scores(0.25), scores(0.25), "prompt_following", rng) for _ in range(200)}
    assert "both_bad" in answers and "tie" not in answers


def test_bad_raters_ignore_the_pictures():
    rng = np.random.default_rng(3)
    left = draw_profile("always_left", rng)
    assert {decide(left, scores(0.0), scores(1.0), "aesthetics", rng) for _ in range(50)} == {"left"}
    clicker = draw_profile("random", rng)
    answers = [decide(clicker, scores(0.0), scores(1.0), "prompt_following", rng) for _ in range(400)]
    assert 0.35 < answers.count("left") / 400 < 0.55


def test_a_question_the_prompt_does_not_ask_is_an_error():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="does not apply"):
        decide(draw_profile("careful", rng), scores(1.0), scores(1.0), "typography", rng)


def test_fast_raters_think_well_under_the_speed_limit_and_careful_ones_well_over():
    rng = np.random.default_rng(5)
    fast = [think_time(draw_profile("fast", rng), rng) for _ in range(200)]
    careful = [think_time(draw_profile("careful", rng), rng) for _ in range(200)]
    assert np.median(fast) < 1.0 < 2.0 < np.percentile(careful, 10)


def test_kinds_follow_the_mix_exactly_by_largest_remainder():
    kinds = assign_kinds(50, {"careful": 0.56, "casual": 0.24, "random": 0.2 / 3, "always_left": 0.2 / 3,
                              "fast": 0.2 / 3})  # fmt: skip
    assert len(kinds) == 50 and kinds.count("careful") == 28 and kinds.count("casual") == 12
    assert sum(kinds.count(k) for k in ("random", "always_left", "fast")) == 10


@pytest.mark.parametrize("text", ["careful", "careful=x", "sleepy=1", "careful=-1", "careful=0"])
def test_a_malformed_mix_is_refused_with_its_reason(text):
    with pytest.raises(ValueError):
        parse_mix(text)


def test_bad_share_splits_evenly_over_the_bad_kinds_and_keeps_the_honest_proportions():
    mix = crowd_mix(None, 0.3)
    assert mix["random"] == mix["always_left"] == mix["fast"] == pytest.approx(0.1)
    assert mix["careful"] / mix["casual"] == pytest.approx(0.7 / 0.3)


def test_a_careful_rater_picks_the_turntable_that_stays_consistent_as_it_turns():
    rng = np.random.default_rng(0)
    careful = draw_profile("careful", rng)
    steady = ImageScores(
        prompt_following=1.0, aesthetics=0.95, typography=None, correct=True, multiview_consistency=0.9
    )
    changing = ImageScores(
        prompt_following=1.0, aesthetics=0.95, typography=None, correct=True, multiview_consistency=0.4
    )
    answers = [decide(careful, changing, steady, "multiview_consistency", rng) for _ in range(500)]
    assert answers.count("right") / len(answers) > 0.9
