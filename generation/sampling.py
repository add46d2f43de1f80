"""Sampling loops for the in-house model, written out step by step.

Rectified-flow models integrate the ODE dz/dt = v(z, t) from t = 1 (noise) to t = 0 (data) with Euler steps
on the shifted grid t' = a t / (1 + (a - 1) t) (SD3, section 5.3.2: a > 1 spends more steps at high noise,
which larger images need). eps-prediction ablation models use deterministic DDIM (Song et al. 2021) on
their own training schedule. `generate_latents` picks the loop from the objective name a checkpoint records
(meta["recipe"]["objective"], see generation/flow.py).

Conditioning is a dict of the model's text inputs: {"context": (B, T, text_dim), "pooled": (B, pooled_dim),
"context_mask": (B, T) bool, optional}; `uncond` is the same for the empty prompt (batch B or 1), used for
classifier-free guidance: pred = pred_uncond + w (pred_cond - pred_uncond).

Seeds: image i starts from noise drawn by its own CPU torch.Generator seeded with seeds[i], so an image depends
only on its seed (not on which other images share its batch, nor on the device), and re-running a seed gives
the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from generation.flow import EpsPrediction, make_objective

Conditioning = Mapping[str, torch.Tensor]
Model = Callable[..., torch.Tensor]


def shift_timesteps(t: torch.Tensor | float, alpha: float) -> torch.Tensor | float:
    """t' = alpha t / (1 + (alpha - 1) t): alpha = 1 is the identity, 0 and 1 stay fixed, monotone in t."""
    if alpha <= 0:
        raise ValueError(f"timestep shift must be > 0, got {alpha}")
    return alpha * t / (1 + (alpha - 1) * t)


def initial_noise(seeds: Sequence[int], shape: Sequence[int], device, dtype=torch.float32) -> torch.Tensor:
    """(len(seeds), *shape) standard normal noise; image i from torch.Generator().manual_seed(seeds[i])."""
    if not seeds:
        raise ValueError("at least one seed is needed")
    noise = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


def _prepare(cond: Conditioning, batch: int, device, dtype) -> dict[str, torch.Tensor]:
    """Move a conditioning dict to device/dtype and broadcast a batch of 1 to `batch`."""
    missing = {"context", "pooled"} - set(cond)
    if missing:
        raise ValueError(f"conditioning lacks {sorted(missing)}")
    unknown = set(cond) - {"context", "pooled", "context_mask"}
    if unknown:
        raise ValueError(f"unknown conditioning keys {sorted(unknown)}")
    out = {}
    for key, value in cond.items():
        if value is None:
            continue
        value = value.to(device=device, dtype=torch.bool if key == "context_mask" else dtype)
        if value.shape[0] == 1 and batch > 1:
            value = value.expand(batch, *value.shape[1:])
        if value.shape[0] != batch:
            raise ValueError(f"conditioning {key!r} has batch {value.shape[0]}, expected {batch} (one per seed)")
        out[key] = value
    return out


def _pad_tokens(cond: dict[str, torch.Tensor], tokens: int) -> dict[str, torch.Tensor]:
    """Pad the text tokens to `tokens` with zeros that the mask hides."""
    B, T = cond["context"].shape[:2]
    mask = cond.get("context_mask")
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=cond["context"].device)
    return {
        "context": F.pad(cond["context"], (0, 0, 0, tokens - T)),
        "pooled": cond["pooled"],
        "context_mask": F.pad(mask, (0, tokens - T), value=False),
    }


def _join(cond: dict[str, torch.Tensor], uncond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack cond over uncond into one batch of 2B (text lengths may differ: the shorter is padded and masked)."""
    tokens_c, tokens_u = cond["context"].shape[1], uncond["context"].shape[1]
    if tokens_c != tokens_u or ("context_mask" in cond) != ("context_mask" in uncond):
        tokens = max(tokens_c, tokens_u)
        cond, uncond = _pad_tokens(cond, tokens), _pad_tokens(uncond, tokens)
    return {key: torch.cat([cond[key], uncond[key]]) for key in cond}


def guided_prediction(
    model: Model,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: dict[str, torch.Tensor],
    uncond: dict[str, torch.Tensor] | None,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance with cond and uncond in one batch: u + w (c - u). w = 1 skips uncond."""
    if uncond is None or guidance_scale == 1.0:
        return model(x, t, **cond).float()
    both = model(torch.cat([x, x]), torch.cat([t, t]), **_join(cond, uncond)).float()
    pred_cond, pred_uncond = both.chunk(2)
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)


def _check(steps: int, guidance_scale: float, uncond) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance_scale != 1.0 and uncond is None:
        raise ValueError("classifier-free guidance (guidance_scale != 1) needs the unconditional inputs")


@torch.no_grad()
def euler_sample(
    model: Model,
    cond: Conditioning,
    uncond: Conditioning | None,
    shape: Sequence[int],
    steps: int,
    guidance_scale: float,
    shift: float,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rectified flow: Euler steps of dz/dt = v from t = 1 to t = 0 -> (len(seeds), *shape) float32 samples.

    shape is one image's (C, H, W); the model runs in `dtype`, the state z stays float32."""
    _check(steps, guidance_scale, uncond)
    B = len(seeds)
    cond = _prepare(cond, B, device, dtype)
    uncond = None if uncond is None else _prepare(uncond, B, device, dtype)
    z = initial_noise(seeds, shape, device)  # t = 1: pure noise, (B, C, H, W) float32
    ts = shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)  # 1 -> 0
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        t_batch = torch.full((B,), t, device=device, dtype=torch.float32)
        velocity = guided_prediction(model, z.to(dtype), t_batch, cond, uncond, guidance_scale)
        z = z + (t_next - t) * velocity  # t_next < t: a step towards the data
    return z


def ddim_timesteps(num_train_steps: int, steps: int) -> list[int]:
    """`steps` training steps evenly spread from the noisiest (N - 1) down to 0."""
    if steps > num_train_steps:
        raise ValueError(f"DDIM steps {steps} exceed the {num_train_steps} training steps")
    if steps == 1:
        return [num_train_steps - 1]
    return torch.linspace(num_train_steps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


@torch.no_grad()
def ddim_sample(
    model: Model,
    objective: EpsPrediction,
    cond: Conditioning,
    uncond: Conditioning | None,
    shape: Sequence[int],
    steps: int,
    guidance_scale: float,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) for an eps-prediction model on its training schedule.

    Each step predicts eps at step n, forms x0 = (z - sqrt(1 - ab_n) eps) / sqrt(ab_n) and moves to the next
    step: z = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps; the last step lands on x0 (ab_prev = 1)."""
    _check(steps, guidance_scale, uncond)
    B = len(seeds)
    cond = _prepare(cond, B, device, dtype)
    uncond = None if uncond is None else _prepare(uncond, B, device, dtype)
    alphas_cumprod = objective.alphas_cumprod  # (N,) float64
    N = objective.num_train_steps
    timesteps = ddim_timesteps(N, steps)
    z = initial_noise(seeds, shape, device)  # (B, C, H, W) float32
    for i, n in enumerate(timesteps):
        ab = float(alphas_cumprod[n])
        ab_prev = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t_batch = torch.full((B,), n / N, device=device, dtype=torch.float32)  # the model sees t = n / N
        eps = guided_prediction(model, z.to(dtype), t_batch, cond, uncond, guidance_scale)
        x0 = (z - (1 - ab) ** 0.5 * eps) / ab**0.5
        z = ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
    return z


def generate_latents(
    model: Model,
    objective: str,
    cond: Conditioning,
    uncond: Conditioning | None,
    shape: Sequence[int],
    steps: int,
    guidance_scale: float,
    shift: float,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sample with the loop that fits the model's training objective (the name in its checkpoint recipe):
    Euler with timestep shift for "rf/...", DDIM for "eps/..." (which has no timestep shift: shift must be 1)."""
    obj = make_objective(objective)
    if isinstance(obj, EpsPrediction):
        if shift != 1.0:
            raise ValueError(f"{obj.name} samples with DDIM on its training schedule; timestep shift must be 1")
        return ddim_sample(model, obj, cond, uncond, shape, steps, guidance_scale, seeds, device, dtype)
    return euler_sample(model, cond, uncond, shape, steps, guidance_scale, shift, seeds, device, dtype)
