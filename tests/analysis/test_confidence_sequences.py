"""The anytime-valid boundary: error rates under repeated looks, and its functions agree with each other."""

import numpy as np
import pytest

from analysis.confidence_sequences import (
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
