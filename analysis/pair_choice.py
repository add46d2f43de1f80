"""Which pair of models a rater sees next: the rating engine's pair-choice policy (active sampling).

The site's assignment engine (evalsite/rating/engine.py) and the simulations (analysis/simulate.py,
bench/adaptive_campaigns.py) call the same function, `choose_model_pair`, so what the bench measures
is what the site does. May import numpy, analysis.bradley_terry and analysis.confidence_sequences.

Policy 'active', per request:
1. coverage first: an allowed pair with fewer than `min_votes_per_pair` votes (the fewest first);
2. with probability `exploration` (10%), a uniformly random allowed pair -- every allowed pair keeps a
   floor of votes, so no model is ever starved;
3. otherwise the least-certain open decision (the anytime-valid evidence of the stateless stopping rule,
   analysis/confidence_sequences.py, or with top_evidence the rule kept across looks; the site's engine
   passes none, docs/adaptive-campaigns.md, "Issue 15 follow-ups"): while the top model is not certified,
   the leader against the rival it has the least evidence of beating; once it is, the leaderboard's own
   95% intervals of the top two until they stop overlapping (so the page shows what the decision says);
   then the least-settled pair of neighbours in the ranking. The vote goes to the
   allowed pair that most shrinks the variance of that target (one vote on pair x adds information
   w_x x x^T, so by Sherman-Morrison Var(c^T theta) falls by w_x (c^T S x)^2 / (1 + w_x x^T S x), S the
   covariance): usually the pair itself, another pair when the direct one is not allowed for this rater
   or an indirect comparison is more informative.
Policy 'uniform': coverage first, then a uniformly random allowed pair.

Why this does not starve a model that could still be best: the campaign stops only when the leader
beats *every* model at an anytime-valid level; a model that might still be best has little evidence
against it, so it becomes the least-certain rival and gets the votes, and exploration adds a floor.
"""

from __future__ import annotations

import numpy as np

from analysis.bradley_terry import bt_covariance, bt_mle, check_wins, difference_information
from analysis.confidence_sequences import DEFAULT_ALPHA, family_alphas, log_evidence

DEFAULT_EXPLORATION = 0.1  # share of votes given to a uniformly random allowed pair
POLICIES = ("active", "uniform")
LEADERBOARD_Z = 1.959963984540054  # the leaderboard's plain 95% per-model intervals
MAX_WEIGHTED_GAP = 2.5  # nats: per-vote information is computed with score gaps clipped here, so a
#   model that never lost yet (a huge fitted score) still counts as worth comparing


class NoPairAvailable(ValueError):
    """Every pair is either not allowed or has reached its target number of votes."""


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def allowed_pairs(counts: np.ndarray, allowed: np.ndarray | None, target_votes_per_pair: int | None):
    """(K, K) bool, symmetric: pairs that may be shown (allowed, below target, not a model with itself)."""
    k = len(counts)
    ok = ~np.eye(k, dtype=bool)
    if allowed is not None:
        ok &= allowed & allowed.T
    if target_votes_per_pair is not None:
        ok &= counts < target_votes_per_pair
    return ok


def vote_information(theta: np.ndarray) -> np.ndarray:
    """(K, K) Fisher information of one vote on each pair, p (1 - p), with gaps clipped (see module)."""
    gap = np.clip(theta[:, None] - theta[None, :], -MAX_WEIGHTED_GAP, MAX_WEIGHTED_GAP)
    p = 1.0 / (1.0 + np.exp(-gap))
    return p * (1.0 - p)


def leaderboard_separated(theta: np.ndarray, cov: np.ndarray) -> bool:
    """Whether the leader's plain 95% interval (per model, sum-to-zero, as the leaderboard shows it) lies
    entirely above the runner-up's."""
    first, second = np.argsort(-theta, kind="stable")[:2]
    half = LEADERBOARD_Z * np.sqrt(np.maximum(np.diag(cov), 0.0))
    return bool(theta[first] - half[first] > theta[second] + half[second])


def focus_contrasts(
    theta: np.ndarray, cov: np.ndarray, alpha: float = DEFAULT_ALPHA, top_evidence: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """What the next vote should learn about, as contrasts c (m, K) of theta with weights (m,).

    1. Top model not certified: the leader minus the rival it has the least evidence of beating
       (anytime-valid evidence at the level campaign_decisions uses; with top_evidence, (K,) log
       e-values against "b is the best" kept across looks, the rival whose e-value is lowest, at 1/alpha).
    2. Certified, but the leaderboard's 95% intervals of the top two still overlap (the page would
       show a tie the decision already broke): shrink sd_1 + sd_2, i.e. the contrasts e_1 and e_2
       weighted by d(sd_i)/d(Var_i) = 1 / (2 sd_i).
    3. Then the neighbours in the ranking with the least evidence among those not yet settled.
    None when everything is decided.
    """
    k = len(theta)
    info = difference_information(cov)
    alpha_top, alpha_order = family_alphas(k, alpha)
    leader = int(np.argmax(theta))
    if top_evidence is None:
        evidence = log_evidence(theta[leader] - theta, info[leader])
    else:
        evidence, alpha_top = np.array(top_evidence, dtype=float), alpha
    evidence[leader] = np.inf
    if evidence.min() < np.log(1.0 / alpha_top):
        return _pair_contrast(k, leader, int(np.argmin(evidence))), np.ones(1)
    if not leaderboard_separated(theta, cov):
        top_two = np.argsort(-theta, kind="stable")[:2]
        contrasts = np.zeros((2, k))
        contrasts[[0, 1], top_two] = 1.0
        sd = np.sqrt(np.maximum(np.diag(cov)[top_two], 1e-12))
        return contrasts, 0.5 / sd
    order = np.argsort(-theta, kind="stable")
    hi, lo = order[:-1], order[1:]
    evidence = log_evidence(theta[hi] - theta[lo], info[hi, lo])
    r = int(np.argmin(evidence))
    if evidence[r] < np.log(1.0 / alpha_order):
        return _pair_contrast(k, int(hi[r]), int(lo[r])), np.ones(1)
    return None


def _pair_contrast(k: int, i: int, j: int) -> np.ndarray:
    c = np.zeros((1, k))
    c[0, i], c[0, j] = 1.0, -1.0
    return c


def most_informative_pair(
    contrasts: np.ndarray, weights: np.ndarray, cov: np.ndarray, vote_weight: np.ndarray, eligible: np.ndarray
) -> tuple[int, int]:
    """The eligible pair (a < b) whose next vote most reduces sum_m weights_m Var(contrasts_m . theta).

    One vote on x = e_a - e_b adds information w x x^T, so Var(c^T theta) drops by
    w (c^T S x)^2 / (1 + w x^T S x) (Sherman-Morrison), S = cov, w = vote_weight[a, b].
    """
    g = contrasts @ cov  # (m, K) c^T S
    diag = np.diag(cov)
    q = diag[:, None] + diag[None, :] - 2.0 * cov  # (K, K) x^T S x
    gx2 = np.einsum("m,mab->ab", weights, (g[:, :, None] - g[:, None, :]) ** 2)  # (K, K)
    gain = vote_weight * gx2 / (1.0 + vote_weight * q)
    gain = np.where(np.triu(eligible, 1), gain, -np.inf)
    a, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
    return int(a), int(b)


def _random_pair(candidates: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    a, b = np.nonzero(candidates)
    pick = int(rng.integers(len(a)))
    return int(a[pick]), int(b[pick])


def choose_model_pair(
    wins: np.ndarray,
    allowed: np.ndarray | None,
    rng: np.random.Generator,
    *,
    min_votes_per_pair: int,
    target_votes_per_pair: int | None,
    policy: str = "active",
    exploration: float = DEFAULT_EXPLORATION,
    alpha: float = DEFAULT_ALPHA,
    theta: np.ndarray | None = None,
    top_evidence: np.ndarray | None = None,
    cov: np.ndarray | None = None,
) -> tuple[int, int]:
    """The model pair (i, j), i < j, to show next. The caller randomises left/right.

    wins: (K, K) win counts so far (ties as 0.5 / 0.5). allowed: (K, K) bool, pairs this rater may see
    (None: all). min_votes_per_pair: coverage before anything adaptive. target_votes_per_pair: a pair
    with this many votes is never chosen again (None: no cap). policy: 'active' or 'uniform'.
    exploration: share of uniformly random choices under 'active'. alpha: the campaign's error rate (to
    know which decisions are still open). theta: a recent BT fit of these models to reuse (the site can
    cache one per campaign and refresh it every few dozen votes; None: fit now). cov: bt_covariance(wins,
    theta) when the caller cached it with theta for these very counts (None: computed now).
    top_evidence: (K,) log e-values against "b is the best" from a
    TopModelEvidence kept across looks, when the campaign certifies with that rule (None: the stateless
    rule). Raises NoPairAvailable when no pair may be shown.
    """
    wins = check_wins(wins)
    k = wins.shape[0]
    allowed = _check_request(k, allowed, rng, min_votes_per_pair, target_votes_per_pair, policy, exploration)
    counts = wins + wins.T
    eligible = allowed_pairs(counts, allowed, target_votes_per_pair)
    candidates = np.triu(eligible, 1)
    if not candidates.any():
        raise NoPairAvailable("no model pair can be shown: all are disallowed or have reached their target")
    short = candidates & (counts < min_votes_per_pair)
    if short.any():  # coverage phase: the allowed pairs with the fewest votes
        fewest = short & (counts == counts[short].min())
        return _random_pair(fewest, rng)
    if policy == "uniform" or rng.random() < exploration:
        return _random_pair(candidates, rng)

    theta = bt_mle(wins) if theta is None else np.asarray(theta, dtype=float)
    if theta.shape != (k,):
        raise ValueError(f"theta must have shape ({k},), got {theta.shape}")
    cov = bt_covariance(wins, theta) if cov is None else np.asarray(cov, dtype=float)
    if cov.shape != (k, k):
        raise ValueError(f"cov must have shape ({k}, {k}), got {cov.shape}")
    focus = focus_contrasts(theta, cov, alpha, top_evidence)
    if focus is None:  # every decision made: keep the counts balanced
        return _random_pair(candidates & (counts == counts[candidates].min()), rng)
    return most_informative_pair(*focus, cov, vote_information(theta), eligible)


def _check_request(
    k: int,
    allowed: np.ndarray | None,
    rng: np.random.Generator,
    min_votes_per_pair: int,
    target_votes_per_pair: int | None,
    policy: str,
    exploration: float,
) -> np.ndarray | None:
    """Refuse bad arguments to choose_model_pair with a clear message; return `allowed` as an array."""
    if allowed is not None:
        allowed = np.asarray(allowed)
        if allowed.shape != (k, k) or allowed.dtype != bool:
            raise ValueError(f"allowed must be a ({k}, {k}) bool matrix, got {allowed.dtype} {allowed.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator")
    if int(min_votes_per_pair) != min_votes_per_pair or min_votes_per_pair < 0:
        raise ValueError(f"min_votes_per_pair must be a non-negative integer, got {min_votes_per_pair}")
    if target_votes_per_pair is not None and target_votes_per_pair < 1:
        raise ValueError(f"target_votes_per_pair must be >= 1 or None, got {target_votes_per_pair}")
    check_policy(policy)
    if not 0.0 <= exploration <= 1.0:
        raise ValueError(f"exploration must be in [0, 1], got {exploration}")
    return allowed
