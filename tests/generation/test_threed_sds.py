"""The score-distillation gradient on cases with a known answer: a prior that denoises to a fixed image."""

from __future__ import annotations

import pytest
import torch

from generation.threed.sds import SDSSettings, sds_gradient, sds_loss
from tests.generation.threed_support import FixedTargetPrior

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(seed: int, shape=(4, 3, 8, 8)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_velocity_sds_points_from_the_render_to_the_priors_estimate_scaled_by_t():
    target = images(0, (3, 8, 8))
    prior = FixedTargetPrior(target, "velocity")
    x, noise = images(1), images(2).normal_()
    t = torch.tensor([0.05, 0.3, 0.6, 0.95])
    grad = sds_gradient(prior, x, "p", t, noise, guidance_scale=30.0, weighting="t")
    torch.testing.assert_close(grad, t.view(-1, 1, 1, 1) * (x - target), atol=1e-4, rtol=1e-4)
    uniform = sds_gradient(prior, x, "p", t, noise, guidance_scale=30.0, weighting="uniform")
    torch.testing.assert_close(uniform, x - target, atol=2e-4, rtol=1e-4)
    assert prior.calls == [30.0, 30.0]  # the guidance scale reaches the prior


def test_eps_sds_points_to_the_priors_estimate_with_dreamfusions_weight():
    target = images(0, (3, 8, 8))
    prior = FixedTargetPrior(target, "eps")
    x, noise = images(1), images(2).normal_()
    n = torch.tensor([20, 300, 600, 979])
    grad = sds_gradient(prior, x, "p", n, noise, guidance_scale=7.5, weighting="sigma2")
    ab = prior.alphas_cumprod[n].float().view(-1, 1, 1, 1)
    expected = (1 - ab) * (ab / (1 - ab)).sqrt() * (x - target)  # w (eps_hat - eps) with w = 1 - ab
    torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-3)


def test_an_sds_loss_minimised_in_2d_reaches_the_known_optimum():
    """Optimising an image directly by SDS (the plain 2D version) converges to the prior's fixed estimate."""
    for prediction in ("velocity", "eps"):
        target = images(0, (3, 8, 8)).clamp(-0.9, 0.9)
        prior = FixedTargetPrior(target, prediction)
        logits = torch.zeros(2, 3, 8, 8, requires_grad=True)  # rgb = sigmoid(logits): starts grey
        optimiser = torch.optim.Adam([logits], lr=0.05)
        generator = torch.Generator().manual_seed(0)
        start = (torch.sigmoid(logits) * 2 - 1 - target).abs().mean().item()
        for _ in range(300):
            loss = sds_loss(prior, torch.sigmoid(logits), "p", SDSSettings(), generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        end = (torch.sigmoid(logits) * 2 - 1 - target).abs().mean().item()
        assert end < 0.05 * start, (prediction, start, end)


def test_the_sds_loss_gradient_on_the_render_is_the_sds_gradient():
    target = images(0, (3, 8, 8))
    prior = FixedTargetPrior(target, "velocity")
    rgb = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3)).requires_grad_()
    sds_loss(prior, rgb, "p", SDSSettings(weighting="uniform"), torch.Generator().manual_seed(0)).backward()
    # d/d rgb of (x = 2 rgb - 1) with d loss / dx = (x - target) / B
    torch.testing.assert_close(rgb.grad, 2 * ((rgb.detach() * 2 - 1) - target) / 4, atol=1e-4, rtol=1e-4)
