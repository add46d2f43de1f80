"""Votes still needed: for each open campaign decision, how many more votes it will likely take, assuming
the engine keeps choosing pairs with its policy and the current estimates are (nearly) the truth.

The future evidence of each open claim is simulated (a Gaussian random walk in information, fixed seed,
so the same votes give the same answer) until it crosses the anytime-valid boundary of
analysis/confidence_sequences.py; information becomes votes through the engine's policy
(analysis/pair_choice.py). analysis/decisions.py reports the result.
May import numpy, scipy and analysis.bradley_terry, confidence_sequences and pair_choice.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr

from analysis.bradley_terry import (
    bt_covariance,
    bt_covariance_with_tie_shares,
    difference_information,
    tie_shares,
)
from analysis.confidence_sequences import (
    MIXTURE_PRECISION,
    family_alphas,
    information_to_claim,
    log_evidence,
    one_sided_radius,
)
from analysis.pair_choice import allowed_pairs, most_informative_pair, vote_information

PROJECTION_HORIZON = 50.0  # votes-still-needed beyond this many times the current votes are "unknown"
PROJECTION_PATHS = 256  # simulated futures per open claim (fixed seed: the same answer for the same votes)
PROJECTION_GRID = 120  # information steps per simulated future
PROJECTION_SEED = 20240607
PROJECTION_MAX_CORRECTION = 3.0  # standard errors: the most difference_given_open moves an estimate


def project_votes_needed(
    wins: np.ndarray,
    theta: np.ndarray,
    *,
    policy: str,
    allowed: np.ndarray | None,
    min_votes_per_pair: int,
    target_votes_per_pair: int | None,
    exploration: float,
    alpha: float,
    alpha_top: float | None = None,
    ties: np.ndarray | None = None,
    top_evidence: np.ndarray | None = None,
    top_rho: float = MIXTURE_PRECISION,
) -> tuple[int | None, list[int | None]]:
    """Median votes until the top model is certified, and until each neighbour pair is settled.

    For each open claim i > j: the evidence S = I d_hat is a Gaussian random walk in information I
    with drift d; it is simulated forward (PROJECTION_PATHS paths, fixed seed) from today's S with d
    estimated by `difference_given_open`, until it crosses the claim's boundary. Information becomes
    votes through the policy:
    * 'uniform': the information each difference would have after n more votes spread over the allowed
      pairs (coverage first), from the Fisher information at theta; all claims progress together, so
      the top model needs the slowest of its rivals;
    * 'active': the engine spends (1 - exploration) of the votes on one open claim at a time, each vote
      adding the information of the best allowed pair for it (w = p (1 - p) for the direct pair), so
      the top model needs the sum over its open rivals; a neighbour pair comes after the top model and
      the neighbour pairs that need fewer votes.
    None where the median path does not cross within PROJECTION_HORIZON times the current votes.
    alpha_top: the one-sided level of each top-model claim (None: alpha / (K-1), the Bonferroni rule;
    the rule kept across looks, TopModelEvidence, is projected as alpha).
    ties: (K, K) symmetric tie counts when the top model's rule takes each vote's variance from the observed
    ties (rule 'rebalanced_ties', bt_covariance_observed_ties): the top model's claims are then projected
    with that variance, today's and that of future votes (each pair keeping its current tie share,
    tie_shares); the neighbour claims keep the Fisher variance their rule uses. None: Fisher everywhere.
    top_evidence: (K,) log e-values of the rule kept across looks (TopModelEvidence): each rival's claim is
    then continued from its e-value, not from the stateless evidence. While a test's wealth rides on the
    leader, log E_b = offset_b + log M_{L,b} with offset_b fixed (the evidence lost or gained before the bet
    last moved), so E_b reaches 1/alpha when M_{L,b} reaches 1 / (alpha exp(offset_b)): the claim is
    projected at that level (capped at 0.5). top_rho: the prior precision of the mixtures behind top_evidence
    (the rule's; the top model's claims are projected on that boundary). Ignored without top_evidence.
    """
    k = len(theta)
    counts = wins + wins.T
    horizon = PROJECTION_HORIZON * max(float(counts.sum() / 2), 10.0 * k)
    ii, jj, level, slot = _claims(theta, alpha, alpha_top)
    d_hat = theta[ii] - theta[jj]
    cov = bt_covariance(wins, theta)
    info0 = difference_information(cov)[ii, jj]
    share = None if ties is None else tie_shares(wins, np.asarray(ties, dtype=float), theta)
    if share is not None:  # the top model's claims: the variance of its rule
        info_top = difference_information(bt_covariance_with_tie_shares(wins, share, theta))[ii, jj]
        info0 = np.where(slot == 0, info_top, info0)
    rho = np.full(len(ii), MIXTURE_PRECISION)
    if top_evidence is not None:  # continue each rival's e-value, not the stateless evidence
        rho = np.where(slot == 0, top_rho, rho)
        offset = np.asarray(top_evidence, dtype=float)[jj] - log_evidence(d_hat, info0, rho=rho)
        with np.errstate(over="ignore"):  # a huge offset: the claim is made already, its level capped at 0.5
            level = np.where(slot == 0, np.clip(level * np.exp(offset), 1e-300, 0.5), level)
    is_open = log_evidence(d_hat, info0, rho=rho) < np.log(1.0 / level)
    eligible = allowed_pairs(counts, allowed, target_votes_per_pair)
    candidates = eligible & np.triu(np.ones((k, k), dtype=bool), 1)

    # 1. information still needed, per claim and path
    rng = np.random.default_rng(PROJECTION_SEED)
    more_info = np.zeros((len(ii), PROJECTION_PATHS))
    for c in np.flatnonzero(is_open):
        more_info[c] = _information_to_cross(d_hat[c], info0[c], level[c], rng, rho=float(rho[c]))

    # 2. information -> votes under the policy
    coverage = float(np.maximum(min_votes_per_pair - counts, 0.0)[candidates].sum())
    if not candidates.any():
        more_votes = np.where(more_info > 0, np.inf, 0.0)
    elif policy == "uniform":
        more_votes = _uniform_votes(
            more_info,
            counts,
            theta,
            candidates,
            ii,
            jj,
            info0,
            coverage,
            min_votes_per_pair,
            target_votes_per_pair,
            horizon,
            share,
            slot == 0,
        )
    else:
        rate = _active_rates(theta, cov, eligible, ii, jj, info0, is_open, share, slot == 0)
        more_votes = _active_votes(more_info, rate, slot, coverage, exploration)

    # 3. medians
    top_needed = float(np.median(more_votes[slot == 0].max(axis=0)))
    pair_needed = [float(np.median(more_votes[slot == r][0])) for r in range(1, k)]

    def as_votes(x: float) -> int | None:
        return None if not np.isfinite(x) or x > horizon else int(math.ceil(x))

    return as_votes(top_needed), [as_votes(x) for x in pair_needed]


def _claims(
    theta: np.ndarray, alpha: float, alpha_top: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The claims to watch, as arrays (i, j, level, slot): "i beats j" at one-sided `level`; slot 0 is the
    top model (the leader against each rival), slot r the r-th neighbours in the current order."""
    k = len(theta)
    split_top, alpha_order = family_alphas(k, alpha)
    alpha_top = split_top if alpha_top is None else alpha_top
    leader = int(np.argmax(theta))
    order = np.argsort(-theta, kind="stable")
    checks = [(leader, j, alpha_top, 0) for j in range(k) if j != leader]
    checks += [(int(order[r]), int(order[r + 1]), alpha_order, r + 1) for r in range(k - 1)]
    ii = np.array([c[0] for c in checks])
    jj = np.array([c[1] for c in checks])
    level = np.array([c[2] for c in checks])
    slot = np.array([c[3] for c in checks])
    return ii, jj, level, slot


def _active_rates(
    theta: np.ndarray,
    cov: np.ndarray,
    eligible: np.ndarray,
    ii: np.ndarray,
    jj: np.ndarray,
    info0: np.ndarray,
    is_open: np.ndarray,
    share: np.ndarray | None = None,
    tie_claims: np.ndarray | None = None,
) -> np.ndarray:
    """Information each open claim gains per vote when the engine spends it on the best allowed pair for it.

    share, tie_claims: tie shares per pair, and the claims measured with each vote's variance from them: one
    vote on pair (a, b) then counts w / (w - P(tie) / 4) times its Fisher information w (its score varies
    by w - P(tie)/4, not w), exact for the direct pair."""
    k = len(theta)
    weight = vote_information(theta)
    rate = np.zeros(len(ii))
    for c in np.flatnonzero(is_open):
        contrast = np.zeros((1, k))
        contrast[0, ii[c]], contrast[0, jj[c]] = 1.0, -1.0
        a, b = most_informative_pair(contrast, np.ones(1), cov, weight, eligible)
        x = np.zeros(k)
        x[a], x[b] = 1.0, -1.0
        cx, xsx = contrast[0] @ cov @ x, x @ cov @ x
        var = 1.0 / _fisher_information(cov, ii[c], jj[c])
        rate[c] = 1.0 / (var - weight[a, b] * cx**2 / (1.0 + weight[a, b] * xsx)) - 1.0 / var
        if share is not None and tie_claims is not None and tie_claims[c]:
            rate[c] *= weight[a, b] / max(weight[a, b] - share[a, b] / 4.0, 0.25 * weight[a, b])
    return rate


def _fisher_information(cov: np.ndarray, i: int, j: int) -> float:
    return 1.0 / max(cov[i, i] + cov[j, j] - 2.0 * cov[i, j], 1e-300)


def _active_votes(
    more_info: np.ndarray, rate: np.ndarray, slot: np.ndarray, coverage: float, exploration: float
) -> np.ndarray:
    """Votes until each claim gains `more_info` when the engine focuses on one open claim at a time: the
    top model's rivals one after another, then each neighbour pair after those that need fewer votes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        focused = np.where(more_info > 0, more_info / (rate[:, None] * (1.0 - exploration)), 0.0)
    top = coverage + focused[slot == 0].sum(axis=0)
    more_votes = np.zeros_like(focused)
    more_votes[slot == 0] = top
    pairs = focused[slot > 0]  # (K-1, paths)
    earlier = np.where(pairs[None, :, :] <= pairs[:, None, :], pairs[None, :, :], 0.0)  # (r, r', paths)
    more_votes[slot > 0] = np.where(pairs > 0, top[None, :] + earlier.sum(axis=1), 0.0)
    return more_votes


def _information_to_cross(
    d_hat: float, info0: float, alpha: float, rng: np.random.Generator, *, rho: float = MIXTURE_PRECISION
) -> np.ndarray:
    """(paths,) information still needed until the evidence for one open claim crosses its boundary.

    The evidence S = I d_hat continues as S(I) = S_now + d (I - I_now) + W(I - I_now), W a Brownian
    motion, d = difference_given_open; inf for paths that do not cross on the grid. rho: the boundary's mixture.
    """
    if not info0 > 0:
        return np.full(PROJECTION_PATHS, np.inf)
    drift = float(difference_given_open(d_hat, info0, alpha, rho=rho))
    if drift <= 0:
        return np.full(PROJECTION_PATHS, np.inf)
    reach = min(max(4.0 * float(information_to_claim(drift, alpha, rho=rho)) / info0, 4.0), 1e4)
    grid = info0 * np.geomspace(1.0, reach, PROJECTION_GRID + 1)[1:]  # (G,)
    steps = np.diff(np.concatenate([[info0], grid]))
    walk = info0 * d_hat + np.cumsum(
        drift * steps + np.sqrt(steps) * rng.standard_normal((PROJECTION_PATHS, len(grid))), axis=1
    )
    crossed = walk >= grid * one_sided_radius(grid, alpha, rho=rho)
    first = np.where(crossed.any(axis=1), grid[crossed.argmax(axis=1)], np.inf)
    return first - info0


def _uniform_votes(
    more_info: np.ndarray,
    counts: np.ndarray,
    theta: np.ndarray,
    candidates: np.ndarray,
    ii: np.ndarray,
    jj: np.ndarray,
    info0: np.ndarray,
    coverage: float,
    min_votes: int,
    target: int | None,
    horizon: float,
    share: np.ndarray | None = None,
    tie_claims: np.ndarray | None = None,
) -> np.ndarray:
    """Votes until each claim gains `more_info` when votes are spread evenly over the allowed pairs.

    share, tie_claims: as _active_rates; those claims' information is the observed-ties sandwich of the
    projected counts, each pair keeping its tie share."""
    k = len(theta)
    p_win = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
    base = counts.copy()
    base[candidates] = np.maximum(base[candidates], min_votes)
    base = np.triu(base, 1)
    base = base + base.T
    added = coverage + np.geomspace(1.0, horizon, PROJECTION_GRID)
    gained = np.zeros((len(ii), len(added)))
    for g, votes in enumerate(added):
        spread = np.zeros((k, k))
        spread[candidates] = (votes - coverage) / candidates.sum()
        spread = spread + spread.T
        projected = base + spread
        if target is not None:
            projected = np.where(base < target, np.minimum(projected, target), base)
        info = difference_information(bt_covariance(projected * p_win, theta))[ii, jj]
        if share is not None and tie_claims is not None:
            tied = difference_information(bt_covariance_with_tie_shares(projected * p_win, share, theta))[ii, jj]
            info = np.where(tie_claims, tied, info)
        gained[:, g] = info - info0
    out = np.zeros_like(more_info)
    for c in range(len(ii)):
        need = more_info[c]
        reachable = need <= gained[c, -1]
        out[c] = np.where(
            need > 0,
            np.where(reachable, np.interp(need, np.maximum.accumulate(gained[c]), added), np.inf),
            0.0,
        )
    return out


def _inverse_mills(x: np.ndarray) -> np.ndarray:
    """phi(x) / Phi(x), computed stably."""
    return np.exp(-0.5 * x**2 - 0.5 * math.log(2.0 * math.pi) - log_ndtr(x))


def difference_given_open(d_hat, information, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Estimate of a difference given that its claim is still open (d_hat below the boundary).

    A campaign that is still running is one whose estimates have not crossed yet, so the open ones
    are biased low; using d_hat as the truth overstates the votes still needed (by about 1.5x in our
    simulations). This is the maximum-likelihood estimate of d from d_hat ~ N(d, 1/I) truncated to
    d_hat < boundary, capped at PROJECTION_MAX_CORRECTION standard errors above d_hat.
    """
    d_hat = np.asarray(d_hat, dtype=float)
    root_info = np.sqrt(np.asarray(information, dtype=float))
    b = root_info * (one_sided_radius(information, alpha, rho=rho) - d_hat)  # standard errors below the boundary
    lo = np.zeros_like(d_hat)
    hi = np.full_like(d_hat, PROJECTION_MAX_CORRECTION)
    for _ in range(40):  # u - lambda(b - u) increases in u: bisection for its root
        mid = 0.5 * (lo + hi)
        up = mid - _inverse_mills(b - mid) < 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return d_hat + 0.5 * (lo + hi) / np.maximum(root_info, 1e-300)
