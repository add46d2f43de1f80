"""Empirical win rates: the pairwise matrix and one model's SD3-style win rates, counted by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.win_rates import sd3_win_rates, win_rate_matrix


def test_win_rate_matrix_counts_by_hand():
    votes = pd.DataFrame(
        {
            "model_a": ["a", "a", "b", "a", "c"],
            "model_b": ["b", "b", "a", "c", "a"],
            "winner": ["model_a", "tie", "model_a", "model_a", "both_bad"],
        }
    )
    rates, counts = win_rate_matrix(votes)
    assert counts.loc["a", "b"] == 3 and counts.loc["b", "a"] == 3 and counts.loc["a", "c"] == 2
    assert rates.loc["a", "b"] == pytest.approx(1.5 / 3)
    assert rates.loc["a", "c"] == pytest.approx(1.5 / 2)
    assert rates.loc["c", "a"] == pytest.approx(0.5 / 2)
    assert np.isnan(rates.loc["b", "c"]) and counts.loc["b", "c"] == 0
    ordered, _ = win_rate_matrix(votes, models=["c", "b", "a"])
    assert list(ordered.index) == ["c", "b", "a"]


def test_sd3_win_rates_per_criterion_and_opponent():
    aesthetics = pd.DataFrame(
        {
            "model_a": ["ours", "ours", "rival", "ours"],
            "model_b": ["rival", "rival", "ours", "other"],
            "winner": ["model_a", "tie", "model_a", "model_a"],
        }
    )
    typography = pd.DataFrame(
        {"model_a": ["other"] * 10, "model_b": ["ours"] * 10, "winner": ["model_b"] * 9 + ["model_a"]}
    )
    table = sd3_win_rates({"aesthetics": aesthetics, "typography": typography}, "ours").set_index(
        ["criterion", "opponent"]
    )
    row = table.loc[("aesthetics", "rival")]
    assert (row["wins"], row["losses"], row["ties"], row["n"]) == (1, 1, 1, 3)
    assert row["win_rate"] == pytest.approx(0.5)
    typo = table.loc[("typography", "other")]
    assert typo["win_rate"] == pytest.approx(0.9)
    assert typo["lower"] < 0.9 < typo["upper"] and 0 <= typo["lower"] and typo["upper"] <= 1
    with pytest.raises(ValueError, match="no votes"):
        sd3_win_rates({"aesthetics": aesthetics}, "absent")
