"""Bradley-Terry fits: exactness against an independent optimiser, recovery of known strengths,
interval coverage, ties, degenerate comparison graphs and input validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis.bradley_terry import ELO_PER_NAT, bt_covariance, bt_mle, bt_mle_batch, davidson_mle
from analysis.intervals import bootstrap_thetas
from analysis.leaderboard import fit_bradley_terry, predict_win_probability
from analysis.simulate import simulate_votes
from analysis.votes import count_pairs
from analysis.win_rates import win_rate_matrix

TRUE_THETA = np.array([1.2, 0.7, 0.3, 0.0, -0.4, -0.9])


def counts_by_hand(votes: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decisive-win and tie matrices counted row by row, independently of analysis.count_pairs."""
    pos = {name: k for k, name in enumerate(names)}
    decisive = np.zeros((len(names), len(names)))
    ties = np.zeros_like(decisive)
    for a, b, winner in votes[["model_a", "model_b", "winner"]].itertuples(index=False):
        i, j = pos[a], pos[b]
        if winner == "model_a":
            decisive[i, j] += 1
        elif winner == "model_b":
            decisive[j, i] += 1
        else:
            ties[i, j] += 1
            ties[j, i] += 1
    return decisive, ties


def reference_half_fit(wins: np.ndarray) -> np.ndarray:
    """Unpenalised MLE with theta_0 = 0 fixed, by scipy's BFGS; returned centred."""

    def nll(free):
        theta = np.concatenate([[0.0], free])
        d = theta[:, None] - theta[None, :]
        return (wins * np.logaddexp(0.0, -d)).sum()

    def grad(free):
        theta = np.concatenate([[0.0], free])
        p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
        g = ((wins + wins.T) * p).sum(axis=1) - wins.sum(axis=1)
        return g[1:]

    res = optimize.minimize(nll, np.zeros(len(wins) - 1), jac=grad, method="BFGS", options={"gtol": 1e-10})
    theta = np.concatenate([[0.0], res.x])
    return theta - theta.mean()


def max_log_odds_gap(theta_a: np.ndarray, theta_b: np.ndarray) -> float:
    """Largest disagreement in any pairwise log-odds theta_i - theta_j."""
    da = theta_a[:, None] - theta_a[None, :]
    db = theta_b[:, None] - theta_b[None, :]
    return float(np.abs(da - db).max())


def names_of(k: int) -> list[str]:
    return [f"model_{i}" for i in range(k)]


def test_mle_matches_independent_optimisation_of_the_same_likelihood():
    votes = simulate_votes(TRUE_THETA, 3000, tie_rate=0.15, rng=11, both_bad_share=0.3)
    decisive, ties = counts_by_hand(votes, names_of(6))
    wins = decisive + 0.5 * ties
    reference = reference_half_fit(wins)
    assert max_log_odds_gap(bt_mle(wins), reference) < 1e-6
    fit = fit_bradley_terry(votes, intervals="fisher")
    theta_from_scores = (fit["score"].reindex(names_of(6)).to_numpy() - 1000) / ELO_PER_NAT
    assert max_log_odds_gap(theta_from_scores, reference) < 1e-6
    assert abs(fit["score"].mean() - 1000) < 1e-9


def test_davidson_matches_independent_optimisation_and_recovers_tie_strength():
    votes = simulate_votes(TRUE_THETA, 20000, tie_rate=0.3, rng=5, tie_model="davidson")
    decisive, ties = counts_by_hand(votes, names_of(6))

    def nll(x):
        theta = np.concatenate([[0.0], x[:-1]])
        d = theta[:, None] - theta[None, :]
        c = 2 * np.cosh(d / 2) + np.exp(x[-1])
        n = decisive + decisive.T + ties
        return -((decisive * d).sum() / 2 + ties.sum() / 2 * x[-1] - (n * np.log(c)).sum() / 2)

    res = optimize.minimize(nll, np.zeros(6), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    res = optimize.minimize(nll, res.x, method="BFGS", options={"gtol": 1e-9})
    ref_theta = np.concatenate([[0.0], res.x[:-1]])
    theta, log_nu = davidson_mle(decisive, ties)
    assert max_log_odds_gap(theta, ref_theta) < 1e-5
    assert abs(log_nu - res.x[-1]) < 1e-5
    true_nu = 2 * 0.3 / 0.7
    assert abs(np.exp(log_nu) - true_nu) < 0.05
    assert max_log_odds_gap(theta, TRUE_THETA) < 0.15

    fit = fit_bradley_terry(votes, ties="davidson", intervals="fisher")
    assert fit.attrs["tie_strength"] == pytest.approx(np.exp(log_nu), rel=1e-6)
    assert list(fit.index) == names_of(6)  # best first, as simulated


def test_ties_count_half_and_both_bad_counts_as_a_tie():
    votes = pd.DataFrame(
        {
            "model_a": ["x", "x", "y", "x"],
            "model_b": ["y", "y", "x", "y"],
            "winner": ["tie", "both_bad", "tie", "model_a"],
        }
    )
    fit = fit_bradley_terry(votes, intervals="fisher")
    # x: 1 win + 3 ties -> 2.5 of 4; y: 1.5 of 4
    assert fit.loc["x", "win_rate"] == pytest.approx(0.625)
    assert fit.loc["y", "win_rate"] == pytest.approx(0.375)
    # MLE with 2.5 vs 1.5 wins: odds 5:3
    gap = (fit.loc["x", "score"] - fit.loc["y", "score"]) / ELO_PER_NAT
    assert gap == pytest.approx(np.log(2.5 / 1.5), abs=1e-6)
    relabelled = votes.assign(winner=votes["winner"].replace({"both_bad": "tie"}))
    pd.testing.assert_frame_equal(fit, fit_bradley_terry(relabelled, intervals="fisher"))


def test_ranking_recovers_truth_as_votes_grow():
    rng = np.random.default_rng(3)
    theta = np.linspace(1.0, -1.0, 10)
    taus = {}
    for n_votes in (150, 1500, 15000):
        per_seed = []
        for _ in range(4):
            fit = fit_bradley_terry(simulate_votes(theta, n_votes, rng=rng), intervals="fisher")
            est = fit["score"].reindex(names_of(10)).to_numpy()
            per_seed.append(stats.kendalltau(est, theta).statistic)
        taus[n_votes] = np.mean(per_seed)
    assert taus[150] < taus[1500] < taus[15000]
    assert taus[15000] > 0.95
    assert stats.spearmanr(est, theta).statistic > 0.98


def difference_coverage(theta_true: np.ndarray, theta_hat: np.ndarray, cov: np.ndarray, z: float) -> np.ndarray:
    """For every pair i < j: does theta_hat_i - theta_hat_j +- z * sd cover the true difference?"""
    i, j = np.triu_indices(len(theta_true), 1)
    var = cov[i, i] + cov[j, j] - 2 * cov[i, j]
    return np.abs((theta_hat[i] - theta_hat[j]) - (theta_true[i] - theta_true[j])) <= z * np.sqrt(var)


def test_fisher_and_sandwich_intervals_cover_true_differences_about_95_percent():
    rng = np.random.default_rng(2024)
    theta = np.array([0.8, 0.4, 0.1, -0.3, -1.0])
    z = stats.norm.ppf(0.975)
    fisher_hits, model_hits, sandwich_hits = [], [], []
    for _ in range(150):
        votes = simulate_votes(theta, 500, tie_rate=0.1, rng=rng)
        fit = fit_bradley_terry(votes, intervals="fisher").reindex(names_of(5))
        theta_hat = (fit["score"].to_numpy() - 1000) / ELO_PER_NAT
        decisive, ties = count_pairs(votes, names_of(5)).dense()
        cov = bt_covariance(decisive + 0.5 * ties, theta_hat)
        fisher_hits.extend(difference_coverage(theta, theta_hat, cov, z))
        true_score = 1000 + ELO_PER_NAT * (theta - theta.mean())
        model_hits.extend((fit["lower"] <= true_score) & (true_score <= fit["upper"]))
        sandwich = fit_bradley_terry(votes, intervals="sandwich").reindex(names_of(5))
        sandwich_hits.extend((sandwich["lower"] <= true_score) & (true_score <= sandwich["upper"]))
    for hits in (fisher_hits, model_hits, sandwich_hits):
        assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)
    # ties make votes less variable than coin flips: Fisher is the more conservative of the two
    assert np.mean(sandwich_hits) <= np.mean(model_hits)


def test_bootstrap_intervals_cover_true_scores_and_are_reproducible():
    rng = np.random.default_rng(7)
    theta = np.array([0.6, 0.2, -0.1, -0.7])
    true_score = 1000 + ELO_PER_NAT * (theta - theta.mean())
    hits = []
    for campaign in range(120):
        votes = simulate_votes(theta, 600, tie_rate=0.1, rng=rng)
        fit = fit_bradley_terry(votes, rounds=100, seed=campaign).reindex(names_of(4))
        hits.extend((fit["lower"] <= true_score) & (true_score <= fit["upper"]))
        assert ((fit["lower"] <= fit["score"]) & (fit["score"] <= fit["upper"])).all()
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)
    again = fit_bradley_terry(votes, rounds=100, seed=campaign).reindex(names_of(4))
    pd.testing.assert_frame_equal(fit, again)


def test_rank_counts_models_whose_interval_lies_entirely_above():
    theta = np.array([3.0, 2.9, 0.0, -3.0])
    fit = fit_bradley_terry(simulate_votes(theta, 6000, rng=1), intervals="fisher")
    assert fit.loc["model_0", "rank"] == 1 and fit.loc["model_1", "rank"] == 1  # overlapping, tied at rank 1
    assert fit.loc["model_2", "rank"] == 3
    assert fit.loc["model_3", "rank"] == 4
    assert fit["votes"].sum() == 2 * 6000


def test_model_that_never_lost_gets_a_finite_top_score_and_leaves_the_others_alone():
    votes = simulate_votes([0.2, 0.0, -0.2], 300, rng=4)
    champion = pd.DataFrame({"model_a": ["champ"] * 5, "model_b": ["model_1"] * 5, "winner": ["model_a"] * 5})
    without = fit_bradley_terry(votes, intervals="fisher")
    for intervals in ("fisher", "bootstrap"):
        fit = fit_bradley_terry(pd.concat([votes, champion]), intervals=intervals)
        assert np.isfinite(fit[["score", "lower", "upper"]].to_numpy()).all()
        assert fit.index[0] == "champ"
        # the MLE of the champion is +infinity; its votes then explain nothing about the others
        gaps = fit["score"].drop("champ") - fit.loc["model_1", "score"]
        np.testing.assert_allclose(gaps, without["score"] - without.loc["model_1", "score"], atol=1e-3)
    # Fisher information is ~0 for the champion: its interval says "unknown" rather than inventing precision
    assert fit_bradley_terry(pd.concat([votes, champion]), intervals="fisher").eval("upper - lower")["champ"] > 1000


def test_disconnected_comparison_graph_fits_each_piece_like_a_separate_fit():
    rng = np.random.default_rng(8)
    left = simulate_votes({"a": 0.5, "b": 0.0, "c": -0.5}, 400, rng=rng)
    right = simulate_votes({"x": 1.0, "y": -1.0}, 200, rng=rng)
    together = fit_bradley_terry(pd.concat([left, right]), intervals="fisher")
    alone = fit_bradley_terry(left, intervals="fisher")
    gap_together = together.loc["a", "score"] - together.loc["c", "score"]
    assert gap_together == pytest.approx(alone.loc["a", "score"] - alone.loc["c", "score"], abs=1e-6)
    assert np.isfinite(together["score"]).all()
    # nothing links the two pieces: their relative position is unknown, so intervals are huge
    assert (together["upper"] - together["lower"]).min() > 1000


def test_gold_checks_and_excluded_raters_are_left_out():
    votes = simulate_votes([0.3, 0.0, -0.3], 300, rng=9).assign(rater="good", is_gold=False)
    spam = pd.DataFrame(
        {"model_a": "model_2", "model_b": "model_0", "winner": "model_a", "rater": "spammer"}, index=range(200)
    )
    gold = pd.DataFrame(
        {"model_a": "gold:good", "model_b": "gold:bad", "winner": "model_a", "rater": "good", "is_gold": True},
        index=range(3),
    )
    everything = pd.concat([votes, spam.assign(is_gold=False), gold], ignore_index=True)
    clean = fit_bradley_terry(everything, intervals="fisher", exclude_raters={"spammer"})
    pd.testing.assert_frame_equal(clean, fit_bradley_terry(votes, intervals="fisher"), check_like=False)
    assert "gold:good" not in clean.index
    assert fit_bradley_terry(everything, intervals="fisher").index[0] == "model_2"


def test_predicted_win_probability_follows_the_elo_scale():
    fit = pd.DataFrame({"score": [1200.0, 800.0]}, index=["a", "b"])
    assert predict_win_probability(fit, "a", "b") == pytest.approx(10 / 11)
    assert predict_win_probability(fit, "b", "a") == pytest.approx(1 / 11)
    np.testing.assert_allclose(predict_win_probability(fit, ["a", "a"], ["b", "a"]), [10 / 11, 0.5])
    with pytest.raises(ValueError, match="not in the fit"):
        predict_win_probability(fit, "a", "zzz")


def test_davidson_predictions_match_observed_win_rates():
    votes = simulate_votes([0.5, 0.0], 40000, tie_rate=0.2, rng=3, tie_model="davidson")
    fit = fit_bradley_terry(votes, ties="davidson", intervals="fisher")
    rates, counts = win_rate_matrix(votes)
    assert predict_win_probability(fit, "model_0", "model_1") == pytest.approx(
        rates.loc["model_0", "model_1"], abs=1e-6
    )


def test_bad_options_are_refused():
    votes = simulate_votes([0.0, 1.0], 20, rng=0)
    with pytest.raises(ValueError, match="ties must be"):
        fit_bradley_terry(votes, ties="rao-kupper")
    with pytest.raises(ValueError, match="intervals must be"):
        fit_bradley_terry(votes, intervals="bayes")
    with pytest.raises(ValueError, match="confidence"):
        fit_bradley_terry(votes, confidence=95)
    with pytest.raises(ValueError, match="square"):
        bt_mle(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        bt_mle(np.array([[0.0, -1.0], [1.0, 0.0]]))


def test_sandwich_matches_fisher_when_davidson_is_the_true_model():
    votes = simulate_votes(TRUE_THETA, 20000, tie_rate=0.3, rng=12, tie_model="davidson")
    fisher = fit_bradley_terry(votes, ties="davidson", intervals="fisher")
    sandwich = fit_bradley_terry(votes, ties="davidson", intervals="sandwich")
    ratio = (sandwich["upper"] - sandwich["lower"]) / (fisher["upper"] - fisher["lower"])
    assert ratio.between(0.9, 1.1).all()
    # with ties split in half, ties vary less than coin flips: the sandwich is narrower than Fisher
    half_fisher = fit_bradley_terry(votes, intervals="fisher")
    half_sandwich = fit_bradley_terry(votes, intervals="sandwich")
    assert ((half_sandwich["upper"] - half_sandwich["lower"]) < (half_fisher["upper"] - half_fisher["lower"])).all()
    boot = fit_bradley_terry(votes, ties="davidson", rounds=60)
    boot_ratio = (boot["upper"] - boot["lower"]) / (fisher["upper"] - fisher["lower"])
    assert boot_ratio.between(0.7, 1.3).all()


@pytest.mark.parametrize(("n_models", "n_votes"), [(6, 5000), (30, 400)])
def test_fast_bootstrap_refits_equal_full_newton_refits_of_the_same_resamples(n_models, n_votes):
    """Dense data take the chord-method shortcut, sparse data fall back to damped Newton: both must
    give the exact refit of each resample."""
    votes = simulate_votes(np.linspace(1, -1, n_models), n_votes, rng=3)
    pairs = count_pairs(votes)
    point = bt_mle(pairs.half_wins())
    fast = bootstrap_thetas(pairs, "half", point, 20, np.random.default_rng(5), 1e-6)
    resampled = np.random.default_rng(5).poisson(pairs.counts, size=(20,) + pairs.counts.shape).astype(float)
    exact = bt_mle_batch(np.stack([pairs.half_wins(r) for r in resampled]))
    assert np.abs(fast - exact).max() < 1e-6


def test_covariance_with_observed_ties_matches_the_spread_of_fits_where_fisher_overstates_it():
    from analysis.bradley_terry import bt_covariance_observed_ties
    from analysis.simulate import simulate_outcomes

    rng = np.random.default_rng(11)
    theta = np.array([0.0, -0.4, -0.8])
    estimates, with_ties, fisher = [], [], []
    for _ in range(400):
        a = rng.integers(0, 3, 600)
        b = (a + rng.integers(1, 3, 600)) % 3
        outcome = simulate_outcomes(theta, a, b, rng, tie_rate=0.3)
        score = np.where(outcome == 0, 1.0, np.where(outcome == 1, 0.0, 0.5))
        wins, ties = np.zeros((3, 3)), np.zeros((3, 3))
        np.add.at(wins, (a, b), score)
        np.add.at(wins, (b, a), 1 - score)
        np.add.at(ties, (a, b), outcome == 2)
        np.add.at(ties, (b, a), outcome == 2)
        fit = bt_mle(wins)
        estimates.append(fit[0] - fit[1])
        for out, cov in ((with_ties, bt_covariance_observed_ties(wins, ties, fit)), (fisher, bt_covariance(wins, fit))):
            out.append(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    spread = np.var(estimates)
    assert np.mean(with_ties) == pytest.approx(spread, rel=0.15)
    assert np.mean(fisher) > 1.3 * spread  # ties as a coin flip: 30% ties overstate the variance by ~1/3
    # no ties: exactly the Fisher covariance
    assert np.allclose(bt_covariance_observed_ties(wins, np.zeros((3, 3)), fit), bt_covariance(wins, fit))
    with pytest.raises(ValueError, match="symmetric"):
        bt_covariance_observed_ties(wins, np.triu(ties), fit)
