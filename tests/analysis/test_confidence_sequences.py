"""The anytime-valid boundary: error rates under repeated looks, and its functions agree with each other."""

import numpy as np
import pytest

from analysis.confidence_sequences import (
    TopModelEvidence,
    confidence_radius,
    family_alphas,
    information_to_claim,
    log_evidence,
    one_sided_radius,
)

ALPHA = 0.05


def _random_walks(n_paths, n_looks, info_step, drift, seed):
    """Evidence S = I * d_hat of a Gaussian difference estimate, seen at information info_step, 2*info_step..."""
    rng = np.random.default_rng(seed)
    info = info_step * np.arange(1, n_looks + 1)
    s = np.cumsum(drift * info_step + np.sqrt(info_step) * rng.standard_normal((n_paths, n_looks)), axis=1)
    return info, s


def test_one_sided_boundary_is_crossed_under_the_null_at_most_alpha_of_the_time_however_often_one_looks():
    info, s = _random_walks(4000, 400, 0.5, drift=0.0, seed=1)
    d_hat = s / info
    crossed = (d_hat >= one_sided_radius(info, ALPHA)).any(axis=1)
    assert crossed.mean() <= ALPHA
    # the harness can fail: a plain one-sided z = 1.645 checked at every look crosses far more often
    naive = (d_hat >= 1.6448536269514722 / np.sqrt(info)).any(axis=1)
    assert naive.mean() > 3 * ALPHA


def test_two_sided_interval_covers_the_truth_at_every_look_at_once():
    drift = 0.3
    info, s = _random_walks(3000, 400, 0.5, drift=drift, seed=2)
    d_hat = s / info
    missed = (np.abs(d_hat - drift) > confidence_radius(info, ALPHA)).any(axis=1)
    assert missed.mean() <= ALPHA


def test_boundary_functions_agree_with_each_other():
    info = np.array([5.0, 50.0, 500.0, 5000.0])
    radius = one_sided_radius(info, 0.01)
    # the claim is made exactly when the evidence reaches log(1 / alpha)
    np.testing.assert_allclose(log_evidence(radius, info), np.log(1 / 0.01), rtol=1e-6)
    # one-sided claims need less than the two-sided interval at the same level
    assert np.all(radius < confidence_radius(info, 0.01))
    # more information, narrower; stricter alpha, wider; no information, infinite
    assert np.all(np.diff(radius) < 0)
    assert np.all(one_sided_radius(info, 0.001) > radius)
    assert np.isinf(one_sided_radius(0.0, 0.05)) and np.isinf(confidence_radius(0.0, 0.05))
    needed = information_to_claim(0.3, 0.01)
    np.testing.assert_allclose(one_sided_radius(needed, 0.01), 0.3, rtol=1e-6)
    assert np.isinf(information_to_claim(-0.1, 0.01))


def test_family_levels_split_alpha_over_the_rivals_and_over_all_pairs():
    assert family_alphas(2, 0.05) == (0.05, 0.05)
    top, order = family_alphas(5, 0.05)
    assert top == pytest.approx(0.05 / 4) and order == pytest.approx(0.05 / 10)


# --- the top model's e-processes, kept across looks (TopModelEvidence) ------------------------------


def _tied_campaigns(n_paths, k, n_looks, look_every, seed):
    """Gaussian campaigns among k equal models, steered like "the trap" of the notes: 90% of the votes on
    the current top two (by the fit at the last look), 10% on a random pair. Each vote on (i, j) observes
    theta_i - theta_j plus unit noise (information 1: as four coin-flip votes). Yields, at every
    look, (diff (P, K, K), info (P, K, K), theta_hat (P, K))."""
    rng = np.random.default_rng(seed)
    lap = np.zeros((n_paths, k, k))  # Fisher information of theta
    score = np.zeros((n_paths, k))  # sum of x * y / 4
    theta = np.zeros((n_paths, k))
    paths = np.arange(n_paths)
    for _ in range(n_looks):
        order = np.argsort(-theta + 1e-9 * rng.random(theta.shape), axis=1)
        for _ in range(look_every):
            a, b = order[:, 0].copy(), order[:, 1].copy()
            explore = rng.random(n_paths) < 0.1
            ra = rng.integers(0, k, n_paths)
            rb = (ra + rng.integers(1, k, n_paths)) % k
            a, b = np.where(explore, ra, a), np.where(explore, rb, b)
            y = rng.standard_normal(n_paths)  # true difference 0
            for u, v, sign in ((a, a, 1.0), (b, b, 1.0), (a, b, -1.0), (b, a, -1.0)):
                np.add.at(lap, (paths, u, v), sign)
            np.add.at(score, (paths, a), y)
            np.add.at(score, (paths, b), -y)
        cov = np.linalg.pinv(lap + 1.0 / k) - 1.0 / k  # sum-to-zero generalised inverse
        theta = np.einsum("pij,pj->pi", cov, score)
        diag = np.diagonal(cov, axis1=1, axis2=2)
        var = diag[:, :, None] + diag[:, None, :] - 2.0 * cov
        info = np.where(var > 1e-12, 1.0 / np.maximum(var, 1e-12), 0.0)
        yield theta[:, :, None] - theta[:, None, :], info, theta


def test_top_model_e_process_rejects_a_true_best_model_at_most_alpha_of_the_time():
    """With all models equal, "model 0 is (a) best" is true, so E_0 must reach 1/alpha in at most alpha of
    the campaigns, although the wealth follows the current leader and the votes chase the top two."""
    k, n_paths = 4, 3000
    tracker = TopModelEvidence(k, batch=(n_paths,))
    crossed = np.zeros(n_paths, dtype=bool)
    naive = np.zeros(n_paths, dtype=bool)
    for diff, info, theta in _tied_campaigns(n_paths, k, n_looks=100, look_every=10, seed=11):
        crossed |= tracker.look(diff, info, theta)[:, 0] >= np.log(1 / ALPHA)
        # the harness can fail: a plain one-sided z = 1.645 against the best rival, at every look
        z = diff[:, 1:, 0] * np.sqrt(info[:, 1:, 0])
        naive |= z.max(axis=1) >= 1.6448536269514722
    assert crossed.mean() <= ALPHA  # observed 2.8%
    assert naive.mean() > 6 * ALPHA


def test_top_model_e_process_grows_when_one_model_is_clearly_best_and_moves_its_bet():
    k = 3
    tracker = TopModelEvidence(k)
    theta = np.array([0.5, 0.0, -0.5])
    diff = theta[:, None] - theta[None, :]
    info = np.full((k, k), 1.0)
    np.fill_diagonal(info, 0.0)
    start = tracker.look(diff, info, theta)
    np.testing.assert_allclose(start[0], np.log(np.mean(np.exp(log_evidence(diff[[1, 2], 0], 1.0)))))
    assert list(tracker.bet) == [1, 0, 0]  # each test bets on the strongest other model
    later = tracker.look(diff, 400 * info, theta)
    assert later[1] > np.log(1 / ALPHA) and later[2] > np.log(1 / ALPHA)  # 1 and 2 are not the best
    assert later[0] < 0  # 0 is: its e-value shrinks
    # wealth moves, it is not created: a new bet starts from the current total
    swapped = tracker.look(diff, 400 * info, theta[[1, 0, 2]])
    np.testing.assert_allclose(swapped, later)
