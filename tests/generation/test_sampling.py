"""Sampling loops: the timestep shift, seeds, classifier-free guidance, exact analytic endpoints, and the eps
samplers' settings (timestep grid, clipping, integer timesteps) against diffusers' own schedulers."""

from __future__ import annotations

import pytest
import torch

from generation.flow import make_objective
from generation.mmdit.model import MMDiT, MMDiTConfig
from generation.sampling import (
    SamplerSettings,
    eps_timesteps,
    initial_noise,
    sample,
    shift_timesteps,
)

SHAPE = (4, 8, 8)
RF = "rf/lognorm(0.00,1.00)"  # any rectified-flow objective samples with the Euler loop


def euler(model, cond, uncond, steps, guidance_scale, shift, seeds, shape=SHAPE):
    settings = SamplerSettings(steps=steps, guidance_scale=guidance_scale, shift=shift)
    return sample(model, RF, cond, uncond, shape=shape, seeds=seeds, settings=settings)


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
    args = dict(cond=text(2), uncond=text(1, seed=9), steps=4, guidance_scale=3.0, shift=3.0, seeds=[1, 2])
    first, second = euler(model, **args), euler(model, **args)
    assert torch.equal(first, second)
    assert not torch.allclose(first[0], first[1])


def test_an_image_is_the_same_alone_and_inside_a_batch():
    model = tiny_model()
    cond, uncond = text(3), text(1, seed=9)
    batch = euler(model, cond, uncond, steps=4, guidance_scale=3.0, shift=3.0, seeds=[5, 6, 7])
    alone = euler(model, row(cond, 1), uncond, steps=4, guidance_scale=3.0, shift=3.0, seeds=[6])
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-5)


def test_prompts_of_different_lengths_and_padding_masks_are_batched_correctly():
    model = tiny_model()
    cond = text(1, tokens=5)
    cond["context_mask"] = torch.tensor([[True, True, True, False, False]])
    uncond = text(1, seed=9, tokens=2)  # shorter: padded and masked inside the guidance batch
    masked = euler(model, cond, uncond, steps=3, guidance_scale=2.0, shift=1.0, seeds=[4])
    short = {"context": cond["context"][:, :3], "pooled": cond["pooled"]}
    plain = euler(model, short, uncond, steps=3, guidance_scale=2.0, shift=1.0, seeds=[4])
    torch.testing.assert_close(masked, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 5])
def test_euler_with_the_exact_velocity_ends_on_the_data_point(steps, shift):
    point = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    cond = {"context": torch.zeros(1, 1, 12), "pooled": point}
    out = euler(PointMassVelocity(), cond, None, steps, 1.0, shift, seeds=[0])
    torch.testing.assert_close(out, point[:, :, None, None].expand_as(out), atol=1e-5, rtol=0)


def test_guidance_extrapolates_from_the_unconditional_point():
    a, b, w = torch.tensor([[1.0, 0.0, -1.0, 2.0]]), torch.tensor([[0.0, 0.5, 0.5, 0.0]]), 3.0
    cond = {"context": torch.zeros(1, 1, 12), "pooled": a}
    uncond = {"context": torch.zeros(1, 1, 12), "pooled": b}
    out = euler(PointMassVelocity(), cond, uncond, 6, w, 2.0, seeds=[1])
    expected = (b + w * (a - b))[:, :, None, None].expand_as(out)  # the guided velocity aims there
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("name", ["eps/linear", "eps/cos"])
def test_eps_samplers_with_the_exact_noise_prediction_end_on_the_data_point(name, sampler):
    objective = make_objective(name)
    point = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    cond = {"context": torch.zeros(1, 1, 12), "pooled": point}
    settings = SamplerSettings(steps=10, guidance_scale=1.0, sampler=sampler)
    out = sample(
        PointMassEps(objective.alphas_cumprod), objective, cond, None, shape=SHAPE, seeds=[0], settings=settings
    )
    torch.testing.assert_close(out, point[:, :, None, None].expand_as(out), atol=1e-3, rtol=0)


def test_eps_timesteps_run_from_the_noisiest_step_to_zero():
    assert eps_timesteps(1000, 4) == [999, 666, 333, 0]
    assert eps_timesteps(1000, 1) == [999]
    assert eps_timesteps(1000, 4, "leading") == [750, 500, 250, 0]
    with pytest.raises(ValueError):
        eps_timesteps(1000, 1001)


@pytest.mark.parametrize("steps", [1, 7, 28, 50])
def test_leading_spacing_is_the_grid_of_diffusers_schedulers(steps):
    from diffusers import DDIMScheduler, DDPMScheduler

    for cls in (DDIMScheduler, DDPMScheduler):
        scheduler = cls(num_train_timesteps=1000)
        scheduler.set_timesteps(steps)
        assert eps_timesteps(1000, steps, "leading") == scheduler.timesteps.tolist()


def test_sample_picks_the_loop_from_the_objective():
    model = tiny_model()
    cond, uncond = text(1), text(1, seed=9)
    args = dict(shape=SHAPE, seeds=[3])
    rf = sample(model, RF, cond, uncond, settings=SamplerSettings(steps=3, guidance_scale=2.0, shift=3.0), **args)
    explicit = SamplerSettings(steps=3, guidance_scale=2.0, shift=3.0, sampler="euler")
    assert torch.equal(rf, sample(model, "rf/cosmap", cond, uncond, settings=explicit, **args))
    eps = sample(model, "eps/cos", cond, uncond, settings=SamplerSettings(steps=3, guidance_scale=2.0), **args)
    ddim = SamplerSettings(steps=3, guidance_scale=2.0, sampler="ddim")
    assert torch.equal(eps, sample(model, make_objective("eps/cos"), cond, uncond, settings=ddim, **args))
    with pytest.raises(ValueError, match="shift"):
        sample(model, "eps/linear", cond, uncond, settings=SamplerSettings(steps=3, shift=3.0), **args)
    with pytest.raises(ValueError, match="unknown objective"):
        sample(model, "edm", cond, uncond, settings=SamplerSettings(steps=3), **args)
    with pytest.raises(ValueError, match="samples with ddim or ddpm, not euler"):
        sample(model, "eps/linear", cond, uncond, settings=SamplerSettings(steps=3, sampler="euler"), **args)
    with pytest.raises(ValueError, match="samples with euler, not ddpm"):
        sample(model, RF, cond, uncond, settings=SamplerSettings(steps=3, sampler="ddpm"), **args)


def test_ddpm_draws_per_image_noise_tied_to_the_seed():
    model = tiny_model()
    cond, uncond = text(3), text(1, seed=9)
    settings = SamplerSettings(steps=4, guidance_scale=2.0, sampler="ddpm")
    batch = sample(model, "eps/linear", cond, uncond, shape=SHAPE, seeds=[5, 6, 7], settings=settings)
    again = sample(model, "eps/linear", cond, uncond, shape=SHAPE, seeds=[5, 6, 7], settings=settings)
    alone = sample(model, "eps/linear", row(cond, 1), uncond, shape=SHAPE, seeds=[6], settings=settings)
    assert torch.equal(batch, again)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-5, rtol=1e-5)
    ddim = SamplerSettings(steps=4, guidance_scale=2.0, sampler="ddim")
    deterministic = sample(model, "eps/linear", cond, uncond, shape=SHAPE, seeds=[5, 6, 7], settings=ddim)
    assert not torch.allclose(batch, deterministic)  # DDPM adds fresh noise at every step but the last


class RecordsTimesteps(torch.nn.Module):
    """eps = z / 2, remembering the timesteps it is given."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, z, t, context, pooled, context_mask=None):
        self.seen.append(t)
        return z / 2


def test_eps_models_get_the_fraction_of_training_steps_or_the_integer_step():
    cond = {"context": torch.zeros(2, 1, 12), "pooled": torch.zeros(2, 10)}
    for timestep_input, expected in [("fraction", [0.75, 0.5, 0.25, 0.0]), ("index", [750, 500, 250, 0])]:
        model = RecordsTimesteps()
        settings = SamplerSettings(steps=4, guidance_scale=1.0, spacing="leading", timestep_input=timestep_input)
        sample(model, "eps/linear", cond, None, shape=SHAPE, seeds=[0, 1], settings=settings)
        assert [t.tolist() for t in model.seen] == [[v, v] for v in expected]
        assert model.seen[0].dtype == (torch.long if timestep_input == "index" else torch.float32)


def test_clipping_keeps_the_predicted_image_in_range():
    cond = {"context": torch.zeros(1, 1, 12), "pooled": torch.zeros(1, 10)}
    clipped, free = (
        sample(
            RecordsTimesteps(),
            "eps/linear",
            cond,
            None,
            shape=SHAPE,
            seeds=[0],
            settings=SamplerSettings(steps=3, guidance_scale=1.0, clip_sample=clip),
        )
        for clip in (True, False)
    )
    assert clipped.abs().max() <= 1.0 < free.abs().max()  # the last DDIM step lands on the predicted x0


class ToyUNet(torch.nn.Module):
    """A fixed, nonlinear eps-prediction of integer timesteps with guidance-sensitive text inputs."""

    def forward(self, z, n, context, pooled, context_mask=None):
        scale = (n.float() / 1000).view(-1, 1, 1, 1)
        return torch.tanh(z * (0.5 + scale)) + pooled[:, : z.shape[1], None, None] * 0.1


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_unet_settings_reproduce_diffusers_schedulers(sampler):
    """spacing "leading", clip_sample and integer timesteps are what diffusers' DDIM (eta 0) and DDPM do; the
    step noise of DDPM comes from a generator per image seeded seed + 1."""
    from diffusers import DDIMScheduler, DDPMScheduler

    seeds, steps, w = [3, 4], 7, 2.5
    cond = {"context": torch.zeros(2, 1, 12), "pooled": torch.randn(2, 10, generator=torch.Generator().manual_seed(1))}
    uncond = {"context": torch.zeros(1, 1, 12), "pooled": torch.zeros(1, 10)}
    settings = SamplerSettings(
        steps=steps, guidance_scale=w, sampler=sampler, spacing="leading", clip_sample=True, timestep_input="index"
    )
    ours = sample(ToyUNet(), "eps/linear", cond, uncond, shape=SHAPE, seeds=seeds, settings=settings)

    cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    scheduler = cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=True)
    scheduler.set_timesteps(steps)
    x = initial_noise(seeds, SHAPE, "cpu")
    generators = [torch.Generator().manual_seed(s + 1) for s in seeds]
    for n in scheduler.timesteps:
        n_batch = torch.full((2,), int(n), dtype=torch.long)
        c = ToyUNet()(x, n_batch, **cond)
        u = ToyUNet()(x, n_batch, uncond["context"].expand(2, -1, -1), uncond["pooled"].expand(2, -1))
        eps = u + w * (c - u)
        if sampler == "ddim":
            x = scheduler.step(eps, n, x, eta=0.0).prev_sample
        else:
            x = torch.cat(
                [
                    scheduler.step(eps[i : i + 1], n, x[i : i + 1], generator=g).prev_sample
                    for i, g in enumerate(generators)
                ]
            )
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=0)  # diffusers computes its coefficients in float32


def test_bad_sampling_inputs_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="one per seed"):
        euler(model, text(2), None, 2, 1.0, 1.0, seeds=[1, 2, 3])
    with pytest.raises(ValueError, match="unconditional"):
        euler(model, text(1), None, 2, 4.0, 1.0, seeds=[1])
    with pytest.raises(ValueError, match="steps"):
        euler(model, text(1), None, 0, 1.0, 1.0, seeds=[1])
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplerSettings(sampler="heun")
    with pytest.raises(ValueError, match="unknown spacing"):
        SamplerSettings(spacing="trailing")
