"""Campaign decisions that stay valid when pairs are chosen adaptively and the results are checked often.

A campaign's dashboard asks the same questions after every vote: is the top model certain yet, which
neighbours in the ranking are settled, how many more votes will it take? A plain 95% interval checked
again and again, on votes that an adaptive engine steered towards the current leaders, certifies the
wrong winner far too often (13.5% with 4 models, 68% with 20 in our notes). Every decision here uses
an *anytime-valid confidence sequence* instead: a boundary that the estimate crosses wrongly with
probability at most alpha over the whole campaign, however often one looks and whichever pairs the
engine chose, because it is built from a test martingale (Ville's inequality), not a fixed-n test.

The boundary (Robbins' normal mixture) on a Bradley-Terry score difference d = theta_i - theta_j:
with I = 1 / Var(d_hat) the information about d (from the Fisher information of all votes, direct
and indirect), the statistic S = I * (d_hat - d) behaves like a Gaussian martingale in "time" I, and

    M(S, I) = integral exp(lambda S - lambda^2 I / 2) dPrior(lambda)

is a non-negative martingale for any fixed prior, so P(M ever exceeds 1/alpha) <= alpha.
* two-sided (a normal prior of precision rho): the interval d_hat +- sqrt((I+rho) log((I+rho)/(rho alpha^2))) / I;
* one-sided (a half-normal prior), for claims "i beats j": M = 2 sqrt(rho/(I+rho)) exp(s^2/2) Phi(s) with
  s = I d_hat / sqrt(I+rho), and the claim is made when M >= 1/alpha; 1/M is an anytime-valid p-value.

Multiplicity (Bonferroni, no further assumption):
* "model L is the best": L beats each of the other K-1 models one-sidedly at alpha/(K-1). If L is not
  truly best, the claim "L beats the true best b" is false, and only the K-1 pairs that contain b can
  produce it, so P(ever certifying a wrong winner) <= alpha.
* "the ranking is settled between neighbours i and j": at alpha / (K(K-1)/2), so that every ordering
  claim on the page, together, is wrong with probability at most alpha.

The approximation is the usual large-sample one (the Wald statistic of the BT fit is close to Gaussian);
with ties counted as half wins the model's variance is slightly conservative (a tie has less spread than
a coin flip). bench/adaptive_campaigns.py measures the wrong-winner rate and the coverage it delivers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr

from analysis.bradley_terry import ELO_PER_NAT, bt_covariance, bt_mle

DEFAULT_ALPHA = 0.05  # error rate of each family of claims (top model; the whole order)
MIXTURE_PRECISION = 20.0  # rho: the prior precision of the mixture, in units of information (1/nat^2);
#   the boundary is within 3% of its tightest for information ~40-1500, i.e. score gaps ~0.1-0.6 nats
PROJECTION_HORIZON = 50.0  # votes-still-needed beyond this many times the current votes are "unknown"
PROJECTION_PATHS = 256  # simulated futures per open claim (fixed seed: the same answer for the same votes)
PROJECTION_GRID = 120  # information steps per simulated future
PROJECTION_SEED = 20240607
PROJECTION_MAX_CORRECTION = 3.0  # standard errors: the most difference_given_open moves an estimate


# --------------------------------------------------------------------------------------------------
# Boundary
# --------------------------------------------------------------------------------------------------


def log_evidence(difference, information, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """log of the one-sided mixture martingale against "difference <= 0" (log of 1 / anytime p-value).

    difference: estimated d_hat = theta_i - theta_j (nats); information: 1 / Var(d_hat). Broadcasts.
    The claim "i beats j" at level alpha is made when this exceeds log(1 / alpha).
    """
    d = np.asarray(difference, dtype=float)
    info = np.maximum(np.nan_to_num(np.asarray(information, dtype=float), nan=0.0), 0.0)
    s = info * d / np.sqrt(info + rho)
    return math.log(2.0) + 0.5 * np.log(rho / (info + rho)) + 0.5 * s**2 + log_ndtr(s)


def anytime_p_value(difference, information, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Anytime-valid p-value for "i is not better than j": P(it ever gets this small | d <= 0) <= p."""
    return np.minimum(1.0, np.exp(-log_evidence(difference, information, rho=rho)))


def confidence_radius(information, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Half-width (nats) of the two-sided anytime-valid (1 - alpha) interval d_hat +- radius.

    information: 1 / Var(d_hat), >= 0 (0 gives an infinite radius). The interval covers the true
    difference at every moment of the campaign at once with probability >= 1 - alpha.
    """
    _check_alpha(alpha)
    info = np.maximum(np.nan_to_num(np.asarray(information, dtype=float), nan=0.0), 0.0)
    with np.errstate(divide="ignore"):
        radius = np.sqrt((info + rho) * np.log((info + rho) / (rho * alpha**2))) / info
    return np.where(info > 0, radius, np.inf)


def one_sided_radius(information, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Smallest d_hat (nats) at which the one-sided claim "i beats j" is made at level alpha."""
    _check_alpha(alpha)
    info = np.maximum(np.nan_to_num(np.asarray(information, dtype=float), nan=0.0), 0.0)
    # solve s^2/2 + log Phi(s) = c for s (the left side increases with s); Phi(s) ~ 1 near the answer
    c = math.log(1.0 / (2.0 * alpha)) + 0.5 * np.log((info + rho) / rho)
    s = np.sqrt(2.0 * c)
    for _ in range(4):
        s = np.sqrt(2.0 * (c - log_ndtr(s)))
    with np.errstate(divide="ignore"):
        radius = s * np.sqrt(info + rho) / info
    return np.where(info > 0, radius, np.inf)


def information_to_claim(difference, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Information 1/Var(d_hat) at which an estimate equal to `difference` crosses the one-sided boundary.

    inf where difference <= 0 (a claim in that direction is never made).
    """
    d = np.atleast_1d(np.asarray(difference, dtype=float))
    lo = np.full(d.shape, -3.0)  # log10 information
    hi = np.full(d.shape, 12.0)
    for _ in range(60):  # bisection on log information; the radius decreases with information
        mid = 0.5 * (lo + hi)
        crossed = one_sided_radius(10.0**mid, alpha, rho=rho) <= d
        hi = np.where(crossed, mid, hi)
        lo = np.where(crossed, lo, mid)
    out = np.where(d > 0, 10.0**hi, np.inf)
    return out if np.ndim(difference) else out[0]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


# --------------------------------------------------------------------------------------------------
# Pairwise differences from a fit
# --------------------------------------------------------------------------------------------------


def check_wins(wins: np.ndarray) -> np.ndarray:
    """Validate a (K, K) win-count matrix (ties as 0.5 / 0.5) and return it as floats."""
    wins = np.asarray(wins, dtype=float)
    if wins.ndim != 2 or wins.shape[0] != wins.shape[1]:
        raise ValueError(f"wins must be a square (K, K) matrix, got shape {wins.shape}")
    if wins.shape[0] < 2:
        raise ValueError(f"wins needs at least 2 models, got {wins.shape[0]}")
    if not np.isfinite(wins).all() or (wins < 0).any():
        raise ValueError("wins must hold finite, non-negative counts")
    if np.any(np.diag(wins) != 0):
        raise ValueError("wins must have a zero diagonal (a model is never compared with itself)")
    return wins


def difference_information(cov: np.ndarray) -> np.ndarray:
    """(K, K) information 1 / Var(theta_i - theta_j) from the covariance of theta; 0 on the diagonal."""
    diag = np.diag(cov)
    var = diag[:, None] + diag[None, :] - 2.0 * cov
    with np.errstate(divide="ignore"):
        info = np.where(var > 0, 1.0 / np.maximum(var, 1e-300), 0.0)
    np.fill_diagonal(info, 0.0)
    return info


def family_alphas(k: int, alpha: float) -> tuple[float, float]:
    """Per-pair one-sided levels: (top model: alpha/(K-1), order of neighbours: alpha/(K(K-1)/2))."""
    return alpha / (k - 1), alpha / (k * (k - 1) / 2)


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


def campaign_decisions(
    wins: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    *,
    theta: np.ndarray | None = None,
    model_names: list[str] | None = None,
    project: bool = True,
    policy: str = "active",
    allowed: np.ndarray | None = None,
    min_votes_per_pair: int = 0,
    target_votes_per_pair: int | None = None,
    exploration: float | None = None,
) -> dict:
    """What a campaign can claim now, with error rates that hold under adaptive sampling and repeated looks.

    wins: (K, K) win counts (ties as 0.5 / 0.5). theta: a recent BT fit to reuse (else bt_mle(wins)).
    project: also estimate votes still needed for each open decision, assuming the engine keeps choosing
    pairs with `policy` ('active' or 'uniform'; allowed / target / exploration as given to
    choose_model_pair) and the current estimates are the truth.
    Returns a JSON-friendly dict:
      votes, alpha, theta, order (model indices, best first),
      top_model: {model, certified, confidence, level, closest_rival, rivals [{model, difference,
        lower_bound, p_value}], votes, votes_still_needed, explain}
      neighbours: [{rank, higher, lower, settled, difference, lower_bound, confidence, votes_still_needed,
        explain}]  (lower_bound: of the difference, at the level of the whole ranking)
      intervals: {'lower', 'upper'}: (K, K) anytime-valid (1 - alpha) interval of theta_i - theta_j per pair
    """
    from analysis.active_sampling import DEFAULT_EXPLORATION, check_policy

    wins = check_wins(wins)
    _check_alpha(alpha)
    check_policy(policy)
    k = wins.shape[0]
    names = _names(model_names, k)
    theta = bt_mle(wins) if theta is None else np.asarray(theta, dtype=float)
    if theta.shape != (k,):
        raise ValueError(f"theta must have shape ({k},), got {theta.shape}")
    cov = bt_covariance(wins, theta)
    info = difference_information(cov)
    diff = theta[:, None] - theta[None, :]
    votes = float(wins.sum())
    alpha_top, alpha_order = family_alphas(k, alpha)

    # top model: the leader against every other model, one-sided at alpha / (K-1)
    leader = int(np.argmax(theta))
    rivals = [j for j in range(k) if j != leader]
    evidence = log_evidence(diff[leader, rivals], info[leader, rivals])
    p_top = min(1.0, (k - 1) * float(np.exp(-evidence.min())))
    lower = diff[leader, rivals] - one_sided_radius(info[leader, rivals], alpha_top)
    closest = rivals[int(np.argmin(evidence))]
    top = {
        "kind": "top_model",
        "model": leader,
        "model_name": names[leader],
        "certified": bool(p_top <= alpha),
        "confidence": 1.0 - p_top,
        "level": 1.0 - alpha,
        "closest_rival": closest,
        "closest_rival_name": names[closest],
        "rivals": [
            {
                "model": j,
                "difference": float(diff[leader, j]),
                "lower_bound": float(lo),
                "p_value": float(min(1.0, (k - 1) * math.exp(-ev))),
            }
            for j, lo, ev in zip(rivals, lower, evidence, strict=True)
        ],
        "n_models": k,
        "votes": votes,
        "votes_still_needed": 0 if p_top <= alpha else None,
    }

    # neighbours in the current order, one-sided at alpha / (K(K-1)/2)
    order = [int(i) for i in np.argsort(-theta, kind="stable")]
    hi_all, lo_all = np.array(order[:-1]), np.array(order[1:])
    p_order = np.minimum(1.0, (k * (k - 1) / 2) * np.exp(-log_evidence(diff[hi_all, lo_all], info[hi_all, lo_all])))
    lower_order = diff[hi_all, lo_all] - one_sided_radius(info[hi_all, lo_all], alpha_order)
    neighbours = []
    for rank, (hi, lo, p, lower_bound) in enumerate(
        zip(order[:-1], order[1:], p_order.tolist(), lower_order.tolist(), strict=True), start=1
    ):
        neighbours.append(
            {
                "kind": "neighbours",
                "rank": rank,
                "higher": hi,
                "lower": lo,
                "higher_name": names[hi],
                "lower_name": names[lo],
                "settled": bool(p <= alpha),
                "difference": float(diff[hi, lo]),
                "lower_bound": lower_bound,
                "confidence": 1.0 - p,
                "level": 1.0 - alpha,
                "votes_still_needed": 0 if p <= alpha else None,
            }
        )

    if project:
        settings = dict(
            policy=policy,
            allowed=allowed,
            min_votes_per_pair=min_votes_per_pair,
            target_votes_per_pair=target_votes_per_pair,
            exploration=DEFAULT_EXPLORATION if exploration is None else exploration,
            alpha=alpha,
        )
        needed_top, needed_pairs = project_votes_needed(wins, theta, **settings)
        if not top["certified"]:
            top["votes_still_needed"] = needed_top
        for item, needed in zip(neighbours, needed_pairs, strict=True):
            if not item["settled"]:
                item["votes_still_needed"] = needed
    top["explain"] = explain(top)
    for item in neighbours:
        item["explain"] = explain(item)

    radius = confidence_radius(info, alpha)
    np.fill_diagonal(radius, 0.0)
    return {
        "votes": votes,
        "alpha": alpha,
        "theta": theta.tolist(),
        "order": order,
        "top_model": top,
        "neighbours": neighbours,
        "intervals": {"lower": (diff - radius).tolist(), "upper": (diff + radius).tolist()},
        "projected": project,
    }


def _names(model_names: list[str] | None, k: int) -> list[str]:
    if model_names is None:
        return [f"model {i}" for i in range(k)]
    if len(model_names) != k:
        raise ValueError(f"model_names has {len(model_names)} names for {k} models")
    return [str(n) for n in model_names]


# --------------------------------------------------------------------------------------------------
# Plain words for the dashboard
# --------------------------------------------------------------------------------------------------


def _win_share(difference: float) -> str:
    """A score difference as the share of head-to-head votes the first model would win."""
    return f"{100.0 / (1.0 + math.exp(-difference)):.0f}%"


def _votes_phrase(needed) -> str:
    if needed is None:
        return "The votes still needed cannot be estimated yet (the current gap is too small to project)."
    return f"At the current rate, about {int(needed):,} more votes are likely needed."


def explain(decision: dict) -> str:
    """One plain-words paragraph for a decision from campaign_decisions (top_model or a neighbours item)."""
    level = f"{100 * decision['level']:.0f}%"
    guarantee = (
        "This guarantee holds although the engine chose which pairs to show and the results are checked "
        "after every vote."
    )
    if decision["kind"] == "top_model":
        name, rival = decision["model_name"], decision["closest_rival_name"]
        if decision["votes"] == 0:
            return f"No votes yet: all {decision['n_models']} models are level."
        by_rival = {r["model"]: r for r in decision["rivals"]}
        r = by_rival[decision["closest_rival"]]
        elo = ELO_PER_NAT * r["difference"]
        if decision["certified"]:
            return (
                f"{name} is the best of the {decision['n_models']} models, with {level} confidence: it beats "
                f"every other model. Its closest rival, {rival}, is {elo:.0f} score points behind; {name} "
                f"would win about {_win_share(r['difference'])} of their votes (at least "
                f"{_win_share(max(r['lower_bound'], 0.0))}). {guarantee}"
            )
        return (
            f"Not yet certain which model is best. {name} leads, but {rival} could still be better: "
            f"{name} is {elo:.0f} score points ahead (it would win about {_win_share(r['difference'])} of "
            f"their votes), which is not yet enough evidence for {level} confidence "
            f"(currently {100 * max(decision['confidence'], 0.0):.0f}%). "
            f"{_votes_phrase(decision['votes_still_needed'])}"
        )
    if decision["kind"] == "neighbours":
        hi, lo = decision["higher_name"], decision["lower_name"]
        elo = ELO_PER_NAT * decision["difference"]
        if decision["settled"]:
            return (
                f"{hi} ranks above {lo} (places {decision['rank']} and {decision['rank'] + 1}), with {level} "
                f"confidence for the whole ranking at once: {elo:.0f} score points ahead, winning about "
                f"{_win_share(decision['difference'])} of their votes. {guarantee}"
            )
        return (
            f"The order of {hi} and {lo} (places {decision['rank']} and {decision['rank'] + 1}) is not settled: "
            f"{hi} is {elo:.0f} score points ahead, not yet enough for {level} confidence. "
            f"{_votes_phrase(decision['votes_still_needed'])}"
        )
    raise ValueError(f"unknown decision kind {decision.get('kind')!r}")


# --------------------------------------------------------------------------------------------------
# Votes still needed: the future evidence of each open decision, simulated under the engine's policy
# --------------------------------------------------------------------------------------------------


def _inverse_mills(x: np.ndarray) -> np.ndarray:
    """phi(x) / Phi(x), computed stably."""
    return np.exp(-0.5 * x**2 - 0.5 * math.log(2.0 * math.pi) - log_ndtr(x))


def difference_given_open(d_hat, information, alpha: float) -> np.ndarray:
    """Estimate of a difference given that its claim is still open (d_hat below the boundary).

    A campaign that is still running is one whose estimates have not crossed yet, so the open ones
    are biased low; using d_hat as the truth overstates the votes still needed (by about 1.5x in our
    simulations). This is the maximum-likelihood estimate of d from d_hat ~ N(d, 1/I) truncated to
    d_hat < boundary, capped at PROJECTION_MAX_CORRECTION standard errors above d_hat.
    """
    d_hat = np.asarray(d_hat, dtype=float)
    root_info = np.sqrt(np.asarray(information, dtype=float))
    b = root_info * (one_sided_radius(information, alpha) - d_hat)  # standard errors below the boundary
    lo = np.zeros_like(d_hat)
    hi = np.full_like(d_hat, PROJECTION_MAX_CORRECTION)
    for _ in range(40):  # u - lambda(b - u) increases in u: bisection for its root
        mid = 0.5 * (lo + hi)
        up = mid - _inverse_mills(b - mid) < 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return d_hat + 0.5 * (lo + hi) / np.maximum(root_info, 1e-300)


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
    """
    from analysis.active_sampling import allowed_pairs, most_informative_pair, vote_information

    k = len(theta)
    counts = wins + wins.T
    n0 = float(counts.sum() / 2)
    horizon = PROJECTION_HORIZON * max(n0, 10.0 * k)
    alpha_top, alpha_order = family_alphas(k, alpha)
    leader = int(np.argmax(theta))
    order = np.argsort(-theta, kind="stable")
    # the claims to watch: (i, j, level, slot) -- slot 0 is the top model, slot r the r-th neighbours
    checks = [(leader, j, alpha_top, 0) for j in range(k) if j != leader]
    checks += [(int(order[r]), int(order[r + 1]), alpha_order, r + 1) for r in range(k - 1)]
    ii = np.array([c[0] for c in checks])
    jj = np.array([c[1] for c in checks])
    level = np.array([c[2] for c in checks])
    slot = np.array([c[3] for c in checks])
    d_hat = theta[ii] - theta[jj]
    cov = bt_covariance(wins, theta)
    info0 = difference_information(cov)[ii, jj]
    is_open = log_evidence(d_hat, info0) < np.log(1.0 / level)
    eligible = allowed_pairs(counts, allowed, target_votes_per_pair)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)

    # 1. information still needed, per claim and path
    rng = np.random.default_rng(PROJECTION_SEED)
    more_info = np.zeros((len(checks), PROJECTION_PATHS))
    for c in np.flatnonzero(is_open):
        more_info[c] = _information_to_cross(d_hat[c], info0[c], level[c], rng)

    # 2. information -> votes under the policy
    coverage = float(np.maximum(min_votes_per_pair - counts, 0.0)[eligible & upper].sum())
    if not (eligible & upper).any():
        more_votes = np.where(more_info > 0, np.inf, 0.0)
    elif policy == "uniform":
        more_votes = _uniform_votes(
            more_info,
            counts,
            theta,
            eligible & upper,
            ii,
            jj,
            info0,
            coverage,
            min_votes_per_pair,
            target_votes_per_pair,
            horizon,
        )
    else:
        weight = vote_information(theta)
        rate = np.zeros(len(checks))
        for c in np.flatnonzero(is_open):
            contrast = np.zeros((1, k))
            contrast[0, ii[c]], contrast[0, jj[c]] = 1.0, -1.0
            a, b = most_informative_pair(contrast, np.ones(1), cov, weight, eligible)
            x = np.zeros(k)
            x[a], x[b] = 1.0, -1.0
            cx, xsx = contrast[0] @ cov @ x, x @ cov @ x
            var = 1.0 / info0[c]
            rate[c] = 1.0 / (var - weight[a, b] * cx**2 / (1.0 + weight[a, b] * xsx)) - 1.0 / var
        with np.errstate(divide="ignore", invalid="ignore"):
            focused = np.where(more_info > 0, more_info / (rate[:, None] * (1.0 - exploration)), 0.0)
        top = coverage + focused[slot == 0].sum(axis=0)
        more_votes = np.zeros_like(focused)
        more_votes[slot == 0] = top
        pairs = focused[slot > 0]  # (K-1, paths)
        earlier = np.where(pairs[None, :, :] <= pairs[:, None, :], pairs[None, :, :], 0.0)  # (r, r', paths)
        more_votes[slot > 0] = np.where(pairs > 0, top[None, :] + earlier.sum(axis=1), 0.0)

    # 3. medians
    top_needed = float(np.median(more_votes[slot == 0].max(axis=0)))
    pair_needed = [float(np.median(more_votes[slot == r][0])) for r in range(1, k)]

    def as_votes(x: float) -> int | None:
        return None if not np.isfinite(x) or x > horizon else int(math.ceil(x))

    return as_votes(top_needed), [as_votes(x) for x in pair_needed]


def _information_to_cross(d_hat: float, info0: float, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """(paths,) information still needed until the evidence for one open claim crosses its boundary.

    The evidence S = I d_hat continues as S(I) = S_now + d (I - I_now) + W(I - I_now), W a Brownian
    motion, d = difference_given_open; inf for paths that do not cross on the grid.
    """
    if not info0 > 0:
        return np.full(PROJECTION_PATHS, np.inf)
    drift = float(difference_given_open(d_hat, info0, alpha))
    if drift <= 0:
        return np.full(PROJECTION_PATHS, np.inf)
    reach = min(max(4.0 * float(information_to_claim(drift, alpha)) / info0, 4.0), 1e4)
    grid = info0 * np.geomspace(1.0, reach, PROJECTION_GRID + 1)[1:]  # (G,)
    steps = np.diff(np.concatenate([[info0], grid]))
    walk = info0 * d_hat + np.cumsum(
        drift * steps + np.sqrt(steps) * rng.standard_normal((PROJECTION_PATHS, len(grid))), axis=1
    )
    crossed = walk >= grid * one_sided_radius(grid, alpha)
    first = np.where(crossed.any(axis=1), grid[crossed.argmax(axis=1)], np.inf)
    return first - info0


def _uniform_votes(more_info, counts, theta, candidates, ii, jj, info0, coverage, min_votes, target, horizon):
    """Votes until each claim gains `more_info` when votes are spread evenly over the allowed pairs."""
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
