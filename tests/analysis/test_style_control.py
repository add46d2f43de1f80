"""Style control: the Bradley-Terry fit with per-image covariates, and the pixel covariates themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.image_style import image_covariates, looks_like_text
from analysis.leaderboard import fit_bradley_terry
from analysis.simulate import simulate_style_votes
from analysis.style_control import fit_style_control

EQUAL = {"alpha": 0.0, "bright": 0.0, "gamma": 0.0}


@pytest.fixture(scope="module")
def bright_wins():
    """'bright' is as good as the others but its images are 1 SD brighter, and raters like brightness."""
    return simulate_style_votes(EQUAL, {"bright": 1.0}, 0.6, 6000, covariate="brightness", rng=0)


def test_a_model_that_wins_only_through_a_covariate_leads_without_control_and_not_with_it(bright_wins):
    votes, covariates = bright_wins
    result = fit_style_control(votes, covariates)
    table = result.leaderboard
    others = table.drop("bright")
    # without control: bright is clearly ahead, its interval entirely above every other model's
    assert table.loc["bright", "plain_lower"] > others["plain_upper"].max()
    assert table.loc["bright", "plain_rank"] == 1 and (others["plain_rank"] > 1).all()
    # with control: the advantage vanishes; every interval overlaps bright's, all share rank 1
    assert abs(table.loc["bright", "score"] - others["score"].mean()) < 15
    assert table.loc["bright", "lower"] < others["upper"].min()
    assert (table["rank"] == 1).all()
    # the covariate carries the effect, and its interval covers the truth (effect x pooled SD)
    effect = result.effects.loc["brightness"]
    truth = 0.6 * covariates["brightness"].std(ddof=0)
    assert effect["lower"] < truth < effect["upper"] and effect["lower"] > 0


def test_without_any_covariate_effect_the_two_leaderboards_agree_and_the_effect_interval_covers_zero():
    votes, covariates = simulate_style_votes(
        {"a": 0.5, "b": 0.0, "c": -0.5}, {"a": 1.0}, 0.0, 4000, covariate="brightness", rng=1
    )
    result = fit_style_control(votes, covariates)
    assert (result.leaderboard["shift"].abs() < 10).all()
    effect = result.effects.loc["brightness"]
    assert effect["lower"] < 0 < effect["upper"]


def test_the_plain_leaderboard_is_fit_bradley_terry_with_sandwich_intervals(bright_wins):
    votes, covariates = bright_wins
    plain = fit_bradley_terry(votes, intervals="sandwich")
    result = fit_style_control(votes, covariates).leaderboard.loc[plain.index]
    np.testing.assert_allclose(result["plain_score"], plain["score"], atol=1e-6)
    np.testing.assert_allclose(result["plain_lower"], plain["lower"], atol=1e-6)


def test_constant_and_model_confounded_covariates_are_left_out_with_a_reason(bright_wins):
    votes, covariates = bright_wins
    model_of = pd.Series(covariates.index.str.split("/").str[0], index=covariates.index)
    covariates = covariates.assign(
        pixels=1024.0, generation_seconds=model_of.map({"alpha": 1.0, "bright": 2.0, "gamma": 3.0})
    )
    result = fit_style_control(votes, covariates)
    assert result.left_out["pixels"] == "the same for every image"
    assert result.left_out["generation_seconds"].startswith("explained by the model itself")
    assert result.left_out["sharpness"] == "not measured"
    assert list(result.effects.index) == ["brightness"]


def test_a_covariate_equal_within_every_pair_is_left_out_not_given_an_empty_interval(bright_wins):
    # Text in both images of the word prompts and in neither elsewhere: it varies, but no vote sees it differ.
    votes, covariates = bright_wins
    text = pd.Series(covariates.index.str.endswith(("0", "2", "4", "6", "8")).astype(float), index=covariates.index)
    votes = votes[votes["image_left"].map(text) == votes["image_right"].map(text)]
    covariates = covariates.assign(text_present=text)
    result = fit_style_control(votes, covariates)
    assert result.left_out["text_present"] == "the same for both images of every pair"
    assert list(result.effects.index) == ["brightness"]


def test_missing_covariate_values_get_the_mean_and_are_counted(bright_wins):
    votes, covariates = bright_wins
    covariates = covariates.copy()
    covariates.iloc[:5, 0] = np.nan
    result = fit_style_control(votes, covariates)
    assert result.effects.loc["brightness", "missing"] == 5


def test_votes_whose_images_have_no_covariates_are_refused(bright_wins):
    votes, covariates = bright_wins
    with pytest.raises(ValueError, match="no covariates row"):
        fit_style_control(votes, covariates.iloc[10:])


def test_pixel_covariates_of_known_images():
    grey = np.full((16, 16, 3), 128, dtype=np.uint8)
    values = image_covariates(grey)
    assert values["brightness"] == pytest.approx(128 / 255)
    assert values["saturation"] == 0 and values["colourfulness"] == 0 and values["sharpness"] == 0
    assert values["pixels"] == 256 and values["text_present"] == 0
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert image_covariates(red)["saturation"] == 1.0
    assert image_covariates(red)["colourfulness"] > image_covariates(grey)["colourfulness"]
    checker = np.kron((np.indices((8, 8)).sum(axis=0) % 2) * 255, np.ones((2, 2)))[..., None].repeat(3, axis=2)
    blurred = np.full_like(checker, 128)
    assert (
        image_covariates(checker.astype(np.uint8))["sharpness"]
        > image_covariates(blurred.astype(np.uint8))["sharpness"]
    )


def test_text_heuristic_finds_rendered_words_and_not_shapes():
    from generation import demo_domain

    rng = np.random.default_rng(0)
    words = [s for s in demo_domain.all_specs(kinds=["word"])][:20]
    shapes = [s for s in demo_domain.all_specs(kinds=["shape"])][:20]
    found_words = [looks_like_text(demo_domain.render(s, rng)) for s in words]
    found_shapes = [looks_like_text(demo_domain.render(s, rng)) for s in shapes]
    assert np.mean(found_words) >= 0.8 and np.mean(found_shapes) <= 0.1
