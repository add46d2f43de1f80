"""Simulated votes from known model strengths, for tests, benchmarks and planning ("how many votes will it
take?"): single votes, tables of votes, votes by individual raters, and whole adaptive campaigns.

One vote model for all of them (`vote_model`): model a meets model b with strengths theta (natural-log
Bradley-Terry units) and d = theta_a - theta_b.

* tie_model="half" (default): a tie happens with probability tie_rate, capped at 2 min(p, 1 - p) for very
  uneven pairs, and the decisive votes are split so that the expected score (win 1, tie 1/2, loss 0) is
  exactly p = sigmoid(d): P(a wins) = p - P(tie) / 2. The ties-as-half-wins Bradley-Terry model is then
  the true model and the (centred) strengths its truth.
* tie_model="davidson": Davidson's model, the truth for the Davidson fits, with nu chosen so that equal
  models tie with probability tie_rate: nu = 2 * tie_rate / (1 - tie_rate);
  P(a wins) = e^{d/2} / (e^{d/2} + e^{-d/2} + nu), P(tie) = nu / (e^{d/2} + e^{-d/2} + nu).

Every outcome is drawn from one uniform number, in the order tie, a wins, b wins (`draw_outcomes`).
Output columns follow the vote schema of analysis/votes.py: model_a, model_b, winner in
{"model_a", "model_b", "tie", "both_bad"}; `simulate_rater_votes` adds rater, item, left_model,
is_gold, gold_correct and seconds. `simulate_campaign` runs the site's own pair choice
(analysis/pair_choice.py) and decisions (analysis/decisions.py) on simulated votes.
May import numpy, pandas and analysis.bradley_terry, confidence_sequences, pair_choice and decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bradley_terry import bt_covariance, bt_covariance_observed_ties, bt_mle, difference_information
from analysis.confidence_sequences import DEFAULT_ALPHA, TopModelEvidence
from analysis.decisions import TOP_RULES, campaign_decisions, top_rule_settings
from analysis.pair_choice import DEFAULT_EXPLORATION, choose_model_pair, leaderboard_separated

PairSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
TIE_MODELS = ("half", "davidson")
STOPPING_RULES = TOP_RULES  # the top model's rule: stateless split over rivals; one e-process per model kept
#   across looks (analysis.confidence_sequences.TopModelEvidence); the same with each vote's variance from the
#   observed ties (bradley_terry.bt_covariance_observed_ties); the same with the mixture's prior precision 8
A_WINS, B_WINS, TIE = 0, 1, 2  # outcome codes


# --------------------------------------------------------------------------------------------------
# The vote model
# --------------------------------------------------------------------------------------------------


def vote_model(d, tie_rate: float, tie_model: str = "half") -> tuple[np.ndarray, np.ndarray]:
    """(p, tie) for strength differences d = theta_a - theta_b: the expected score of a (ties half) and
    the probability of a tie. P(a wins) = p - tie / 2, P(b wins) = 1 - p - tie / 2."""
    if not 0.0 <= tie_rate < 1.0:
        raise ValueError(f"tie_rate must be in [0, 1), got {tie_rate}")
    d = np.asarray(d, dtype=float)
    if tie_model == "half":
        p = 1.0 / (1.0 + np.exp(-d))
        return p, np.minimum(tie_rate, 2.0 * np.minimum(p, 1.0 - p))
    if tie_model == "davidson":
        nu = 2.0 * tie_rate / (1.0 - tie_rate)
        c = 2.0 * np.cosh(0.5 * d) + nu
        tie = nu / c
        return np.exp(0.5 * d) / c + 0.5 * tie, tie
    raise ValueError(f"tie_model must be 'half' or 'davidson', got {tie_model!r}")


def outcome_probabilities(d, tie_rate: float, tie_model: str = "half") -> np.ndarray:
    """(..., 3) probabilities of [a wins, b wins, tie] for strength differences d = theta_a - theta_b."""
    p, tie = vote_model(d, tie_rate, tie_model)
    return np.stack([p - tie / 2, 1.0 - p - tie / 2, tie], axis=-1)


def draw_outcomes(u, p, tie):
    """Outcome codes (A_WINS, B_WINS, TIE) from uniform numbers u in [0, 1) and the vote model's (p, tie):
    a tie when u < tie, a win of a when u < tie + P(a wins), else a win of b."""
    return np.where(u < tie, TIE, np.where(u < tie + p - 0.5 * tie, A_WINS, B_WINS))


def simulate_vote(rng: np.random.Generator, strengths: np.ndarray, i: int, j: int, tie_rate: float) -> float:
    """Score of model i in one simulated vote against j (ties as half, see `vote_model`): 1 win, 0.5 tie,
    0 loss. Draws one uniform number from rng."""
    p, tie = vote_model(strengths[i] - strengths[j], tie_rate)
    return (1.0, 0.0, 0.5)[int(draw_outcomes(rng.random(), p, tie))]


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
    p, tie = vote_model(np.asarray(theta)[a] - np.asarray(theta)[b], tie_rate, tie_model)
    return draw_outcomes(rng.random(len(p)), p, tie)


# --------------------------------------------------------------------------------------------------
# Tables of votes
# --------------------------------------------------------------------------------------------------


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


def simulate_style_votes(
    strengths: Mapping[str, float],
    covariate_means: Mapping[str, float],
    effect: float,
    n_votes: int,
    *,
    covariate: str = "brightness",
    images_per_model: int = 100,
    tie_rate: float = 0.1,
    rng: np.random.Generator | int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Votes in which a per-image covariate sways the raters, for testing style control.

    Each model has `images_per_model` images whose covariate is N(covariate_means[model], 1); a vote between
    image A of model a and image B of model b follows the vote model with d = theta_a - theta_b +
    effect * (x_A - x_B), i.e. each image is a pseudo-model of strength theta + effect * x.
    Returns (votes with model_a, model_b, winner, image_left, image_right (= model_a's and model_b's image),
    covariates indexed by image with the one `covariate` column).
    """
    rng = np.random.default_rng(rng)
    names, theta = _strength_table(dict(strengths))
    means = np.array([float(covariate_means.get(name, 0.0)) for name in names])
    x = means[:, None] + rng.standard_normal((len(names), images_per_model))  # (K, I)
    image_strength = (theta[:, None] + effect * x).ravel()  # (K * I,), image k * I + n
    a, b = uniform_pairs(len(names))(rng, n_votes)
    image_a = a * images_per_model + rng.integers(0, images_per_model, n_votes)
    image_b = b * images_per_model + rng.integers(0, images_per_model, n_votes)
    outcome = simulate_outcomes(image_strength, image_a, image_b, rng, tie_rate=tie_rate)
    image_names = np.array([f"{name}/{n}" for name in names for n in range(images_per_model)], dtype=object)
    name_arr = np.array(names, dtype=object)
    votes = pd.DataFrame(
        {
            "model_a": name_arr[a],
            "model_b": name_arr[b],
            "winner": np.array(["model_a", "model_b", "tie"], dtype=object)[outcome],
            "image_left": image_names[image_a],
            "image_right": image_names[image_b],
        }
    )
    covariates = pd.DataFrame({covariate: x.ravel()}, index=pd.Index(image_names, name="image"))
    return votes, covariates


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
    An attentive rater answers from `vote_model`; with probability left_bias they answer
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
        else:
            model_a, model_b = names[pairs_a[item]], names[pairs_b[item]]
            p, tie = vote_model(theta[pairs_a[item]] - theta[pairs_b[item]], tie_rate)
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
                outcome = int(draw_outcomes(rng.random(), p, tie))
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
    top_evidence: list = field(default_factory=list)  # rule 'rebalanced': (K,) log e-values at every look
    ties_at_looks: list = field(default_factory=list)  # with keep_looks: (K, K) tie counts at every look
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
    run_to_the_end: bool = False,
    rule: str = "bonferroni",
    steer_by_rule: bool = True,
) -> CampaignRun:
    """Run one campaign: the engine picks each pair (choose_model_pair), simulated raters vote, and every
    `look_every` votes the BT fit is refreshed (warm start) and campaign_decisions is checked.

    Stops when the top model is certified (and, with until_separated, also once the leader's plain 95%
    interval has cleared the runner-up's: the issue-6 measure), or at max_votes; with run_to_the_end only at
    max_votes (the null checks follow every e-process over the whole campaign).
    rule: how the top model is certified, 'bonferroni' (campaign_decisions alone: each rival at
    alpha / (K-1)), 'rebalanced' (a TopModelEvidence that sees every look, passed as top_evidence),
    'rebalanced_ties' (the same, its informations from bt_covariance_observed_ties) or 'rebalanced_ties_rho8'
    (the same with the mixtures' prior precision 8; analysis.decisions.top_rule_settings).
    steer_by_rule: the engine's pair choice focuses by the rule's evidence (choose_model_pair's
    top_evidence); False: by the stateless evidence whatever the rule (what the site's engine did before
    it passed the replayed evidence), the certification unchanged.
    """
    if rule not in STOPPING_RULES:
        raise ValueError(f"rule must be one of {STOPPING_RULES}, got {rule!r}")
    strengths = np.asarray(strengths, dtype=float)
    strengths = strengths - strengths.mean()
    k = len(strengths)
    run = CampaignRun(strengths=strengths, policy=policy)
    wins = np.zeros((k, k))
    ties = np.zeros((k, k))
    theta = None
    kept = top_rule_settings(rule) if rule != "bonferroni" else None
    tracker = TopModelEvidence(k, rho=kept["rho"]) if kept is not None else None
    top_evidence = None
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
                top_evidence=top_evidence if steer_by_rule else None,
            )
            score = simulate_vote(rng, strengths, i, j, tie_rate)
            wins[i, j] += score
            wins[j, i] += 1.0 - score
            if score == 0.5:
                ties[i, j] += 1.0
                ties[j, i] += 1.0
            run.pairs.append((i, j))
        run.votes += look_every
        theta = bt_mle(wins, theta0=theta)
        if tracker is not None:
            diff = theta[:, None] - theta[None, :]
            if kept is not None and kept["tie_variance"]:
                cov = bt_covariance_observed_ties(wins, ties, theta)
            else:
                cov = bt_covariance(wins, theta)
            top_evidence = tracker.look(diff, difference_information(cov), theta)
            run.top_evidence.append(top_evidence)
        if keep_looks:
            run.looks.append((run.votes, wins.copy(), theta.copy()))
            run.ties_at_looks.append(ties.copy())
        if run.certified_at is None:
            decisions = campaign_decisions(wins, alpha, theta=theta, project=False, top_evidence=top_evidence)
            if decisions["top_model"]["certified"]:
                run.certified_at = run.votes
                run.certified_model = decisions["top_model"]["model"]
                run.final_decisions = decisions
        if until_separated and run.separated_at is None:
            if leaderboard_separated(theta, bt_covariance(wins, theta)):
                run.separated_at = run.votes
                run.separated_model = int(np.argmax(theta))
        if run_to_the_end:
            continue
        if run.certified_at is not None and (not until_separated or run.separated_at is not None):
            break
    if run.final_decisions is None:
        run.final_decisions = campaign_decisions(wins, alpha, theta=theta, project=False, top_evidence=top_evidence)
    return run
