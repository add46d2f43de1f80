"""The Bradley-Terry numerics: likelihoods on count matrices, their fits and covariances.

Holds the models and nothing about votes: (K, K) count matrices in, strengths theta and covariances out.

* ties counted as half a win: `bt_mle`, `bt_mle_batch`, `bt_information`, `bt_covariance`, and
  `bt_refit_near` (fast refits of many resamples near a known optimum, for the bootstrap);
* Davidson's 1970 tie model: `davidson_mle`, `davidson_mle_batch`, `davidson_covariance`;
* `check_wins` (the one check of a win-count matrix), `difference_information`, `sigmoid`, and the
  score scale `elo_score` / `ELO_PER_NAT`.
May import numpy and analysis.newton (the solver), nothing else.

Model ("ties as half"): P(i beats j) = sigmoid(theta_i - theta_j), theta in natural-log units,
identified by sum(theta) = 0. A tie (or "both bad") adds half a win to each side, so the fit is the
quasi-likelihood of a score y in {0, 1/2, 1} with E[y] = sigmoid(theta_i - theta_j).

Model ("davidson"): with d = theta_i - theta_j and nu = exp(log_nu),
P(i wins) = e^{d/2} / c, P(tie) = nu / c, P(j wins) = e^{-d/2} / c, c = e^{d/2} + e^{-d/2} + nu.

Ridge prior: every fit minimises  -loglik(theta) + ridge/2 * |theta|^2  with ridge = 1e-6 by default.
The likelihood does not change when theta is shifted, so the ridge centres the solution exactly; it
only matters where the plain maximum-likelihood estimate does not exist (a model that never lost or
never won, a comparison graph in several pieces), where it keeps theta finite (a model with w wins and
no loss lands near log(w / ridge)) and puts each disconnected piece at mean 0. Where the MLE exists,
the ridge moves theta by about ridge * |theta| / (Fisher information), i.e. < 1e-7 for any campaign
with more than a handful of votes per model, so the fit agrees with an unpenalised optimiser to 1e-6.

Scores are reported on the Elo scale of the public arenas: score = 1000 + 400 * log10(odds) =
1000 + 400 / ln(10) * theta, so 400 points mean 10:1 odds.
"""

from __future__ import annotations

import numpy as np

from analysis.newton import DEFAULT_TOL, constrained_inverse, newton, single_blas_thread

DEFAULT_RIDGE = 1e-6  # prior precision on theta (see module docstring)
ELO_PER_NAT = 400.0 / np.log(10.0)  # Elo points per unit of natural-log odds
ELO_MEAN = 1000.0  # the average model's score
BOOTSTRAP_TOL = 1e-4  # Newton converges quadratically: after a step this small the error is ~1e-8
CHORD_ITERATIONS = 15  # bootstrap refits: chord-method iterations before falling back to damped Newton
CHORD_TOL = 1e-9  # ... converged when no theta moved more than this (linear convergence, rate ~1/sqrt(votes))


def elo_score(theta: np.ndarray) -> np.ndarray:
    """Strengths (natural-log odds) on the Elo scale: 1000 + 400 * log10(odds)."""
    return ELO_MEAN + ELO_PER_NAT * theta


def sigmoid(x: np.ndarray) -> np.ndarray:
    """P(i beats j) for x = theta_i - theta_j (ties counted half)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


# --------------------------------------------------------------------------------------------------
# Count matrices: the one check
# --------------------------------------------------------------------------------------------------


def check_wins(wins: np.ndarray, name: str = "wins") -> np.ndarray:
    """Validate a (K, K) win-count matrix (ties as 0.5 / 0.5) and return it as floats."""
    wins = np.asarray(wins, dtype=float)
    if wins.ndim != 2 or wins.shape[0] != wins.shape[1]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {wins.shape}")
    _check_counts(wins[None], name)
    return wins


def _as_batch(wins: np.ndarray, name: str = "wins") -> np.ndarray:
    """(K, K) or (B, K, K) count matrices as a checked (B, K, K) float array."""
    wins = np.asarray(wins, dtype=float)
    if wins.ndim == 2:
        wins = wins[None]
    if wins.ndim != 3 or wins.shape[1] != wins.shape[2]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {wins.shape}")
    return _check_counts(wins, name)


def _check_counts(wins: np.ndarray, name: str) -> np.ndarray:
    """(B, K, K) square float matrices: at least 2 models, finite non-negative counts, zero diagonal."""
    k = wins.shape[1]
    if k < 2:
        raise ValueError(f"{name} needs at least 2 models, got {k}")
    if not np.isfinite(wins).all() or (wins < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative counts")
    if np.any(wins[:, np.arange(k), np.arange(k)] != 0):
        raise ValueError(f"{name} must have a zero diagonal (a model is never compared with itself)")
    return wins


# --------------------------------------------------------------------------------------------------
# Ties as half a win
# --------------------------------------------------------------------------------------------------


def _scatter_pairs(values: np.ndarray, i: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
    """out[b, m] = sum of values[b, p] over pairs p with i[p] = m, minus those with j[p] = m. (B, P) -> (B, K)."""
    b = values.shape[0]
    offset = (np.arange(b) * k)[:, None]
    flat = values.ravel()
    plus = np.bincount((offset + i).ravel(), flat, b * k)
    minus = np.bincount((offset + j).ravel(), flat, b * k)
    return (plus - minus).reshape(b, k)


def _half_objective(
    i: np.ndarray, j: np.ndarray, w_ij: np.ndarray, w_ji: np.ndarray, theta: np.ndarray, ridge: float
) -> np.ndarray:
    """-loglik + ridge/2 |theta|^2 for a batch of pair counts: w_ij, w_ji (B, P), theta (B, K) -> (B,).

    Per pair: -(w_ij log s(d) + w_ji log s(-d)) = -n log s(d) + w_ji d, with d = theta_i - theta_j.
    """
    d = theta[:, i] - theta[:, j]  # (B, P)
    nll = (w_ji * d - (w_ij + w_ji) * _log_sigmoid(d)).sum(axis=1)
    return nll + 0.5 * ridge * (theta**2).sum(axis=1)


def _half_grad_hess(
    i: np.ndarray, j: np.ndarray, w_ij: np.ndarray, w_ji: np.ndarray, theta: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (B, K) and Hessian (B, K, K) of the ties-as-half objective."""
    b, k = theta.shape
    n = w_ij + w_ji  # (B, P) comparisons per pair
    p = sigmoid(theta[:, i] - theta[:, j])  # (B, P) P(i beats j)
    grad = _scatter_pairs(n * p - w_ij, i, j, k) + ridge * theta
    w = n * p * (1.0 - p)  # (B, P) information per pair
    hess = np.zeros((b, k, k))
    hess[:, i, j] = -w
    hess[:, j, i] = -w
    offset = (np.arange(b) * k)[:, None]
    degree = np.bincount((offset + i).ravel(), w.ravel(), b * k) + np.bincount((offset + j).ravel(), w.ravel(), b * k)
    idx = np.arange(k)
    hess[:, idx, idx] = degree.reshape(b, k) + ridge
    return grad, hess


def _fit_half_pairs(
    i: np.ndarray, j: np.ndarray, w_ij: np.ndarray, w_ji: np.ndarray, theta0: np.ndarray, ridge: float, tol: float
) -> np.ndarray:
    """Ties-as-half fits from pair counts: i, j (P,) model indices, w_ij, w_ji (B, P) wins each way."""
    return newton(
        lambda t, ids: _half_objective(i, j, w_ij[ids], w_ji[ids], t, ridge),
        lambda t, ids: _half_grad_hess(i, j, w_ij[ids], w_ji[ids], t, ridge),
        theta0,
        theta0.shape[1],
        tol=tol,
    )


def _dense_to_pairs(wins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(B, K, K) win matrices -> pairs i < j compared in any of them, and (B, P) wins each way."""
    compared = ((wins + wins.transpose(0, 2, 1)) > 0).any(axis=0)
    i, j = np.nonzero(np.triu(compared, 1))
    return i, j, wins[:, i, j], wins[:, j, i]


def bt_mle_batch(
    wins: np.ndarray, theta0: np.ndarray | None = None, *, ridge: float = DEFAULT_RIDGE, tol: float = DEFAULT_TOL
) -> np.ndarray:
    """Fit many count matrices at once: wins (B, K, K) -> theta (B, K), each centred to mean 0."""
    wins = _as_batch(wins)
    b, k, _ = wins.shape
    theta = np.zeros((b, k)) if theta0 is None else np.broadcast_to(np.asarray(theta0, float), (b, k)).copy()
    return _fit_half_pairs(*_dense_to_pairs(wins), theta, ridge, tol)


def bt_mle(wins: np.ndarray, *, ridge: float = DEFAULT_RIDGE, theta0: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry maximum-likelihood strengths from a win-count matrix.

    wins: (K, K) float, wins[i, j] = number of wins of i over j (ties already split as 0.5 / 0.5);
    returns theta (K,), natural-log strengths centred to mean 0, P(i beats j) = sigmoid(theta_i - theta_j).
    Models without wins or losses and disconnected comparison graphs are handled by the tiny ridge prior
    (see the module docstring); a model with no votes at all gets 0.
    """
    return bt_mle_batch(wins, theta0, ridge=ridge)[0]


def bt_information(wins: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Fisher information (K, K) of theta under the ties-as-half model (plus the ridge)."""
    wins = _as_batch(wins)[0]
    _, hess = _half_grad_hess(*_dense_to_pairs(wins[None]), np.asarray(theta, float)[None], ridge)
    return hess[0]


def bt_covariance(wins: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Fisher-information covariance (K, K) of theta under the sum-to-zero constraint.

    Var(theta_i - theta_j) = c^T cov c with c = e_i - e_j. Inside a connected comparison graph this is the
    usual inverse information; between disconnected pieces the variance is ~1/ridge (no information).
    """
    return constrained_inverse(bt_information(wins, theta, ridge=ridge), len(theta), ridge)


TIE_PRIOR_VOTES = 20.0  # a pair's tie share is shrunk towards the campaign's as if from this many votes


def bt_covariance_observed_ties(
    wins: np.ndarray, ties: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE
) -> np.ndarray:
    """Covariance (K, K) of the ties-as-half estimate theta with the variance of each vote's score taken from
    the observed ties: a sandwich H^-1 V H^-1, where H is the Fisher information (each vote p(1-p)) and V the
    score variance (each vote p(1-p) - P(tie)/4: a tie scores 1/2, which varies less than a coin flip).

    wins: (K, K) half wins as for bt_covariance; ties: (K, K) symmetric counts of ties (and "both bad")
    per pair. P(tie) of a pair is its tie share shrunk towards the campaign's (TIE_PRIOR_VOTES), and at
    most 2 min(p, 1 - p) (a pair cannot tie more often than that and still score p). Without ties this
    is bt_covariance; with them the variances are smaller (about 10% at 10% ties). Unlike the fully
    empirical sandwich of analysis.intervals (each vote's squared residual), only the tie share comes from
    the data here, so a pair with few votes cannot look more certain than the model allows by chance: the
    anytime-valid top-model rule (analysis.decisions) uses it at every look.
    """
    wins, ties = check_wins(wins), np.asarray(ties, dtype=float)
    if ties.shape != wins.shape or np.any(ties < 0) or not np.allclose(ties, ties.T):
        raise ValueError("ties must be a symmetric non-negative (K, K) matrix like wins")
    theta = np.asarray(theta, dtype=float)
    return bt_covariance_with_tie_shares(wins, tie_shares(wins, ties, theta), theta, ridge=ridge)


def tie_shares(wins: np.ndarray, ties: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(K, K) P(tie) per pair as bt_covariance_observed_ties takes it: the pair's tie share shrunk towards the
    campaign's as if from TIE_PRIOR_VOTES votes, at most 2 min(p, 1 - p)."""
    n = wins + wins.T
    np.fill_diagonal(n, 0.0)
    pooled = ties.sum() / max(n.sum(), 1.0)
    p = sigmoid(theta[:, None] - theta[None, :])
    return np.minimum((ties + TIE_PRIOR_VOTES * pooled) / (n + TIE_PRIOR_VOTES), 2.0 * np.minimum(p, 1.0 - p))


def bt_covariance_with_tie_shares(
    wins: np.ndarray, share: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE
) -> np.ndarray:
    """The sandwich of bt_covariance_observed_ties with P(tie) per pair given ((K, K), e.g. from tie_shares):
    also for vote counts that have not happened yet (votes still needed, analysis.votes_needed)."""
    theta = np.asarray(theta, dtype=float)
    cov = bt_covariance(wins, theta, ridge=ridge)
    n = wins + wins.T
    np.fill_diagonal(n, 0.0)
    p = sigmoid(theta[:, None] - theta[None, :])
    v = n * np.maximum(p * (1.0 - p) - share / 4.0, 0.0)
    np.fill_diagonal(v, 0.0)
    variance = np.diag(v.sum(axis=1) + ridge) - v  # like the information, with the score's variance per vote
    return cov @ variance @ cov


def difference_information(cov: np.ndarray) -> np.ndarray:
    """(K, K) information 1 / Var(theta_i - theta_j) from the covariance of theta; 0 on the diagonal."""
    diag = np.diag(cov)
    var = diag[:, None] + diag[None, :] - 2.0 * cov
    with np.errstate(divide="ignore"):
        info = np.where(var > 0, 1.0 / np.maximum(var, 1e-300), 0.0)
    np.fill_diagonal(info, 0.0)
    return info


def bt_refit_near(
    i: np.ndarray,
    j: np.ndarray,
    w_ij: np.ndarray,
    w_ji: np.ndarray,
    point: np.ndarray,
    information: np.ndarray,
    *,
    ridge: float = DEFAULT_RIDGE,
) -> np.ndarray:
    """Ties-as-half fits (B, K) of many pair counts w_ij, w_ji (B, P) whose optimum is close to `point`.

    information: `bt_information` at `point` of the data the point was fitted to. Chord method: Newton
    steps that reuse that information matrix, inverted once, so each iteration is one gradient and one
    (B, K) x (K, K) product. A resample's information differs from the point fit's by O(1/sqrt(votes)),
    so each iteration shrinks the error by about that factor. Problems that have not converged after a
    few iterations (e.g. a model that lost all its votes) are refitted by the damped Newton of `bt_mle_batch`.
    """
    k = len(point)
    with single_blas_thread():
        info_inv = constrained_inverse(information, k, ridge)
        theta = np.broadcast_to(point, (len(w_ij), k)).copy()
        step_size = np.full(len(w_ij), np.inf)
        for iteration in range(CHORD_ITERATIONS):
            p = sigmoid(theta[:, i] - theta[:, j])
            grad = _scatter_pairs((w_ij + w_ji) * p - w_ij, i, j, k) + ridge * theta
            step = grad @ info_inv
            theta -= step
            theta -= theta.mean(axis=1, keepdims=True)
            previous, step_size = step_size, np.abs(step).max(axis=1)
            if step_size.max() < CHORD_TOL:
                break
            if iteration >= 1 and np.median(step_size / previous) > 0.3:
                break  # sparse data: the information varies too much between resamples for the chord method
    slow = ~(step_size < CHORD_TOL)  # also catches NaN
    if slow.any():
        theta0 = np.broadcast_to(point, (int(slow.sum()), k)).copy()
        theta[slow] = _fit_half_pairs(i, j, w_ij[slow], w_ji[slow], theta0, ridge, BOOTSTRAP_TOL)
    return theta


# --------------------------------------------------------------------------------------------------
# Davidson's tie model
# --------------------------------------------------------------------------------------------------


def _davidson_objective(decisive: np.ndarray, ties: np.ndarray, params: np.ndarray, ridge: float) -> np.ndarray:
    """decisive (B,K,K) wins of i over j, ties (B,K,K) symmetric, params (B, K+1) = [theta, log_nu]."""
    theta, log_nu = params[:, :-1], params[:, -1]
    d = theta[:, :, None] - theta[:, None, :]  # (B, K, K)
    c = 2.0 * np.cosh(0.5 * d) + np.exp(log_nu)[:, None, None]
    n = decisive + decisive.transpose(0, 2, 1) + ties
    ll = (decisive * d).sum(axis=(1, 2)) * 0.5
    ll += 0.5 * ties.sum(axis=(1, 2)) * log_nu
    ll -= 0.5 * (n * np.log(c)).sum(axis=(1, 2))
    return -ll + 0.5 * ridge * (params**2).sum(axis=1)


def _davidson_grad_hess(
    decisive: np.ndarray, ties: np.ndarray, params: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    theta, log_nu = params[:, :-1], params[:, -1]
    b, k = theta.shape
    d = theta[:, :, None] - theta[:, None, :]  # (B, K, K)
    nu = np.exp(log_nu)[:, None, None]  # (B, 1, 1)
    ch, sh = np.cosh(0.5 * d), np.sinh(0.5 * d)
    c = 2.0 * ch + nu
    n = decisive + decisive.transpose(0, 2, 1) + ties  # (B, K, K)
    s = sh / c  # d log c / d d
    h = (0.5 * ch * c - sh**2) / c**2  # d s / d d
    grad = np.empty((b, k + 1))
    grad[:, :k] = -0.5 * (decisive - decisive.transpose(0, 2, 1)).sum(axis=2) + (n * s).sum(axis=2)
    grad[:, :k] += ridge * theta
    grad[:, k] = -0.5 * ties.sum(axis=(1, 2)) + 0.5 * (n * nu / c).sum(axis=(1, 2))
    hess = np.zeros((b, k + 1, k + 1))
    w = n * h
    hess[:, :k, :k] = -w
    idx = np.arange(k)
    hess[:, idx, idx] = w.sum(axis=2) + ridge
    cross = -(n * sh * nu / c**2).sum(axis=2)  # (B, K)
    hess[:, :k, k] = cross
    hess[:, k, :k] = cross
    hess[:, k, k] = 0.5 * (n * nu * (c - nu) / c**2).sum(axis=(1, 2)) + ridge
    grad[:, k] += ridge * log_nu
    return grad, hess


def _as_ties(ties: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ties = _as_batch(ties, "ties")
    if ties.shape[1:] != shape[1:]:
        raise ValueError(f"ties has shape {ties.shape[1:]}, decisive wins have {shape[1:]}")
    if not np.allclose(ties, ties.transpose(0, 2, 1)):
        raise ValueError("ties must be symmetric: ties[i, j] = ties[j, i] = number of ties between i and j")
    return ties


def davidson_mle_batch(
    decisive: np.ndarray,
    ties: np.ndarray,
    params0: np.ndarray | None = None,
    *,
    ridge: float = DEFAULT_RIDGE,
    tol: float = DEFAULT_TOL,
) -> np.ndarray:
    """Davidson fits of many problems: decisive, ties (B, K, K) -> params (B, K + 1) = [theta, log_nu]."""
    decisive = _as_batch(decisive, "decisive")
    ties = _as_ties(ties, decisive.shape)
    b, k, _ = decisive.shape
    if params0 is None:
        n_ties = ties.sum(axis=(1, 2)) / 2
        n_all = n_ties + decisive.sum(axis=(1, 2))
        share = np.clip(n_ties / np.maximum(n_all, 1.0), 1e-3, 0.9)
        params0 = np.zeros((b, k + 1))
        params0[:, :k] = bt_mle_batch(decisive + ties / 2, ridge=ridge)
        params0[:, k] = np.log(2 * share / (1 - share))
    params = np.broadcast_to(np.asarray(params0, float), (b, k + 1)).copy()
    return newton(
        lambda x, ids: _davidson_objective(decisive[ids], ties[ids], x, ridge),
        lambda x, ids: _davidson_grad_hess(decisive[ids], ties[ids], x, ridge),
        params,
        k,
        tol=tol,
    )


def davidson_mle(decisive: np.ndarray, ties: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> tuple[np.ndarray, float]:
    """Davidson (1970) tie model fit: returns (theta (K,) centred, log_nu).

    decisive[i, j] = decisive wins of i over j; ties[i, j] = ties[j, i] = ties between i and j.
    Equal models tie with probability nu / (2 + nu). The ridge also applies to log_nu, so a data set
    without ties gives a very negative (finite) log_nu instead of -inf.
    """
    params = davidson_mle_batch(decisive, ties, ridge=ridge)[0]
    return params[:-1], float(params[-1])


def davidson_covariance(
    decisive: np.ndarray, ties: np.ndarray, theta: np.ndarray, log_nu: float, *, ridge: float = DEFAULT_RIDGE
) -> np.ndarray:
    """Fisher-information covariance (K + 1, K + 1) of [theta, log_nu], theta constrained to sum to 0."""
    decisive = _as_batch(decisive, "decisive")
    ties = _as_ties(ties, decisive.shape)
    params = np.append(np.asarray(theta, float), log_nu)[None]
    _, hess = _davidson_grad_hess(decisive, ties, params, ridge)
    return constrained_inverse(hess[0], len(theta), ridge)
