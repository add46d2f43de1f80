"""The anytime-valid boundary behind every campaign decision: evidence, radii and levels for a score
difference that stay valid when pairs are chosen adaptively and the results are checked often.

A plain 95% interval checked again and again, on votes that an adaptive engine steered towards the
current leaders, certifies the wrong winner far too often (13.5% with 4 models, 68% with 20 in our
notes). The boundary here is an *anytime-valid confidence sequence*: the estimate crosses it wrongly
with probability at most alpha over the whole campaign, however often one looks and whichever pairs
the engine chose, because it is built from a test martingale (Ville's inequality), not a fixed-n test.

The boundary (Robbins' normal mixture) on a Bradley-Terry score difference d = theta_i - theta_j:
with I = 1 / Var(d_hat) the information about d (from the Fisher information of all votes, direct
and indirect; analysis.bradley_terry.difference_information), the statistic S = I * (d_hat - d)
behaves like a Gaussian martingale in "time" I, and

    M(S, I) = integral exp(lambda S - lambda^2 I / 2) dPrior(lambda)

is a non-negative martingale for any fixed prior, so P(M ever exceeds 1/alpha) <= alpha.
* two-sided (a normal prior of precision rho): the interval d_hat +- sqrt((I+rho) log((I+rho)/(rho alpha^2))) / I;
* one-sided (a half-normal prior), for claims "i beats j": M = 2 sqrt(rho/(I+rho)) exp(s^2/2) Phi(s) with
  s = I d_hat / sqrt(I+rho), and the claim is made when M >= 1/alpha; 1/M is an anytime-valid p-value.

Multiplicity (Bonferroni, no further assumption; `family_alphas`):
* "model L is the best": L beats each of the other K-1 models one-sidedly at alpha/(K-1). If L is not
  truly best, the claim "L beats the true best b" is false, and only the K-1 pairs that contain b can
  produce it, so P(ever certifying a wrong winner) <= alpha.
* "the ranking is settled between neighbours i and j": at alpha / (K(K-1)/2), so that every ordering
  claim on the page, together, is wrong with probability at most alpha.
`TopModelEvidence` (below) certifies the top model without the split over rivals, at the same alpha,
with state kept across the campaign's looks: one e-process per hypothesis "b is the best".

The approximation is the usual large-sample one (the Wald statistic of the BT fit is close to Gaussian);
with ties counted as half wins the model's variance is slightly conservative (a tie has less spread than
a coin flip). bench/adaptive_campaigns.py measures the wrong-winner rate and the coverage it delivers.

May import numpy and scipy, nothing from analysis/.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr

DEFAULT_ALPHA = 0.05  # error rate of each family of claims (top model; the whole order)
MIXTURE_PRECISION = 20.0  # rho: the prior precision of the mixture, in units of information (1/nat^2);
#   the boundary is within 3% of its tightest for information ~40-1500, i.e. score gaps ~0.1-0.6 nats


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")


def family_alphas(k: int, alpha: float) -> tuple[float, float]:
    """Per-pair one-sided levels: (top model: alpha/(K-1), order of neighbours: alpha/(K(K-1)/2))."""
    return alpha / (k - 1), alpha / (k * (k - 1) / 2)


def _as_information(information) -> np.ndarray:
    return np.maximum(np.nan_to_num(np.asarray(information, dtype=float), nan=0.0), 0.0)


def log_evidence(difference, information, *, rho: float | np.ndarray = MIXTURE_PRECISION) -> np.ndarray:
    """log of the one-sided mixture martingale against "difference <= 0" (log of 1 / anytime p-value).

    difference: estimated d_hat = theta_i - theta_j (nats); information: 1 / Var(d_hat); rho: the mixture's
    prior precision (a number, or one per claim). Broadcasts.
    The claim "i beats j" at level alpha is made when this exceeds log(1 / alpha).
    """
    d = np.asarray(difference, dtype=float)
    info = _as_information(information)
    s = info * d / np.sqrt(info + rho)
    return math.log(2.0) + 0.5 * np.log(rho / (info + rho)) + 0.5 * s**2 + log_ndtr(s)


def confidence_radius(information, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Half-width (nats) of the two-sided anytime-valid (1 - alpha) interval d_hat +- radius.

    information: 1 / Var(d_hat), >= 0 (0 gives an infinite radius). The interval covers the true
    difference at every moment of the campaign at once with probability >= 1 - alpha.
    """
    check_alpha(alpha)
    info = _as_information(information)
    with np.errstate(divide="ignore"):
        radius = np.sqrt((info + rho) * np.log((info + rho) / (rho * alpha**2))) / info
    return np.where(info > 0, radius, np.inf)


def one_sided_radius(information, alpha: float, *, rho: float = MIXTURE_PRECISION) -> np.ndarray:
    """Smallest d_hat (nats) at which the one-sided claim "i beats j" is made at level alpha."""
    check_alpha(alpha)
    info = _as_information(information)
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


# --------------------------------------------------------------------------------------------------
# The top model without a split over rivals: one e-process per model, kept across looks
# --------------------------------------------------------------------------------------------------


class TopModelEvidence:
    """Anytime-valid evidence against "model b is the best", for every model b, kept across the looks of a
    campaign: the sharper top-model rule (`rule="rebalanced"` in analysis.simulate.simulate_campaign).

    Why: certifying a wrong winner L means rejecting H_b = "b is the best" for the true best model b.
    So it is enough to test each H_b once, at level alpha, with an e-process E_b (a non-negative
    supermartingale under H_b): P(E_b ever reaches 1/alpha) <= alpha (Ville), whatever the engine did.
    The Bonferroni rule is one such E_b: the average over rivals L of the one-sided mixtures
    M_{L,b} = exp(log_evidence(theta_L - theta_b)), each a supermartingale under H_b; betting 1/(K-1) on
    each rival is what costs the factor K-1. This e-process bets its whole wealth on ONE rival, the
    strongest other model at the last look, and moves the wealth (never adds to it) when that changes:

        E_b(t) = sum_L W_{b,L}(s) * M_{L,b}(t) / M_{L,b}(s),   s = the last look, sum_L W_{b,L}(s) = E_b(s)

    with W_b(0) = 1/(K-1) on every rival and, at each look s, all of E_b(s) moved onto the rival with
    the highest fitted score when that rival changed (else the holdings ride on). Each ratio
    M(t)/M(s) has conditional mean <= 1 under H_b and the weights are fixed before the votes they bet
    on, so E_b is a test supermartingale under H_b, valid at every vote between looks as well. When the
    leader settles early (as under the engine), E_b ~ M_{L,b} / M_{L,b}(s0): the threshold 1/alpha
    instead of (K-1)/alpha, at the price of the evidence seen before the wealth moved.

    Same approximation as the rest of this module (the BT estimate's Gaussian behaviour); state lives
    here, so the caller must call `look` at times fixed in advance or chosen from past votes only (every
    25 votes in the simulations), never "when it would help". Arrays may carry leading batch dimensions
    (tests run thousands of simulated campaigns at once).
    """

    def __init__(self, k: int, *, rho: float = MIXTURE_PRECISION, batch: tuple[int, ...] = ()):
        if k < 2:
            raise ValueError(f"need at least 2 models, got {k}")
        self.k, self.rho = k, rho
        eye = np.eye(k, dtype=bool)
        # held[..., b, L]: log wealth the test of H_b holds on rival L; last[..., b, L]: log M_{L,b} then
        self.held = np.broadcast_to(np.where(eye, -np.inf, -math.log(k - 1)), (*batch, k, k)).copy()
        self.last = np.zeros((*batch, k, k))
        self.bet = np.full((*batch, k), -1)  # the rival each test bets on (-1: still spread evenly)

    def _log_m(self, diff: np.ndarray, info: np.ndarray) -> np.ndarray:
        """[..., b, L] log M_{L,b}: evidence that L beats b (0 on the diagonal)."""
        now = log_evidence(np.swapaxes(diff, -1, -2), np.swapaxes(info, -1, -2), rho=self.rho)
        return np.where(np.eye(self.k, dtype=bool), 0.0, now)

    def _riding(self, diff: np.ndarray, info: np.ndarray) -> np.ndarray:
        return self.held + self._log_m(diff, info) - self.last

    def log_e_values(self, diff: np.ndarray, info: np.ndarray) -> np.ndarray:
        """(..., K) log E_b now, from the current (K, K) differences theta_i - theta_j and informations."""
        return _logsumexp(self._riding(diff, info))

    def look(self, diff: np.ndarray, info: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Record a look (current fit: differences, informations, theta (..., K)); returns log E_b now.

        After it, each test bets its wealth on the strongest other model by `theta`."""
        riding = self._riding(diff, info)
        total = _logsumexp(riding)
        strongest = np.argmax(np.where(np.eye(self.k, dtype=bool), -np.inf, np.asarray(theta)[..., None, :]), axis=-1)
        moved = strongest != self.bet
        on_strongest = np.arange(self.k) == strongest[..., None]
        self.held = np.where(moved[..., None], np.where(on_strongest, total[..., None], -np.inf), riding)
        self.last = self._log_m(diff, info)
        self.bet = strongest
        return total


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe[..., None]), axis=-1))
