"""Score distillation sampling (DreamFusion, Poole et al. 2022, eq. 3) for velocity and eps predictors.

For a rendered image x (in the prior's image space), noise eps ~ N(0, I) and a noise level, the prior's guided
prediction gives a denoising direction; the gradient on x (never through the prior) is

    velocity (rectified flow):  z_t = (1 - t) x + t eps,  x0_hat = z_t - t v_hat,  grad = w(t) (x - x0_hat),
                                w(t) = t (the weighting that worked with the in-house prior), t ~ U(t_min, t_max);
    eps (DDPM):                 z_n = sqrt(ab) x + sqrt(1 - ab) eps,  grad = w(n) (eps_hat - eps),
                                w(n) = 1 - ab_n (DreamFusion's sigma^2), n ~ U{t_min N .. t_max N}.

Both are a positive weight times (x - x0_hat), x0_hat being the prior's denoised estimate: an eps predictor's
x0_hat = (z - sqrt(1 - ab) eps_hat) / sqrt(ab) gives eps_hat - eps = sqrt(ab / (1 - ab)) (x - x0_hat), so
gradient descent moves the render towards what the prior would make of its noised version.
`sds_loss` returns a surrogate scalar whose gradient on x is exactly grad / B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from generation.threed.priors import Prior


@dataclass(frozen=True)
class SDSSettings:
    guidance_scale: float = 30.0  # classifier-free guidance of the prior's prediction
    t_min: float = 0.02  # noise levels drawn uniformly in [t_min, t_max] (eps: as fractions of the N steps)
    t_max: float = 0.98
    weighting: str = "t"  # velocity: "t" (w = t) or "uniform" (w = 1); eps: "sigma2" (w = 1 - ab) or "uniform"

    def __post_init__(self):
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.weighting not in ("t", "sigma2", "uniform"):
            raise ValueError(f"unknown SDS weighting {self.weighting!r}; use 't', 'sigma2' or 'uniform'")


def sds_weight(prior: Prior, t: torch.Tensor, weighting: str) -> torch.Tensor:
    """(B,) float32 weights w for noise levels t (velocity: t in (0, 1); eps: long steps n)."""
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if prior.prediction == "velocity":
        return t.float()  # "t" (and "sigma2" read as the flow's noise scale t)
    assert prior.alphas_cumprod is not None
    return (1 - prior.alphas_cumprod.to(t.device)[t.long()]).float()


def sds_gradient(
    prior: Prior,
    x: torch.Tensor,
    text: Any,
    t: torch.Tensor,
    noise: torch.Tensor,
    guidance_scale: float,
    weighting: str = "t",
) -> torch.Tensor:
    """The SDS gradient (B, C, h, w) on images x (B, C, h, w) in the prior's space, for the given noise levels t
    (B,) and noise (B, C, h, w). No gradient flows through it."""
    x = x.detach().float()
    w = sds_weight(prior, t, weighting).view(-1, 1, 1, 1)
    if prior.prediction == "velocity":
        tt = t.float().view(-1, 1, 1, 1)
        z = (1 - tt) * x + tt * noise
        v = prior.predict(z, t, text, guidance_scale)
        x0_hat = z - tt * v
        return w * (x - x0_hat)
    if prior.prediction == "eps":
        assert prior.alphas_cumprod is not None
        ab = prior.alphas_cumprod.to(x.device)[t.long()].float().view(-1, 1, 1, 1)
        z = ab.sqrt() * x + (1 - ab).sqrt() * noise
        eps_hat = prior.predict(z, t, text, guidance_scale)
        return w * (eps_hat - noise)
    raise ValueError(f"unknown prediction {prior.prediction!r}; a prior predicts 'velocity' or 'eps'")


def sample_noise_levels(prior: Prior, n: int, settings: SDSSettings, generator: torch.Generator) -> torch.Tensor:
    """n noise levels: float t ~ U(t_min, t_max) (velocity) or long n ~ U{t_min N .. t_max N} (eps), on the CPU."""
    u = torch.rand(n, generator=generator)
    t = settings.t_min + (settings.t_max - settings.t_min) * u
    if prior.prediction == "eps":
        assert prior.alphas_cumprod is not None
        steps = len(prior.alphas_cumprod)
        return (t * steps).long().clamp(0, steps - 1)
    return t


def sds_loss(
    prior: Prior, rgb: torch.Tensor, text: Any, settings: SDSSettings, generator: torch.Generator
) -> torch.Tensor:
    """A scalar whose gradient on the renders rgb (B, 3, H, W) in [0, 1] is the SDS gradient (through the prior's
    image encoder, if it has one), averaged over the batch. t and eps come from `generator` (CPU)."""
    x = prior.encode_images(rgb)  # (B, C, h, w), differentiable
    B = x.shape[0]
    weighting = settings.weighting
    if prior.prediction == "eps" and weighting == "t":
        weighting = "sigma2"  # the default weighting of each objective
    t = sample_noise_levels(prior, B, settings, generator).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    grad = sds_gradient(prior, x, text, t, noise, settings.guidance_scale, weighting)
    target = (x - grad).detach()
    return 0.5 * ((x - target) ** 2).sum() / B
