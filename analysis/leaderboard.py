"""The leaderboard of one criterion from a table of votes: `fit_bradley_terry` and `predict_win_probability`.

`fit_bradley_terry` is a few steps, each a function of its own layer: select the votes that count
(analysis/votes.py), count them per pair, fit the strengths (analysis/bradley_terry.py), put intervals
around them (analysis/intervals.py) and lay out the table. May import numpy, pandas and those modules.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.bradley_terry import DEFAULT_RIDGE, ELO_PER_NAT, bt_mle, davidson_mle_batch, elo_score, sigmoid
from analysis.intervals import bootstrap_thetas, normal_bounds, percentile_bounds, strength_covariance
from analysis.votes import PairCounts, check_single_criterion, count_pairs, select_votes

TIES = ("half", "davidson")
INTERVALS = ("bootstrap", "fisher", "sandwich")


def fit_bradley_terry(
    votes: pd.DataFrame,
    *,
    ties: str = "half",
    intervals: str = "bootstrap",
    rounds: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
    exclude_raters: Iterable[str] | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> pd.DataFrame:
    """Leaderboard of one criterion: Bradley-Terry scores on the Elo scale with confidence intervals.

    votes: model_a, model_b, winner (see analysis.votes); rows with is_gold True are left out, and so are
    the votes of `exclude_raters`. A 'criterion' column, if present, must hold a single value.
    ties: "half" counts tie and both_bad as half a win for each side; "davidson" fits Davidson's tie model.
    intervals: "bootstrap" (percentile intervals over `rounds` Poisson-bootstrap resamples of the vote
    counts, each refitted from the point fit; they keep the skew of the scores where the data have it),
    "fisher" (inverse Fisher information) or "sandwich" (robust: observed score variance; with ties as
    half it is exact where Fisher is slightly conservative, since ties vary less than coin flips).
    ridge: prior precision on theta (see analysis.bradley_terry). With the tiny default, a model that
    never lost gets a huge (finite) score that also pulls the mean; Fisher intervals then say "unknown".
    A larger ridge (e.g. 0.1, a N(0, 10) prior on log-strengths) keeps early leaderboards readable.

    Returns a DataFrame indexed by model, best first, with columns
      score     1000 + 400 * log10 odds (400 points = 10:1 odds; the average model has 1000)
      lower, upper  confidence bounds of the score (relative to the average model)
      rank      1 + number of models whose lower bound is above this model's upper bound
      votes     votes involving the model;  win_rate  share of them won, ties counted half
    attrs: ties, intervals, confidence, n_votes and, for Davidson, tie_strength nu.
    """
    _check_options(ties, intervals, rounds, confidence)
    votes = select_votes(votes, exclude_raters=exclude_raters)
    check_single_criterion(votes)
    pairs = count_pairs(votes)
    point = fit_strengths(pairs, ties, ridge)
    lower, upper = score_bounds(pairs, ties, point, intervals, confidence, rounds=rounds, seed=seed, ridge=ridge)
    fit = leaderboard_table(pairs, elo_score(point[: pairs.n_models]), lower, upper)
    fit.attrs.update(ties=ties, intervals=intervals, confidence=confidence, n_votes=int(len(votes)))
    if ties == "davidson":
        fit.attrs["tie_strength"] = float(np.exp(float(point[-1])))
    return fit


def _check_options(ties: str, intervals: str, rounds: int, confidence: float) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be 'half' or 'davidson', got {ties!r}")
    if intervals not in INTERVALS:
        raise ValueError(f"intervals must be 'bootstrap', 'fisher' or 'sandwich', got {intervals!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if intervals == "bootstrap" and rounds < 2:
        raise ValueError("bootstrap intervals need rounds >= 2")


def fit_strengths(pairs: PairCounts, ties: str, ridge: float) -> np.ndarray:
    """Point fit: theta (K,) for ties="half", [theta, log_nu] (K + 1,) for ties="davidson"."""
    if ties == "half":
        return bt_mle(pairs.half_wins(), ridge=ridge)
    decisive, tie_counts = pairs.dense()
    return davidson_mle_batch(decisive, tie_counts, ridge=ridge)[0]


def score_bounds(
    pairs: PairCounts,
    ties: str,
    point: np.ndarray,
    intervals: str,
    confidence: float,
    *,
    rounds: int,
    seed: int,
    ridge: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper confidence bounds (K,) of each model's score (Elo scale)."""
    k = pairs.n_models
    if intervals == "bootstrap":
        thetas = bootstrap_thetas(pairs, ties, point, rounds, np.random.default_rng(seed), ridge)
        return percentile_bounds(elo_score(thetas), confidence)
    cov = strength_covariance(pairs, ties, point, intervals, ridge)
    return normal_bounds(elo_score(point[:k]), np.sqrt(np.diag(cov)[:k]), confidence, scale=ELO_PER_NAT)


def leaderboard_table(pairs: PairCounts, score: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> pd.DataFrame:
    """The leaderboard DataFrame (see `fit_bradley_terry`), best first."""
    n_votes = pairs.votes_per_model()
    decisive, tie_counts = pairs.dense()
    points = decisive.sum(axis=1) + 0.5 * tie_counts.sum(axis=1)
    rank = 1 + (lower[None, :] > upper[:, None]).sum(axis=1)
    return pd.DataFrame(
        {
            "score": score,
            "lower": lower,
            "upper": upper,
            "rank": rank,
            "votes": n_votes.astype(int),
            "win_rate": points / n_votes,
        },
        index=pd.Index(pairs.models, name="model"),
    ).sort_values("score", ascending=False)


def predict_win_probability(fit: pd.DataFrame, a, b):
    """Expected share of votes model a wins against model b (ties counted half) under a fitted model.

    a, b: model names (or equal-length lists of names). For ties="half" this is 1 / (1 + 10^((s_b - s_a)/400));
    for Davidson it is P(a wins) + P(tie) / 2 with the fitted tie strength.
    """
    for names in (a, b):
        unknown = set(np.atleast_1d(names)) - set(fit.index)
        if unknown:
            raise ValueError(f"model(s) {sorted(map(str, unknown))} are not in the fit")
    d = fit["score"].reindex(np.atleast_1d(a)).to_numpy() - fit["score"].reindex(np.atleast_1d(b)).to_numpy()
    d = d / ELO_PER_NAT
    if fit.attrs.get("ties") == "davidson":
        nu = fit.attrs["tie_strength"]
        p = (np.exp(d / 2) + nu / 2) / (2 * np.cosh(d / 2) + nu)
    else:
        p = sigmoid(d)
    return float(p[0]) if np.ndim(a) == 0 and np.ndim(b) == 0 else p
