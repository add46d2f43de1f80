"""Sampling loops, written out step by step, behind one entry: `sample(..., settings=SamplerSettings(...))`.

    latents = sample(model, "rf/lognorm(0.00,1.00)", cond, uncond, shape=(3, 32, 32), seeds=[0, 1],
                     settings=SamplerSettings(steps=28, guidance_scale=4.0, shift=1.0))

The loop follows the model's training objective (a generation.flow objective or its name, as a checkpoint
records it in meta["recipe"]["objective"]):

- rectified flow ("rf/..."): Euler steps of the ODE dz/dt = v(z, t) from t = 1 (noise) to t = 0 (data) on the
  shifted grid t' = a t / (1 + (a - 1) t) (SD3, section 5.3.2: a > 1 spends more steps at high noise, which
  larger images need).
- eps-prediction ("eps/..."): on the model's own training schedule, deterministic DDIM (Song et al. 2021,
  eta = 0) or ancestral DDPM (Ho et al. 2020, the "fixed small" variance). Which training steps are visited
  (`spacing`), whether the predicted x0 is clipped to [-1, 1] and whether the model is given t = n / N or the
  integer step n are settings: the in-house MM-DiT takes t = n / N on an evenly spread grid from N - 1, the
  UNet baseline (diffusers' UNet2DConditionModel) the integer step on diffusers' "leading" grid, with clipping.

Conditioning is a dict of the model's text inputs: {"context": (B, T, text_dim), "pooled": (B, pooled_dim),
"context_mask": (B, T) bool, optional}; `uncond` is the same for the empty prompt (batch B or 1), used for
classifier-free guidance: pred = pred_uncond + w (pred_cond - pred_uncond) (`guided_prediction`).

Seeds: image i starts from noise drawn by its own CPU torch.Generator seeded with seeds[i], so an image depends
only on its seed (not on which other images share its batch, nor on the device), and re-running a seed gives
the same pixels. DDPM draws fresh noise at every step, image i from a second generator seeded seeds[i] + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import torch
import torch.nn.functional as F

from generation.contract import DEFAULT_SAMPLER_SETTINGS
from generation.flow import EpsPrediction, Objective, make_objective

Conditioning = Mapping[str, torch.Tensor]
Model = Callable[..., torch.Tensor]

SAMPLERS = ("euler", "ddim", "ddpm")
SPACINGS = ("linspace", "leading")
TIMESTEP_INPUTS = ("fraction", "index")


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: what the loops need besides the model, its text inputs, the image shape and the seeds."""

    steps: int = int(DEFAULT_SAMPLER_SETTINGS["steps"])  # sampler steps (model calls, each on 2B with guidance)
    guidance_scale: float = float(DEFAULT_SAMPLER_SETTINGS["guidance_scale"])  # w; 1 = no guidance, no uncond
    shift: float = float(DEFAULT_SAMPLER_SETTINGS["shift"])  # rectified flow's timestep shift a; eps needs 1
    sampler: str | None = None  # "euler", "ddim" or "ddpm"; None: the objective's own (euler rf, ddim eps)
    spacing: str = "linspace"  # eps: "linspace" (N-1 .. 0 evenly, rounded) or "leading" (k * (N // steps), k desc.)
    clip_sample: bool = False  # eps: clamp the predicted x0 to [-1, 1] at every step (for models of pixels)
    timestep_input: str = "fraction"  # eps: the model gets t = n / N ("fraction") or the integer step n ("index")
    device: str | torch.device = "cpu"  # where the model runs (noise is drawn on the CPU, then moved)
    dtype: torch.dtype = torch.float32  # the model runs in dtype; the state z stays float32

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for name, value, known in [
            ("sampler", self.sampler, SAMPLERS + (None,)),
            ("spacing", self.spacing, SPACINGS),
            ("timestep_input", self.timestep_input, TIMESTEP_INPUTS),
        ]:
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(str(k) for k in known if k)}")


@overload
def shift_timesteps(t: torch.Tensor, alpha: float) -> torch.Tensor: ...


@overload
def shift_timesteps(t: float, alpha: float) -> float: ...


def shift_timesteps(t: torch.Tensor | float, alpha: float) -> torch.Tensor | float:
    """t' = alpha t / (1 + (alpha - 1) t): alpha = 1 is the identity, 0 and 1 stay fixed, monotone in t."""
    if alpha <= 0:
        raise ValueError(f"timestep shift must be > 0, got {alpha}")
    return alpha * t / (1 + (alpha - 1) * t)


def check_prompts(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    """A pipeline makes one image per (prompt, seed): a list of prompts and exactly one seed for each."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")


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


@torch.no_grad()
def sample(
    model: Model,
    objective: Objective | str,
    cond: Conditioning,
    uncond: Conditioning | None,
    *,
    shape: Sequence[int],
    seeds: Sequence[int],
    settings: SamplerSettings,
) -> torch.Tensor:
    """(len(seeds), *shape) float32 samples of `model`, trained with `objective`; shape is one image's (C, H, W).

    Euler with timestep shift for "rf/..." objectives; DDIM (default) or DDPM for "eps/..." ones, which have no
    timestep shift (shift must be 1)."""
    obj = make_objective(objective) if isinstance(objective, str) else objective
    eps_model = isinstance(obj, EpsPrediction)
    sampler = settings.sampler or ("ddim" if eps_model else "euler")
    if eps_model and settings.shift != 1.0:
        raise ValueError(
            f"{obj.name} samples on its training schedule, which has no timestep shift: shift must be 1, "
            f"got {settings.shift}"
        )
    loops = ("ddim", "ddpm") if eps_model else ("euler",)
    if sampler not in loops:
        raise ValueError(f"a {obj.name} model samples with {' or '.join(loops)}, not {sampler}")
    if settings.guidance_scale != 1.0 and uncond is None:
        raise ValueError("classifier-free guidance (guidance_scale != 1) needs the unconditional inputs")
    B = len(seeds)
    cond = _prepare(cond, B, settings.device, settings.dtype)
    uncond = None if uncond is None else _prepare(uncond, B, settings.device, settings.dtype)
    z = initial_noise(seeds, shape, settings.device)  # pure noise, (B, C, H, W) float32
    if not isinstance(obj, EpsPrediction):
        return _euler(model, z, cond, uncond, settings)
    timesteps = eps_timesteps(obj.num_train_steps, settings.steps, settings.spacing)
    return _eps_loop(model, obj, timesteps, z, cond, uncond, seeds, settings, ancestral=sampler == "ddpm")


@torch.no_grad()
def _euler(model: Model, z: torch.Tensor, cond: dict, uncond: dict | None, settings: SamplerSettings) -> torch.Tensor:
    """Rectified flow: Euler steps of dz/dt = v from t = 1 to t = 0."""
    B, device = z.shape[0], settings.device
    ts = shift_timesteps(torch.linspace(1.0, 0.0, settings.steps + 1, dtype=torch.float64), settings.shift)  # 1 -> 0
    for i in range(settings.steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        t_batch = torch.full((B,), t, device=device, dtype=torch.float32)
        velocity = guided_prediction(model, z.to(settings.dtype), t_batch, cond, uncond, settings.guidance_scale)
        z = z + (t_next - t) * velocity  # t_next < t: a step towards the data
    return z


def eps_timesteps(num_train_steps: int, steps: int, spacing: str = "linspace") -> list[int]:
    """The training steps an eps sampler visits, noisiest first, ending at 0.

    "linspace": `steps` steps evenly spread from N - 1 down to 0 (rounded), e.g. 4 of 1000: 999, 666, 333, 0;
    "leading" (diffusers' DDIM/DDPM default): k * (N // steps) for k = steps - 1 .. 0, e.g. 28 of 1000: 945,
    910, ..., 35, 0."""
    if steps > num_train_steps:
        raise ValueError(f"{steps} sampler steps exceed the {num_train_steps} training steps")
    if spacing == "leading":
        ratio = num_train_steps // steps
        return [k * ratio for k in range(steps - 1, -1, -1)]
    if spacing != "linspace":
        raise ValueError(f"unknown spacing {spacing!r}; use one of {', '.join(SPACINGS)}")
    if steps == 1:
        return [num_train_steps - 1]
    return torch.linspace(num_train_steps - 1, 0, steps, dtype=torch.float64).round().long().tolist()


def _model_time(n: int, objective: EpsPrediction, batch: int, settings: SamplerSettings) -> torch.Tensor:
    """What an eps model is given for training step n: t = n / N (float32) or n itself (int64), per image."""
    if settings.timestep_input == "index":
        return torch.full((batch,), n, device=settings.device, dtype=torch.long)
    return torch.full((batch,), n / objective.num_train_steps, device=settings.device, dtype=torch.float32)


@torch.no_grad()
def _eps_loop(
    model: Model,
    objective: EpsPrediction,
    timesteps: list[int],
    z: torch.Tensor,
    cond: dict,
    uncond: dict | None,
    seeds: Sequence[int],
    settings: SamplerSettings,
    ancestral: bool,
) -> torch.Tensor:
    """DDIM (deterministic, eta = 0) or, with `ancestral`, DDPM on the training schedule, visiting `timesteps`.

    Each step predicts eps at step n and the x0 it implies, x0 = (z - sqrt(1 - ab) eps) / sqrt(ab) (clipped to
    [-1, 1] if asked), then moves to the next visited step, whose ab_prev is 1 after the last:
        DDIM: z = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps (the last step lands on x0)
        DDPM: with alpha = ab / ab_prev, beta = 1 - alpha: z = sqrt(ab_prev) beta / (1 - ab) x0 + sqrt(alpha)
              (1 - ab_prev) / (1 - ab) z + sigma noise, sigma^2 = (1 - ab_prev) / (1 - ab) beta; no noise at
              step 0; image i's noise comes from its own generator, seeded seeds[i] + 1."""
    alphas_cumprod = objective.alphas_cumprod  # (N,) float64
    generators = [torch.Generator().manual_seed(int(s) + 1) for s in seeds] if ancestral else []
    for i, n in enumerate(timesteps):
        ab = float(alphas_cumprod[n])
        ab_prev = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t_batch = _model_time(n, objective, z.shape[0], settings)
        eps = guided_prediction(model, z.to(settings.dtype), t_batch, cond, uncond, settings.guidance_scale)
        x0 = (z - (1 - ab) ** 0.5 * eps) / ab**0.5
        if settings.clip_sample:
            x0 = x0.clamp(-1, 1)
        if not ancestral:
            z = ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
            continue
        alpha, beta = ab / ab_prev, 1 - ab / ab_prev
        z = (ab_prev**0.5 * beta / (1 - ab)) * x0 + (alpha**0.5 * (1 - ab_prev) / (1 - ab)) * z
        if n > 0:
            noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in generators]).to(z.device)
            z = z + max((1 - ab_prev) / (1 - ab) * beta, 1e-20) ** 0.5 * noise
    return z
