"""Sampling loops: the timestep shift, seeds, classifier-free guidance, and exact analytic endpoints."""

from __future__ import annotations

import pytest
import torch

from generation.flow import make_objective
from generation.mmdit.model import MMDiT, MMDiTConfig
from generation.sampling import (
    ddim_sample,
    ddim_timesteps,
    euler_sample,
    generate_latents,
    initial_noise,
    shift_timesteps,
)

SHAPE = (4, 8, 8)


def tiny_model() -> MMDiT:
    torch.manual_seed(0)
    model = MMDiT(
        MMDiTConfig(
            in_channels=4, sample_size=8, patch_size=2, depth=2, hidden_size=32, num_heads=2, text_dim=12, pooled_dim=10
        )
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model.eval()


def text(batch: int, seed: int = 0, tokens: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"context": torch.randn(batch, tokens, 12, generator=g), "pooled": torch.randn(batch, 10, generator=g)}


def row(cond: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in cond.items()}


class PointMassVelocity(torch.nn.Module):
    """The exact rectified-flow velocity when the data is a single point: the conditional point
    (pooled[:, :C] broadcast) for real prompts. v(z, t) = E[eps - x0 | z_t] = (z - point) / t."""

    def forward(self, z, t, context, pooled, context_mask=None):
        point = pooled[:, : z.shape[1], None, None].expand_as(z)
        return (z - point) / t.view(-1, 1, 1, 1)


class PointMassEps(torch.nn.Module):
    """The exact eps-prediction for point-mass data under a DDPM schedule: (z - sqrt(ab) point) / sqrt(1 - ab)."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod

    def forward(self, z, t, context, pooled, context_mask=None):
        point = pooled[:, : z.shape[1], None, None].expand_as(z)
        ab = self.alphas_cumprod[(t.double() * 1000).round().long()].float().view(-1, 1, 1, 1)
        return (z - ab.sqrt() * point) / (1 - ab).sqrt()


def test_shift_is_identity_at_one_fixes_endpoints_and_is_monotone():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    for alpha in [0.5, 3.0, 6.0]:
        shifted = shift_timesteps(t, alpha)
        assert float(shifted[0]) == 0.0 and float(shifted[-1]) == 1.0
        assert bool((shifted[1:] > shifted[:-1]).all())
        assert bool((shifted[1:-1] > t[1:-1]).all()) == (alpha > 1)  # a > 1 spends more time at high noise
    assert shift_timesteps(0.5, 3.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        shift_timesteps(t, 0.0)


def test_noise_of_an_image_depends_only_on_its_seed():
    alone = initial_noise([7], SHAPE, "cpu")
    batch = initial_noise([3, 7, 11], SHAPE, "cpu")
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(batch[0], batch[1])


def test_same_seed_gives_identical_pixels_on_rerun():
    model = tiny_model()
    args = dict(cond=text(2), uncond=text(1, seed=9), shape=SHAPE, steps=4, guidance_scale=3.0, shift=3.0, seeds=[1, 2])
    first, second = euler_sample(model, **args), euler_sample(model, **args)
    assert torch.equal(first, second)
    assert not torch.allclose(first[0], first[1])


def test_an_image_is_the_same_alone_and_inside_a_batch():
    model = tiny_model()
    cond, uncond = text(3), text(1, seed=9)
    batch = euler_sample(model, cond, uncond, SHAPE, steps=4, guidance_scale=3.0, shift=3.0, seeds=[5, 6, 7])
    alone = euler_sample(model, row(cond, 1), uncond, SHAPE, steps=4, guidance_scale=3.0, shift=3.0, seeds=[6])
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-5)


def test_prompts_of_different_lengths_and_padding_masks_are_batched_correctly():
    model = tiny_model()
    cond = text(1, tokens=5)
    cond["context_mask"] = torch.tensor([[True, True, True, False, False]])
    uncond = text(1, seed=9, tokens=2)  # shorter: padded and masked inside the guidance batch
    masked = euler_sample(model, cond, uncond, SHAPE, steps=3, guidance_scale=2.0, shift=1.0, seeds=[4])
    short = {"context": cond["context"][:, :3], "pooled": cond["pooled"]}
    plain = euler_sample(model, short, uncond, SHAPE, steps=3, guidance_scale=2.0, shift=1.0, seeds=[4])
    torch.testing.assert_close(masked, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 5])
def test_euler_with_the_exact_velocity_ends_on_the_data_point(steps, shift):
    point = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    cond = {"context": torch.zeros(1, 1, 12), "pooled": point}
    out = euler_sample(PointMassVelocity(), cond, None, SHAPE, steps, 1.0, shift, seeds=[0])
    torch.testing.assert_close(out, point[:, :, None, None].expand_as(out), atol=1e-5, rtol=0)


def test_guidance_extrapolates_from_the_unconditional_point():
    a, b, w = torch.tensor([[1.0, 0.0, -1.0, 2.0]]), torch.tensor([[0.0, 0.5, 0.5, 0.0]]), 3.0
    cond = {"context": torch.zeros(1, 1, 12), "pooled": a}
    uncond = {"context": torch.zeros(1, 1, 12), "pooled": b}
    out = euler_sample(PointMassVelocity(), cond, uncond, SHAPE, 6, w, 2.0, seeds=[1])
    expected = (b + w * (a - b))[:, :, None, None].expand_as(out)  # the guided velocity aims there
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["eps/linear", "eps/cos"])
def test_ddim_with_the_exact_noise_prediction_ends_on_the_data_point(name):
    objective = make_objective(name)
    point = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    cond = {"context": torch.zeros(1, 1, 12), "pooled": point}
    out = ddim_sample(PointMassEps(objective.alphas_cumprod), objective, cond, None, SHAPE, 10, 1.0, seeds=[0])
    torch.testing.assert_close(out, point[:, :, None, None].expand_as(out), atol=1e-3, rtol=0)


def test_ddim_timesteps_run_from_the_noisiest_step_to_zero():
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]
    assert ddim_timesteps(1000, 1) == [999]
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 1001)


def test_generate_latents_picks_the_sampler_from_the_objective():
    model = tiny_model()
    cond, uncond = text(1), text(1, seed=9)
    args = dict(shape=SHAPE, steps=3, guidance_scale=2.0, seeds=[3])
    rf = generate_latents(model, "rf/lognorm(0.00,1.00)", cond, uncond, shift=3.0, **args)
    assert torch.equal(rf, euler_sample(model, cond, uncond, shift=3.0, **args))
    eps = generate_latents(model, "eps/cos", cond, uncond, shift=1.0, **args)
    assert torch.equal(eps, ddim_sample(model, make_objective("eps/cos"), cond, uncond, **args))
    with pytest.raises(ValueError, match="shift"):
        generate_latents(model, "eps/linear", cond, uncond, shift=3.0, **args)
    with pytest.raises(ValueError, match="unknown objective"):
        generate_latents(model, "edm", cond, uncond, shift=1.0, **args)


def test_bad_sampling_inputs_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="one per seed"):
        euler_sample(model, text(2), None, SHAPE, 2, 1.0, 1.0, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="unconditional"):
        euler_sample(model, text(1), None, SHAPE, 2, 4.0, 1.0, seeds=[1])
    with pytest.raises(ValueError, match="steps"):
        euler_sample(model, text(1), None, SHAPE, 0, 1.0, 1.0, seeds=[1])
