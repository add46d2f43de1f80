"""Bradley-Terry ratings from pairwise votes, with confidence intervals.

Two layers:

* the numeric core, on a (K, K) count matrix: `bt_mle`, `bt_covariance` (ties counted as half a
  win each) and `davidson_mle`, `davidson_covariance` (Davidson's 1970 tie model);
* the vote-level API on a DataFrame of votes: `fit_bradley_terry`, `win_rate_matrix`,
  `predict_win_probability`, `sd3_win_rates`.

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

from collections.abc import Callable

import numpy as np

DEFAULT_RIDGE = 1e-6  # prior precision on theta (see module docstring)
ELO_PER_NAT = 400.0 / np.log(10.0)  # Elo points per unit of natural-log odds
ELO_MEAN = 1000.0  # the average model's score
WINNER_VALUES = ("model_a", "model_b", "tie", "both_bad")
MAX_NEWTON_STEP = 10.0  # largest change of any theta in one Newton step (keeps exp() finite)


# --------------------------------------------------------------------------------------------------
# Numeric core: batched damped Newton on count matrices
# --------------------------------------------------------------------------------------------------


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _half_objective(wins: np.ndarray, theta: np.ndarray, ridge: float) -> np.ndarray:
    """-loglik + ridge/2 |theta|^2 for a batch: wins (B, K, K), theta (B, K) -> (B,)."""
    d = theta[:, :, None] - theta[:, None, :]  # (B, K, K)
    nll = -(wins * _log_sigmoid(d)).sum(axis=(1, 2))
    return nll + 0.5 * ridge * (theta**2).sum(axis=1)


def _half_grad_hess(wins: np.ndarray, theta: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (B, K) and Hessian (B, K, K) of the ties-as-half objective."""
    n = wins + wins.transpose(0, 2, 1)  # (B, K, K) comparisons per pair
    p = _sigmoid(theta[:, :, None] - theta[:, None, :])  # (B, K, K) P(i beats j)
    grad = (n * p).sum(axis=2) - wins.sum(axis=2) + ridge * theta
    w = n * p * (1.0 - p)
    hess = -w
    k = theta.shape[1]
    idx = np.arange(k)
    hess[:, idx, idx] = w.sum(axis=2) + ridge
    return grad, hess


def _davidson_terms(theta: np.ndarray, log_nu: np.ndarray):
    d = theta[:, :, None] - theta[:, None, :]  # (B, K, K)
    nu = np.exp(log_nu)[:, None, None]  # (B, 1, 1)
    ch, sh = np.cosh(0.5 * d), np.sinh(0.5 * d)
    c = 2.0 * ch + nu
    return nu, ch, sh, c


def _davidson_objective(
    decisive: np.ndarray, ties: np.ndarray, params: np.ndarray, ridge: float
) -> np.ndarray:
    """decisive (B,K,K) wins of i over j, ties (B,K,K) symmetric, params (B, K+1) = [theta, log_nu]."""
    theta, log_nu = params[:, :-1], params[:, -1]
    d = theta[:, :, None] - theta[:, None, :]  # (B, K, K)
    c = 2.0 * np.cosh(0.5 * d) + np.exp(log_nu)[:, None, None]
    n = decisive + decisive.transpose(0, 2, 1) + ties
    ll = (decisive * d).sum(axis=(1, 2)) * 0.5
    ll += 0.5 * ties.sum(axis=(1, 2)) * log_nu
    ll -= 0.5 * (n * np.log(c)).sum(axis=(1, 2))
    return -ll + 0.5 * ridge * (theta**2).sum(axis=1)


def _davidson_grad_hess(decisive: np.ndarray, ties: np.ndarray, params: np.ndarray, ridge: float):
    theta, log_nu = params[:, :-1], params[:, -1]
    b, k = theta.shape
    nu, ch, sh, c = _davidson_terms(theta, log_nu)
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
    hess[:, k, k] = 0.5 * (n * nu * (c - nu) / c**2).sum(axis=(1, 2))
    return grad, hess


def _newton(
    objective: Callable[[np.ndarray], np.ndarray],
    grad_hess: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    params: np.ndarray,
    n_theta: int,
    *,
    max_iter: int = 200,
    tol: float = 1e-11,
) -> np.ndarray:
    """Damped Newton for a batch of problems; params (B, P), the first n_theta of which sum to zero.

    The objective is invariant (up to the ridge) to shifting theta, so the Hessian is nearly singular
    along (1, ..., 1, 0...). Adding J/K to the theta block (J = ones) makes it well conditioned without
    changing the stationary point: the gradient has no component along (1, ..., 1) at a centred point.
    Backtracking (Armijo) keeps every step a descent step, so fits where the MLE does not exist still
    converge to the ridge-penalised optimum.
    """
    params = params.copy()
    params[:, :n_theta] -= params[:, :n_theta].mean(axis=1, keepdims=True)
    active = np.ones(len(params), dtype=bool)
    gauge = np.zeros((params.shape[1], params.shape[1]))
    gauge[:n_theta, :n_theta] = 1.0 / n_theta
    for _ in range(max_iter):
        if not active.any():
            break
        x = params[active]
        f0 = objective(x, active)
        grad, hess = grad_hess(x, active)
        try:
            step = -np.linalg.solve(hess + gauge, grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -grad / np.maximum(np.abs(np.diagonal(hess, axis1=1, axis2=2)), 1e-12)
        slope = (grad * step).sum(axis=1)
        bad = ~(slope < 0) | ~np.isfinite(slope)  # not a descent direction: fall back to scaled gradient
        if bad.any():
            diag = np.maximum(np.abs(np.diagonal(hess[bad], axis1=1, axis2=2)), 1e-12)
            step[bad] = -grad[bad] / diag
            slope[bad] = (grad[bad] * step[bad]).sum(axis=1)
        biggest = np.abs(step).max(axis=1)
        step *= np.minimum(1.0, MAX_NEWTON_STEP / np.maximum(biggest, 1e-300))[:, None]
        slope = (grad * step).sum(axis=1)
        alpha = np.ones(len(x))
        accepted = np.zeros(len(x), dtype=bool)
        for _ in range(50):
            trial = x + alpha[:, None] * step
            f1 = objective(trial, active)
            ok = ~accepted & (f1 <= f0 + 1e-4 * alpha * slope + 1e-13 * np.abs(f0))
            accepted |= ok
            if accepted.all():
                break
            alpha = np.where(accepted, alpha, 0.5 * alpha)
        alpha = np.where(accepted, alpha, 0.0)
        new = x + alpha[:, None] * step
        new[:, :n_theta] -= new[:, :n_theta].mean(axis=1, keepdims=True)
        params[active] = new
        moved = np.abs(alpha[:, None] * step).max(axis=1)
        done = (moved < tol) | (-slope < 1e-22 * (1.0 + np.abs(f0))) | (alpha == 0.0)
        ids = np.flatnonzero(active)
        active[ids[done]] = False
    return params


def _as_batch(wins: np.ndarray, name: str = "wins") -> np.ndarray:
    wins = np.asarray(wins, dtype=float)
    if wins.ndim == 2:
        wins = wins[None]
    if wins.ndim != 3 or wins.shape[1] != wins.shape[2]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {wins.shape}")
    if wins.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 models, got {wins.shape[1]}")
    if not np.isfinite(wins).all() or (wins < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative counts")
    k = wins.shape[1]
    if np.any(wins[:, np.arange(k), np.arange(k)] != 0):
        raise ValueError(f"{name} must have a zero diagonal (a model is never compared with itself)")
    return wins


def bt_mle_batch(
    wins: np.ndarray, theta0: np.ndarray | None = None, *, ridge: float = DEFAULT_RIDGE
) -> np.ndarray:
    """Fit many count matrices at once: wins (B, K, K) -> theta (B, K), each centred to mean 0."""
    wins = _as_batch(wins)
    b, k, _ = wins.shape
    theta = np.zeros((b, k)) if theta0 is None else np.broadcast_to(np.asarray(theta0, float), (b, k)).copy()
    return _newton(
        lambda t, m: _half_objective(wins[m], t, ridge),
        lambda t, m: _half_grad_hess(wins[m], t, ridge),
        theta,
        k,
    )


def bt_mle(wins: np.ndarray, *, ridge: float = DEFAULT_RIDGE, theta0: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry maximum-likelihood strengths from a win-count matrix.

    wins: (K, K) float, wins[i, j] = number of wins of i over j (ties already split as 0.5 / 0.5);
    returns theta (K,), natural-log strengths centred to mean 0, P(i beats j) = sigmoid(theta_i - theta_j).
    Models without wins or losses and disconnected comparison graphs are handled by the tiny ridge prior
    (see the module docstring); a model with no votes at all gets 0.
    """
    return bt_mle_batch(wins, theta0, ridge=ridge)[0]


def _constrained_inverse(hess: np.ndarray, n_theta: int, ridge: float) -> np.ndarray:
    """Covariance = inverse of the information on the sum-to-zero subspace of the first n_theta params.

    With v = (1, ..., 1, 0, ...)/sqrt(K) the (ridge-sized) null direction of the information H,
    (H + v v^T)^-1 - v v^T / (1 + ridge) is the Moore-Penrose inverse restricted to sum(theta) = 0.
    """
    size = hess.shape[-1]
    gauge = np.zeros((size, size))
    gauge[:n_theta, :n_theta] = 1.0 / n_theta
    cov = np.linalg.inv(hess + gauge) - gauge / (1.0 + ridge)
    return 0.5 * (cov + np.swapaxes(cov, -1, -2))


def bt_information(wins: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Fisher information (K, K) of theta under the ties-as-half model (plus the ridge)."""
    wins = _as_batch(wins)[0]
    _, hess = _half_grad_hess(wins[None], np.asarray(theta, float)[None], ridge)
    return hess[0]


def bt_covariance(wins: np.ndarray, theta: np.ndarray, *, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """Fisher-information covariance (K, K) of theta under the sum-to-zero constraint.

    Var(theta_i - theta_j) = c^T cov c with c = e_i - e_j. Inside a connected comparison graph this is the
    usual inverse information; between disconnected pieces the variance is ~1/ridge (no information).
    """
    return _constrained_inverse(bt_information(wins, theta, ridge=ridge), len(theta), ridge)
