"""Training objectives: timestep densities against their formulas, noising algebra, eps schedules, the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from generation.flow import (
    CosMapTimesteps,
    EpsPrediction,
    LogitNormalTimesteps,
    ModeTimesteps,
    RectifiedFlow,
    UniformTimesteps,
    cosine_alphas_cumprod,
    linear_alphas_cumprod,
    make_objective,
    training_loss,
)

DENSITIES = [
    UniformTimesteps(),
    LogitNormalTimesteps(0.0, 1.0),
    LogitNormalTimesteps(1.0, 0.6),
    ModeTimesteps(1.29),
    ModeTimesteps(-0.5),
    CosMapTimesteps(),
]


def draw(density, n=20_000, seed=0) -> np.ndarray:
    return density.sample(n, torch.Generator().manual_seed(seed)).double().numpy()


def as_numpy_fn(fn):
    return lambda t: fn(torch.as_tensor(np.asarray(t, dtype=np.float64))).numpy()


@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: d.name)
def test_density_integrates_to_one(density):
    total, _ = integrate.quad(lambda t: float(density.density(torch.tensor([t]))[0]), 0, 1, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: d.name)
def test_density_is_the_derivative_of_the_cdf(density):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-5
    numeric = (density.cdf(t + h) - density.cdf(t - h)) / (2 * h)
    torch.testing.assert_close(density.density(t), numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: d.name)
def test_samples_follow_the_distribution_kolmogorov_smirnov(density):
    samples = draw(density)
    assert samples.min() >= 0 and samples.max() <= 1
    assert stats.kstest(samples, as_numpy_fn(density.cdf)).pvalue > 1e-3


def test_logit_normal_empirical_quantiles_match_sigmoid_of_normal_quantiles():
    for m, s in [(0.0, 1.0), (1.0, 0.6), (-0.5, 2.0)]:
        density = LogitNormalTimesteps(m, s)
        samples = draw(density, n=50_000, seed=1)
        q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
        analytic = 1 / (1 + np.exp(-(m + s * stats.norm.ppf(q))))
        np.testing.assert_allclose(np.quantile(samples, q), analytic, atol=0.01)
        np.testing.assert_allclose(density.quantile(torch.tensor(q)).numpy(), analytic, atol=1e-12)


def test_logit_normal_density_matches_its_closed_form():
    m, s, t = 0.3, 0.8, 0.7
    logit = math.log(t / (1 - t))
    expected = math.exp(-((logit - m) ** 2) / (2 * s * s)) / (s * math.sqrt(2 * math.pi) * t * (1 - t))
    density = LogitNormalTimesteps(m, s).density(torch.tensor([t], dtype=torch.float64))
    assert float(density[0]) == pytest.approx(expected, rel=1e-12)


def test_cosmap_density_matches_the_paper_and_mode_is_uniform_at_zero():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    paper = 2 / (math.pi - 2 * math.pi * t + 2 * math.pi * t**2)
    torch.testing.assert_close(CosMapTimesteps().density(t), paper)
    torch.testing.assert_close(ModeTimesteps(0.0).density(t), torch.ones_like(t), atol=1e-9, rtol=0)
    mode = ModeTimesteps(1.29)
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(mode.inverse(mode.f_mode(u)), u, atol=1e-12, rtol=0)
    assert float(mode.density(torch.tensor([0.5]))) > float(mode.density(torch.tensor([0.05])))  # peaked


def test_out_of_range_parameters_are_refused():
    with pytest.raises(ValueError):
        ModeTimesteps(1.8)
    with pytest.raises(ValueError):
        LogitNormalTimesteps(0.0, 0.0)
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("rf/lognorm(0,1")
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("v/cos")


def test_objective_names_round_trip():
    for name in [
        "rf/uniform",
        "rf/lognorm(0.00,1.00)",
        "rf/lognorm(1.00,0.60)",
        "rf/mode(1.29)",
        "rf/cosmap",
        "eps/linear",
        "eps/cos",
    ]:
        assert make_objective(name).name == name
    assert make_objective("rf/lognorm(0, 1)").name == "rf/lognorm(0.00,1.00)"
    assert make_objective("rf/mode(-0.5)").density == ModeTimesteps(-0.5)


def test_rectified_flow_interpolation_and_velocity_target():
    objective = RectifiedFlow(UniformTimesteps())
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.0, 0.25, 1.0])
    z = objective.make_noisy(x0, noise, t)
    torch.testing.assert_close(z[0], x0[0])
    torch.testing.assert_close(z[2], noise[2])
    torch.testing.assert_close(z[1], 0.75 * x0[1] + 0.25 * noise[1])
    v = objective.target(x0, noise, t)
    h = 1e-3  # the target is dz/dt along the straight path
    torch.testing.assert_close((objective.make_noisy(x0, noise, t + h) - z) / h, v, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(z - t.view(-1, 1, 1, 1) * v, x0)  # one Euler step to t = 0 recovers x0


def test_eps_schedules_have_the_published_endpoints():
    linear = linear_alphas_cumprod()
    assert linear.shape == (1000,)
    assert float(linear[0]) == pytest.approx(1 - 0.00085, abs=1e-12)
    assert float(linear[-1]) == pytest.approx(0.0047, abs=1e-4)  # Stable Diffusion's final alpha_bar
    assert bool((linear[1:] < linear[:-1]).all())

    cosine = cosine_alphas_cumprod()
    assert float(cosine[0]) > 0.9999 and float(cosine[-1]) < 1e-6
    f = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(cosine[499]) == pytest.approx(f(0.5) / f(0.0), rel=1e-9)  # closed form where not clipped
    assert bool((cosine[1:] < cosine[:-1]).all())


def test_eps_objective_noises_with_the_schedule_and_targets_the_noise():
    objective = make_objective("eps/linear")
    assert isinstance(objective, EpsPrediction)
    t = objective.sample_t(10_000, torch.Generator().manual_seed(0))
    steps = t.double() * 1000  # what the timestep embedding sees: the integer step
    assert (steps - steps.round()).abs().max() < 1e-4
    assert steps.round().min() == 0 and steps.round().max() == 999
    assert len(steps.round().unique()) == 1000
    x0, noise = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    t = torch.tensor([0.0, 0.999])
    z = objective.make_noisy(x0, noise, t)
    ab = linear_alphas_cumprod()
    torch.testing.assert_close(z[1], float(ab[999].sqrt()) * x0[1] + float((1 - ab[999]).sqrt()) * noise[1])
    torch.testing.assert_close(objective.target(x0, noise, t), noise)


@pytest.mark.parametrize("name", ["rf/lognorm(0.00,1.00)", "eps/cos"])
def test_training_loss_is_zero_for_a_perfect_model_and_reproducible_per_generator(name):
    objective = make_objective(name)
    x0 = torch.randn(4, 3, 8, 8)

    def perfect(z_t, t, context, pooled):  # knows x0, so it can give the exact target
        noise = z_t - objective.make_noisy(x0, torch.zeros_like(x0), t)
        scale = objective.make_noisy(torch.zeros_like(x0), torch.ones_like(x0), t)
        return objective.target(x0, noise / scale, t)

    cond = {"context": torch.zeros(4, 1, 2), "pooled": torch.zeros(4, 2)}
    assert float(training_loss(perfect, x0, cond, name, torch.Generator().manual_seed(3))) < 1e-10

    zero = lambda z_t, t, **cond: torch.zeros_like(z_t)  # noqa: E731
    a = training_loss(zero, x0, cond, objective, torch.Generator().manual_seed(5))
    b = training_loss(zero, x0, cond, objective, torch.Generator().manual_seed(5))
    c = training_loss(zero, x0, cond, objective, torch.Generator().manual_seed(6))
    assert float(a) == float(b) != float(c) and float(a) > 0.1
