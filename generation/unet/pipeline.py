"""Sampling a UNet baseline checkpoint: prompts + seeds -> PIL images, DDIM (deterministic) or DDPM (ancestral)
with classifier-free guidance, by generation.sampling's loops on diffusers' "leading" timestep grid, with the
integer step as the UNet's timestep input and the predicted x0 clipped to [-1, 1] (pixel space).

    pipe = UNetBaselinePipeline.from_checkpoint("demo_models/unet-baseline", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from generation.contract import UNET_SCHEDULERS
from generation.sampling import SamplerSettings, check_prompts, sample
from generation.text import conditioning, load_checkpoint_text_encoder
from generation.unet.checkpoint import load_unet_baseline
from generation.unet.model import UNetBaseline


class UNetBaselinePipeline:
    """A UNet baseline checkpoint ready to sample. Build it with `from_checkpoint`."""

    def __init__(self, model: UNetBaseline, meta: dict, text_encoder, device: str | torch.device = "cpu"):
        self.model, self.meta, self.text_encoder = model, meta, text_encoder
        self.device = torch.device(device)
        self._uncond = conditioning(text_encoder, [""])  # the empty prompt, for classifier-free guidance

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> UNetBaselinePipeline:
        path = Path(path)
        try:
            model, meta = load_unet_baseline(path, device=device)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"cannot load the UNet baseline checkpoint {path}: {e}") from e
        name = meta["recipe"].get("text_encoder", "minilm")
        text_encoder = load_checkpoint_text_encoder(name, model.config.text_dim, model.config.pooled_dim, path)
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
        check_prompts(prompts, seeds)
        if scheduler not in UNET_SCHEDULERS:  # generation.sampling's deterministic DDIM, ancestral DDPM
            raise ValueError(
                f"unknown scheduler {scheduler!r} for the UNet baseline; use one of {', '.join(UNET_SCHEDULERS)}"
            )
        cfg = self.model.config
        height, width = height or cfg.sample_size, width or cfg.sample_size
        if height % cfg.multiple or width % cfg.multiple:
            raise ValueError(f"height and width must be multiples of {cfg.multiple}, got {height}x{width}")
        if not prompts:
            return []
        settings = SamplerSettings(
            steps=steps,
            guidance_scale=guidance_scale,
            shift=shift,
            sampler=scheduler,
            spacing="leading",
            clip_sample=True,
            timestep_input="index",
            device=self.device,
        )
        cond = conditioning(self.text_encoder, prompts)
        shape = (cfg.in_channels, height, width)
        x = sample(self.model, cfg.objective(), cond, self._uncond, shape=shape, seeds=seeds, settings=settings)
        pixels = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
        return [Image.fromarray(a) for a in pixels.permute(0, 2, 3, 1).cpu().numpy()]
