"""Simulated votes follow the one vote model: requested tie rate, expected score sigmoid(difference); simulated
campaigns stop at their certificate unless run to the end."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.simulate import simulate_campaign, simulate_vote, simulate_votes
from analysis.win_rates import win_rate_matrix


@pytest.mark.parametrize("tie_model", ["half", "davidson"])
def test_simulated_votes_follow_the_requested_model(tie_model):
    votes = simulate_votes(
        {"a": 0.0, "b": 0.0, "c": 1.5}, 60000, tie_rate=0.2, rng=1, tie_model=tie_model, both_bad_share=0.25
    )
    equal = votes[votes[["model_a", "model_b"]].isin(["a", "b"]).all(axis=1)]
    tie_share = equal["winner"].isin(["tie", "both_bad"]).mean()
    assert tie_share == pytest.approx(0.2, abs=0.015)
    assert (votes["winner"] == "both_bad").sum() / votes["winner"].isin(["tie", "both_bad"]).sum() == pytest.approx(
        0.25, abs=0.03
    )
    assert not (votes["model_a"] == votes["model_b"]).any()
    if tie_model == "half":  # the expected score (ties half) is exactly the Bradley-Terry probability
        rates, _ = win_rate_matrix(votes)
        assert rates.loc["c", "a"] == pytest.approx(1 / (1 + np.exp(-1.5)), abs=0.01)


def test_simulated_votes_use_the_pair_sampler_and_check_inputs():
    always_first_two = lambda rng, n: (np.zeros(n, dtype=int), np.ones(n, dtype=int))  # noqa: E731
    votes = simulate_votes([0.0, 1.0, 2.0], 50, rng=0, pair_sampler=always_first_two)
    assert set(votes["model_a"]) == {"model_0"} and set(votes["model_b"]) == {"model_1"}
    with pytest.raises(ValueError, match="itself"):
        simulate_votes([0.0, 1.0], 5, rng=0, pair_sampler=lambda rng, n: (np.zeros(n, int), np.zeros(n, int)))
    with pytest.raises(ValueError, match="tie_rate"):
        simulate_votes([0.0, 1.0], 5, tie_rate=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        simulate_votes([0.0], 5)


def test_simulated_votes_follow_the_strengths_with_ten_percent_ties():
    rng = np.random.default_rng(2)
    strengths = np.array([0.5, 0.0])
    scores = np.array([simulate_vote(rng, strengths, 0, 1, 0.1) for _ in range(20000)])
    assert np.mean(scores == 0.5) == pytest.approx(0.1, abs=0.01)
    assert scores.mean() == pytest.approx(1 / (1 + np.exp(-0.5)), abs=0.01)


def test_a_campaign_run_to_the_end_keeps_every_look_after_its_certificate():
    strengths = np.array([0.0, -1.0, -2.0])
    stopped = simulate_campaign(strengths, np.random.default_rng(3), rule="rebalanced_ties_rho8", max_votes=2000)
    full = simulate_campaign(
        strengths, np.random.default_rng(3), rule="rebalanced_ties_rho8", max_votes=2000, run_to_the_end=True
    )
    assert stopped.certified_at is not None and stopped.votes == stopped.certified_at < 2000
    assert full.votes == 2000 and len(full.top_evidence) == 80
    assert full.certified_at == stopped.certified_at and full.certified_model == stopped.certified_model == 0
