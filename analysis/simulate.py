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

`simulate_vote` and `simulate_campaign` run the site's own pair choice (analysis/pair_choice.py) and
decisions (analysis/decisions.py) on simulated votes, one vote at a time.
May import numpy, pandas and analysis.bradley_terry, confidence_sequences, pair_choice and decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bradley_terry import bt_covariance, bt_mle
from analysis.confidence_sequences import DEFAULT_ALPHA
from analysis.decisions import campaign_decisions
from analysis.pair_choice import DEFAULT_EXPLORATION, choose_model_pair, leaderboard_separated

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


# --------------------------------------------------------------------------------------------------
# Whole campaigns: the site's pair choice and decisions on simulated votes
# --------------------------------------------------------------------------------------------------


def simulate_vote(rng: np.random.Generator, strengths: np.ndarray, i: int, j: int, tie_rate: float) -> float:
    """Score of model i in one simulated vote against j: 1 win, 0.5 tie, 0 loss.

    Ties happen with probability tie_rate (capped at 2 min(p, 1 - p) for very uneven pairs), and the
    decisive votes are split so that E[score] = sigmoid(strength_i - strength_j) exactly: the
    ties-as-half-wins Bradley-Terry model is then the true model and `strengths` (centred) its truth.
    """
    p = 1.0 / (1.0 + np.exp(strengths[j] - strengths[i]))
    tie = min(tie_rate, 2.0 * min(p, 1.0 - p))
    u = rng.random()
    if u < tie:
        return 0.5
    return 1.0 if u < tie + p - 0.5 * tie else 0.0


@dataclass
class CampaignRun:
    """What happened in one simulated campaign."""

    strengths: np.ndarray  # (K,) true BT strengths, centred
    policy: str  # 'active' or 'uniform'
    votes: int = 0  # votes cast when the simulation ended
    certified_at: int | None = None  # votes when campaign_decisions first certified a top model
    certified_model: int | None = None  # which model it certified
    separated_at: int | None = None  # votes when the leader's plain 95% interval first cleared the runner-up's
    separated_model: int | None = None  # the leader at that moment
    pairs: list = field(default_factory=list)  # (i, j) of every vote, in order
    looks: list = field(default_factory=list)  # (votes, wins (K, K) copy, theta (K,)) at every look
    final_decisions: dict | None = None  # campaign_decisions at certification (or at the end)


def simulate_campaign(
    strengths: np.ndarray,
    rng: np.random.Generator,
    *,
    policy: str = "active",
    alpha: float = DEFAULT_ALPHA,
    min_votes_per_pair: int = 2,
    exploration: float = DEFAULT_EXPLORATION,
    tie_rate: float = 0.1,
    look_every: int = 25,
    max_votes: int = 200_000,
    until_separated: bool = False,
    keep_looks: bool = False,
) -> CampaignRun:
    """Run one campaign: the engine picks each pair (choose_model_pair), simulated raters vote, and every
    `look_every` votes the BT fit is refreshed (warm start) and campaign_decisions is checked.

    Stops when the top model is certified (and, with until_separated, also once the leader's plain 95%
    interval has cleared the runner-up's: the issue-6 measure), or at max_votes.
    """
    strengths = np.asarray(strengths, dtype=float)
    strengths = strengths - strengths.mean()
    k = len(strengths)
    run = CampaignRun(strengths=strengths, policy=policy)
    wins = np.zeros((k, k))
    theta = None
    while run.votes < max_votes:
        for _ in range(look_every):
            i, j = choose_model_pair(
                wins,
                None,
                rng,
                min_votes_per_pair=min_votes_per_pair,
                target_votes_per_pair=None,
                policy=policy,
                exploration=exploration,
                alpha=alpha,
                theta=theta,
            )
            score = simulate_vote(rng, strengths, i, j, tie_rate)
            wins[i, j] += score
            wins[j, i] += 1.0 - score
            run.pairs.append((i, j))
        run.votes += look_every
        theta = bt_mle(wins, theta0=theta)
        if keep_looks:
            run.looks.append((run.votes, wins.copy(), theta.copy()))
        if run.certified_at is None:
            decisions = campaign_decisions(wins, alpha, theta=theta, project=False)
            if decisions["top_model"]["certified"]:
                run.certified_at = run.votes
                run.certified_model = decisions["top_model"]["model"]
                run.final_decisions = decisions
        if until_separated and run.separated_at is None:
            if leaderboard_separated(theta, bt_covariance(wins, theta)):
                run.separated_at = run.votes
                run.separated_model = int(np.argmax(theta))
        if run.certified_at is not None and (not until_separated or run.separated_at is not None):
            break
    if run.final_decisions is None:
        run.final_decisions = campaign_decisions(wins, alpha, theta=theta, project=False)
    return run
