"""Rater quality: gold accuracy, speed, position bias, agreement (against textbook values) and flagging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.leaderboard import fit_bradley_terry
from analysis.rater_quality import (
    agreement_with_others,
    flagged_raters,
    fleiss_kappa,
    gold_accuracy,
    krippendorff_alpha_from_counts,
    krippendorff_alpha_nominal,
    position_bias,
    rater_agreement,
    rater_report,
    rater_speed,
)
from analysis.simulate import SimulatedRater, simulate_rater_votes

STRENGTHS = {"m0": 1.0, "m1": 0.5, "m2": 0.0, "m3": -0.5, "m4": -1.0}


def test_krippendorff_alpha_matches_the_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example:
    # 4 observers x 12 units with missing values; alpha = 0.743
    A = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    B = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    C = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    D = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    assert krippendorff_alpha_nominal(zip(A, B, C, D, strict=True)) == pytest.approx(0.743, abs=5e-4)


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) style worked example (10 subjects, 14 raters, 5 categories): kappa = 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[1, 1], [2, 1]])


def test_alpha_is_one_for_perfect_agreement_and_near_zero_for_chance():
    assert krippendorff_alpha_from_counts([[3, 0, 0], [0, 3, 0], [0, 0, 2]]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    random_ratings = rng.integers(0, 3, size=(3000, 3))
    assert abs(krippendorff_alpha_nominal(random_ratings.tolist())) < 0.03
    # with equal numbers of ratings per unit, alpha and kappa nearly coincide (alpha corrects for sample size)
    table = np.stack([(random_ratings == c).sum(axis=1) for c in range(3)], axis=1)
    assert krippendorff_alpha_from_counts(table) == pytest.approx(fleiss_kappa(table), abs=1e-3)


def test_rater_agreement_ignores_left_right_orientation():
    votes = pd.DataFrame(
        {
            "item": ["p1", "p1", "p1", "p2", "p2", "p3"],
            "model_a": ["x", "y", "x", "x", "x", "x"],
            "model_b": ["y", "x", "y", "z", "z", "z"],
            "winner": ["model_a", "model_b", "model_a", "tie", "both_bad", "model_b"],
        }
    )
    result = rater_agreement(votes)
    # p1: all three say x; p2: tie + both bad = two ties; p3 is rated once and not pairable
    assert result["n_items"] == 2 and result["n_ratings"] == 5
    assert result["percent_agreement"] == pytest.approx(1.0)
    assert result["krippendorff_alpha"] == pytest.approx(1.0)
    assert np.isnan(result["fleiss_kappa"])  # 3 and 2 ratings per item
    strict = rater_agreement(votes, both_bad_is_tie=False)
    assert strict["percent_agreement"] == pytest.approx(3 / 4)  # p1: 3 agreeing pairs, p2: 1 disagreeing pair
    with pytest.raises(ValueError, match="same two models"):
        rater_agreement(votes.assign(model_b=["y", "x", "z", "z", "z", "z"]))
    with pytest.raises(ValueError, match="rated twice"):
        rater_agreement(votes.iloc[[0, 3, 5]])


def raters_with_one_of_each_problem():
    careful = [SimulatedRater(f"careful{i}") for i in range(6)]
    return careful + [
        SimulatedRater("lefty", left_bias=0.4),
        SimulatedRater("hasty", median_seconds=1.0),
        SimulatedRater("guesser", noise=1.0),
    ]


@pytest.fixture(scope="module")
def rated_votes():
    return simulate_rater_votes(
        STRENGTHS, raters_with_one_of_each_problem(), 900, raters_per_item=3, rng=5, gold_share=0.2
    )


def test_position_bias_detects_the_biased_rater(rated_votes):
    table = position_bias(rated_votes)
    assert table.loc["lefty", "p_value"] < 1e-6
    assert table.loc["lefty", "lower"] > 0.6
    careful = table.drop(["lefty"])
    assert (careful["p_value"] > 1e-3).all()
    pooled = position_bias(rated_votes, by=None)
    assert pooled.index.tolist() == ["all"] and pooled.loc["all", "n_decisive"] == table["n_decisive"].sum()


def test_position_bias_counts_by_hand():
    votes = pd.DataFrame(
        {
            "model_a": ["x"] * 5,
            "model_b": ["y"] * 5,
            "left_model": ["x", "y", "x", "y", "x"],
            "winner": ["model_a", "model_b", "model_b", "tie", "model_a"],
            "rater": "r",
        }
    )
    row = position_bias(votes).loc["r"]
    assert row["n_decisive"] == 4 and row["left_share"] == pytest.approx(3 / 4)
    assert row["p_value"] == pytest.approx(0.625)  # two-sided exact binomial test, 3 of 4
    with pytest.raises(ValueError, match="left_model"):
        position_bias(votes.drop(columns="left_model"))
    with pytest.raises(ValueError, match="model_a or model_b"):
        position_bias(votes.assign(left_model="z"))


def test_gold_accuracy_and_speed_per_rater(rated_votes):
    gold = gold_accuracy(rated_votes)
    assert gold.loc["guesser", "upper"] < 0.8
    assert (gold.drop(["guesser", "lefty"])["accuracy"] > 0.9).all()
    by_hand = rated_votes[rated_votes["is_gold"] & (rated_votes["rater"] == "careful0")]
    assert gold.loc["careful0", "n_gold"] == len(by_hand)
    assert gold.loc["careful0", "n_correct"] == by_hand["gold_correct"].sum()
    speed = rater_speed(rated_votes)
    assert speed.loc["hasty", "median_seconds"] < 1.5 and speed.loc["hasty", "fast_share"] > 0.9
    assert speed.drop("hasty")["median_seconds"].min() > 5
    with pytest.raises(ValueError, match="is_gold"):
        gold_accuracy(rated_votes.drop(columns="is_gold"))


def test_agreement_with_others_separates_guessers(rated_votes):
    table = agreement_with_others(rated_votes)
    assert table.loc["guesser", "agreement"] < table.drop(["guesser", "lefty"])["agreement"].min()


def test_report_flags_each_problem_rater_and_dropping_them_helps(rated_votes):
    report = rater_report(rated_votes)
    assert flagged_raters(report) == {"lefty", "hasty", "guesser"}
    assert report.loc["lefty", "reasons"] == "position bias"
    assert report.loc["hasty", "reasons"] == "too fast"
    assert "gold accuracy" in report.loc["guesser", "reasons"]
    assert not report.drop(["lefty", "hasty", "guesser"])["flagged"].any()
    everyone = rater_agreement(rated_votes[~rated_votes["is_gold"]])
    kept = rated_votes[~rated_votes["is_gold"] & ~rated_votes["rater"].isin(flagged_raters(report))]
    assert rater_agreement(kept)["percent_agreement"] > everyone["percent_agreement"]
    fit = fit_bradley_terry(rated_votes, intervals="fisher", exclude_raters=flagged_raters(report))
    assert fit.attrs["n_votes"] == len(kept)


def gold_answers(answers: dict[str, list[bool]]) -> pd.DataFrame:
    """Gold votes: check name -> whether each of raters r0, r1, ... answered it right."""
    rows = [
        {"rater": f"r{i}", "is_gold": True, "gold_correct": right, "check": check}
        for check, rights in answers.items()
        for i, right in enumerate(rights)
    ]
    return pd.DataFrame(rows)


def test_a_gold_check_the_other_raters_contest_does_not_count_against_a_rater():
    # "bad": both images of the check fail the prompt; most careful raters call it a tie (a wrong answer)
    votes = gold_answers(
        {"clear1": [True, True, True, True], "clear2": [True, True, True, True], "bad": [False, False, False, True]}
    )
    gold = gold_accuracy(votes, item="check")
    assert gold.loc["r0", "n_gold"] == 2 and gold.loc["r0", "accuracy"] == 1.0
    assert gold.loc["r0", "n_contested"] == 1
    assert gold_accuracy(votes).loc["r0", "n_gold"] == 3  # without the check column every answer counts


def test_a_lone_wrong_answer_on_an_uncontested_gold_check_still_counts():
    votes = gold_answers({"clear1": [False, True, True], "clear2": [False, True, True]})
    gold = gold_accuracy(votes, item="check")
    assert gold.loc["r0", "n_gold"] == 2 and gold.loc["r0", "accuracy"] == 0.0
    assert gold.loc["r0", "n_contested"] == 0


def test_a_gold_check_answered_by_fewer_than_three_raters_is_never_called_contested():
    votes = gold_answers({"new": [False, False]})
    assert gold_accuracy(votes, item="check").loc["r0", "n_gold"] == 1
