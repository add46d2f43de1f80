"""Simulated votes from known model strengths, for tests, benchmarks and power calculations.

Strengths are natural-log Bradley-Terry strengths theta (P(i beats j) = sigmoid(theta_i - theta_j) when
ties are split in half). Two tie mechanisms:

* tie_model="half" (default): P(tie) = 4 * tie_rate * p * (1 - p), P(i wins) = p - P(tie) / 2 with
  p = sigmoid(theta_i - theta_j). Ties are most likely between equal models (tie_rate at d = 0), and the
  expected score (win 1, tie 1/2, loss 0) is exactly p, so the ties-as-half Bradley-Terry fit is
  consistent for theta.
* tie_model="davidson": Davidson's model with nu chosen so that equal models tie with probability
  tie_rate: nu = 2 * tie_rate / (1 - tie_rate); P(i wins) = e^{d/2} / (e^{d/2} + e^{-d/2} + nu).

Output columns follow the vote schema of analysis/: model_a, model_b, winner in
{"model_a", "model_b", "tie", "both_bad"}; `simulate_rater_votes` adds rater, item, left_model,
is_gold, gold_correct and seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PairSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _strength_table(strengths: Mapping[str, float] | Sequence[float] | np.ndarray) -> tuple[list[str], np.ndarray]:
    if isinstance(strengths, Mapping):
        names = [str(name) for name in strengths]
        theta = np.array([float(v) for v in strengths.values()])
    else:
        theta = np.asarray(strengths, dtype=float)
        names = [f"model_{i}" for i in range(len(theta))]
    if theta.ndim != 1 or len(theta) < 2:
        raise ValueError("strengths must name at least 2 models")
    if not np.isfinite(theta).all():
        raise ValueError("strengths must be finite")
    return names, theta


def uniform_pairs(n_models: int) -> PairSampler:
    """A pair sampler drawing two distinct models uniformly at random, in random order."""

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        a = rng.integers(0, n_models, size=n)
        b = (a + rng.integers(1, n_models, size=n)) % n_models
        return a, b

    return sample


def outcome_probabilities(d: np.ndarray, tie_rate: float, tie_model: str = "half") -> np.ndarray:
    """(..., 3) probabilities of [a wins, b wins, tie] for strength differences d = theta_a - theta_b."""
    d = np.asarray(d, dtype=float)
    if not 0.0 <= tie_rate < 1.0:
        raise ValueError(f"tie_rate must be in [0, 1), got {tie_rate}")
    if tie_model == "half":
        if tie_rate > 0.5:
            raise ValueError("tie_model='half' needs tie_rate <= 0.5 (so that win probabilities stay >= 0)")
        p = 0.5 * (1.0 + np.tanh(0.5 * d))
        tie = 4.0 * tie_rate * p * (1.0 - p)
        return np.stack([p - tie / 2, 1.0 - p - tie / 2, tie], axis=-1)
    if tie_model == "davidson":
        nu = 2.0 * tie_rate / (1.0 - tie_rate)
        c = 2.0 * np.cosh(0.5 * d) + nu
        return np.stack([np.exp(0.5 * d) / c, np.exp(-0.5 * d) / c, np.full_like(d, nu) / c], axis=-1)
    raise ValueError(f"tie_model must be 'half' or 'davidson', got {tie_model!r}")


def simulate_outcomes(
    theta: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    *,
    tie_rate: float = 0.1,
    tie_model: str = "half",
) -> np.ndarray:
    """Outcome codes (0 = a wins, 1 = b wins, 2 = tie) for model index arrays a, b."""
    probs = outcome_probabilities(np.asarray(theta)[a] - np.asarray(theta)[b], tie_rate, tie_model)
    u = rng.random(len(probs))
    return (u[:, None] > np.cumsum(probs, axis=1)[:, :2]).sum(axis=1)


def simulate_votes(
    strengths: Mapping[str, float] | Sequence[float] | np.ndarray,
    n_votes: int,
    tie_rate: float = 0.1,
    rng: np.random.Generator | int | None = None,
    pair_sampler: PairSampler | None = None,
    *,
    tie_model: str = "half",
    both_bad_share: float = 0.0,
) -> pd.DataFrame:
    """n_votes simulated votes: DataFrame with model_a, model_b, winner.

    strengths: {model name: theta} or an array (models named model_0, model_1, ...).
    pair_sampler(rng, n) -> (a_idx, b_idx) picks the pairs (default: uniform over distinct pairs).
    both_bad_share: the share of ties recorded as "both_bad" instead of "tie".
    """
    names, theta = _strength_table(strengths)
    rng = np.random.default_rng(rng)
    if n_votes < 0:
        raise ValueError("n_votes must be >= 0")
    if not 0.0 <= both_bad_share <= 1.0:
        raise ValueError("both_bad_share must be in [0, 1]")
    a, b = (pair_sampler or uniform_pairs(len(theta)))(rng, n_votes)
    a, b = np.asarray(a), np.asarray(b)
    if np.any(a == b):
        raise ValueError("pair_sampler returned a model paired with itself")
    outcome = simulate_outcomes(theta, a, b, rng, tie_rate=tie_rate, tie_model=tie_model)
    winner = np.array(["model_a", "model_b", "tie", "both_bad"], dtype=object)[outcome]
    both_bad = (outcome == 2) & (rng.random(n_votes) < both_bad_share)
    winner[both_bad] = "both_bad"
    name_arr = np.array(names, dtype=object)
    return pd.DataFrame({"model_a": name_arr[a], "model_b": name_arr[b], "winner": winner})


@dataclass
class SimulatedRater:
    name: str  # rater id as it appears in the votes
    left_bias: float = 0.0  # probability of answering "left" without looking
    noise: float = 0.0  # probability of a uniformly random answer among left / right / tie
    median_seconds: float = 8.0  # typical time per vote (log-normal around it)
    gold_skill: float = 0.98  # probability of answering a gold check correctly when attentive


def simulate_rater_votes(
    strengths: Mapping[str, float] | Sequence[float] | np.ndarray,
    raters: Sequence[SimulatedRater],
    n_items: int,
    raters_per_item: int = 3,
    rng: np.random.Generator | int | None = None,
    *,
    tie_rate: float = 0.1,
    gold_share: float = 0.0,
) -> pd.DataFrame:
    """Votes by individual raters on repeated items (each item is judged by raters_per_item raters).

    Each item is one pair of images (item id "item-<n>"), shown with a random left/right order per rater.
    An attentive rater answers from the Bradley-Terry model; with probability left_bias they answer
    "left", with probability noise a random answer. A share gold_share of the items are gold checks
    (is_gold True, between the placeholder models "gold:good" and "gold:bad", correct answer "gold:good").

    Columns: item, rater, model_a, model_b, left_model, winner, is_gold, gold_correct, seconds.
    """
    names, theta = _strength_table(strengths)
    rng = np.random.default_rng(rng)
    if raters_per_item > len(raters):
        raise ValueError("raters_per_item cannot exceed the number of raters")
    rows = []
    pairs_a, pairs_b = uniform_pairs(len(theta))(rng, n_items)
    for item in range(n_items):
        is_gold = rng.random() < gold_share
        if is_gold:
            model_a, model_b = "gold:good", "gold:bad"
            probs = np.array([1.0, 0.0, 0.0])
        else:
            model_a, model_b = names[pairs_a[item]], names[pairs_b[item]]
            probs = outcome_probabilities(theta[pairs_a[item]] - theta[pairs_b[item]], tie_rate)
        for r in rng.choice(len(raters), size=raters_per_item, replace=False):
            rater = raters[r]
            a_left = rng.random() < 0.5
            u = rng.random()
            if u < rater.left_bias:
                outcome = 0 if a_left else 1
            elif u < rater.left_bias + rater.noise:
                outcome = int(rng.integers(0, 3))
            elif is_gold:
                outcome = 0 if rng.random() < rater.gold_skill else 1
            else:
                outcome = int(rng.choice(3, p=probs))
            rows.append(
                {
                    "item": f"item-{item}",
                    "rater": rater.name,
                    "model_a": model_a,
                    "model_b": model_b,
                    "left_model": model_a if a_left else model_b,
                    "winner": ("model_a", "model_b", "tie")[outcome],
                    "is_gold": is_gold,
                    "gold_correct": (outcome == 0) if is_gold else np.nan,
                    "seconds": float(rater.median_seconds * np.exp(0.4 * rng.standard_normal())),
                }
            )
    votes = pd.DataFrame(rows)
    votes["gold_correct"] = votes["gold_correct"].astype("boolean")
    return votes
