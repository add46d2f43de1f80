"""Sampling a UNet baseline checkpoint: prompts + seeds -> PIL images, DDIM (deterministic) or DDPM (ancestral)
with classifier-free guidance.

    pipe = UNetBaselinePipeline.from_checkpoint("demo_models/unet-baseline", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from generation.sampling import initial_noise
from generation.text import concat_encodings, load_text_encoder
from generation.unet.checkpoint import load_unet_baseline
from generation.unet.model import UNetBaseline, UNetBaselineConfig

SCHEDULERS = ("ddim", "ddpm")


def make_scheduler(config: UNetBaselineConfig, name: str):
    from diffusers import DDIMScheduler, DDPMScheduler

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r} for the UNet baseline; use one of {', '.join(SCHEDULERS)}")
    cls = DDIMScheduler if name == "ddim" else DDPMScheduler
    return cls(**config.scheduler_config())


class UNetBaselinePipeline:
    """A UNet baseline checkpoint ready to sample. Build it with `from_checkpoint`."""

    def __init__(self, model: UNetBaseline, meta: dict, text_encoder, device: str | torch.device = "cpu"):
        self.model, self.meta, self.text_encoder = model, meta, text_encoder
        self.device = torch.device(device)
        self._empty = text_encoder.encode([""])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> UNetBaselinePipeline:
        path = Path(path)
        try:
            model, meta = load_unet_baseline(path, device=device)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"cannot load the UNet baseline checkpoint {path}: {e}") from e
        name = meta["recipe"].get("text_encoder", "minilm")
        text_encoder = load_text_encoder(name, device="cpu")
        if (text_encoder.dim, text_encoder.pooled_dim) != (model.config.text_dim, model.config.pooled_dim):
            want, got = (model.config.text_dim, model.config.pooled_dim), (text_encoder.dim, text_encoder.pooled_dim)
            raise ValueError(f"checkpoint {path} expects text widths {want} but {name} gives {got}")
        return cls(model, meta, text_encoder, device=device)

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int = 28,
        guidance_scale: float = 4.0,
        shift: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        scheduler: str = "ddim",
    ) -> list[Image.Image]:
        """One RGB image per (prompt, seed). `shift` belongs to rectified flow and must stay 1 here."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
        if shift != 1.0:
            raise ValueError(
                f"the UNet baseline has no timestep shift (eps-prediction on a DDPM schedule); got {shift}"
            )
        cfg = self.model.config
        height, width = height or cfg.sample_size, width or cfg.sample_size
        if height % cfg.multiple or width % cfg.multiple:
            raise ValueError(f"height and width must be multiples of {cfg.multiple}, got {height}x{width}")
        if not prompts:
            return []
        sched = make_scheduler(cfg, scheduler)
        sched.set_timesteps(steps)
        b = len(prompts)
        tokens, mask, pooled = concat_encodings([self.text_encoder.encode([p]) for p in prompts])
        e_tokens, e_mask, e_pooled = self._empty
        # [uncond; cond], padded to one length: (2B, T, D), (2B, T), (2B, P)
        tokens, mask, pooled = concat_encodings(
            [(e_tokens.expand(b, -1, -1), e_mask.expand(b, -1), e_pooled.expand(b, -1)), (tokens, mask, pooled)]
        )
        tokens, mask, pooled = tokens.to(self.device), mask.to(self.device), pooled.to(self.device)
        x = initial_noise(seeds, (cfg.in_channels, height, width), self.device)  # (B, 3, H, W), one seed each
        # DDPM draws fresh noise every step: one generator per image keeps each image tied to its own seed.
        step_generators = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
        for n in sched.timesteps:
            n_batch = torch.full((2 * b,), int(n), device=self.device, dtype=torch.long)
            eps_uncond, eps_cond = self.model(torch.cat([x, x]), n_batch, tokens, pooled, mask).chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            if scheduler == "ddpm":
                x = torch.cat(
                    [
                        sched.step(eps[i : i + 1], n, x[i : i + 1], generator=step_generators[i]).prev_sample
                        for i in range(b)
                    ]
                )
            else:
                x = sched.step(eps, n, x, eta=0.0).prev_sample
        pixels = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
        return [Image.fromarray(a) for a in pixels.permute(0, 2, 3, 1).cpu().numpy()]
