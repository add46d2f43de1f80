"""Per-category / per-challenge breakdowns find where each model is better, with group sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.breakdowns import breakdown
from analysis.simulate import simulate_votes


@pytest.fixture
def votes_by_category():
    rng = np.random.default_rng(21)
    animals = simulate_votes({"ours": 1.0, "base": 0.0, "old": -0.5}, 3000, rng=rng)
    writing = simulate_votes({"ours": -0.6, "base": 0.6, "old": 0.0}, 2000, rng=rng)
    return pd.concat(
        [
            animals.assign(category="Animals", challenge="Basic"),
            writing.assign(category="Writing & Symbols", challenge=None),
        ],
        ignore_index=True,
    )


def test_bradley_terry_breakdown_finds_the_best_model_per_category(votes_by_category):
    table = breakdown(votes_by_category, by="category", intervals="fisher")
    assert list(table.columns[:3]) == ["category", "model", "n_group"]
    best = table[table["rank"] == 1].set_index("category")["model"]
    assert best["Animals"] == "ours"
    assert best["Writing & Symbols"] == "base"
    assert table.groupby("category")["n_group"].first().to_dict() == {"Animals": 3000, "Writing & Symbols": 2000}
    # each group is an independent fit: scores average 1000 within the group
    np.testing.assert_allclose(table.groupby("category")["score"].mean(), 1000, atol=1e-6)


def test_win_rate_breakdown_by_two_columns_counts_votes(votes_by_category):
    table = breakdown(votes_by_category, by=["category", "challenge"], method="win_rate")
    writing = table[table["category"] == "Writing & Symbols"].set_index("model")
    assert (writing["challenge"] == "(none)").all()
    # every vote involves two models: per group, model votes add up to twice the group size
    assert table.groupby("category")["votes"].sum().to_dict() == {"Animals": 6000, "Writing & Symbols": 4000}
    sub = votes_by_category[votes_by_category["category"] == "Writing & Symbols"]
    ours = sub[(sub["model_a"] == "ours") | (sub["model_b"] == "ours")]
    wins = ((ours["model_a"] == "ours") & (ours["winner"] == "model_a")).sum() + (
        (ours["model_b"] == "ours") & (ours["winner"] == "model_b")
    ).sum()
    ties = ours["winner"].isin(["tie", "both_bad"]).sum()
    assert writing.loc["ours", "win_rate"] == pytest.approx((wins + ties / 2) / len(ours))
    assert (writing["lower"] < writing["win_rate"]).all() and (writing["win_rate"] < writing["upper"]).all()


def test_thin_groups_can_be_left_out(votes_by_category):
    thin = votes_by_category.assign(category=np.where(np.arange(len(votes_by_category)) < 10, "Rare", "Common"))
    table = breakdown(thin, method="win_rate", min_votes=50)
    assert set(table["category"]) == {"Common"}
    with pytest.raises(ValueError, match="at least"):
        breakdown(thin, method="win_rate", min_votes=10**6)


def test_breakdown_refuses_bad_requests(votes_by_category):
    with pytest.raises(ValueError, match="needs those columns"):
        breakdown(votes_by_category, by="style")
    with pytest.raises(ValueError, match="method must be"):
        breakdown(votes_by_category, method="elo")
    with pytest.raises(ValueError, match="mix criteria"):
        breakdown(votes_by_category.assign(criterion=np.resize(["aesthetics", "typography"], len(votes_by_category))))
    by_criterion = breakdown(
        votes_by_category.assign(criterion="aesthetics"), by=["criterion", "category"], method="win_rate"
    )
    assert set(by_criterion["criterion"]) == {"aesthetics"}
