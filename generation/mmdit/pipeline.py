"""Inference for in-house MM-DiT checkpoints: prompts + seeds -> PIL images.

This is the stable entry point that the generation backends call with a checkpoint directory:

    from generation.mmdit.pipeline import InHousePipeline
    pipe = InHousePipeline.from_checkpoint("demo_models/mmdit-demo", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0, shift=1.0)

A checkpoint directory is what `generation.mmdit.train` (or `generation.mmdit.checkpoint.save_checkpoint`) writes:
model.safetensors + config.json, whose "recipe" names the objective (which picks the sampler: Euler with
timestep shift for rectified flow, DDIM for eps-prediction), the text encoder (see generation.text) and
the image space: pixels in [-1, 1] (recipe "vae" null) or the latents of a diffusers AutoencoderKL saved in
a local directory (recipe "vae": path, with "latent_scaling_factor" / "latent_shift_factor").

Guarantees: an image depends only on its prompt, its seed and the settings (each seed draws its own noise),
so the same call gives identical pixels; missing or corrupt checkpoints raise FileNotFoundError or
ValueError with the path and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.mmdit.checkpoint import load_mmdit
from generation.sampling import SamplerSettings, check_prompts, sample
from generation.text import conditioning, load_checkpoint_text_encoder


class ImageSpace:
    """What the MM-DiT models: pixels scaled to [-1, 1], or latents of a diffusers AutoencoderKL.

    encode: (B, H, W, 3) uint8 -> (B, C, h, w) float32; decode: the reverse (clipped and rounded)."""

    def __init__(self, vae: str | None, image_size: int, device: str | torch.device = "cpu"):
        self.vae_path, self.image_size, self.device = vae, image_size, torch.device(device)
        if vae is None:
            self.vae = None
            self.channels, self.factor = 3, 1
            self.scaling_factor, self.shift_factor = 1.0, 0.0
        else:
            from diffusers import AutoencoderKL

            if not (Path(vae) / "config.json").is_file():
                raise FileNotFoundError(f"no AutoencoderKL at {vae} (config.json missing)")
            self.vae = AutoencoderKL.from_pretrained(vae, local_files_only=True).to(self.device).eval()
            self.vae.requires_grad_(False)
            self.channels = int(self.vae.config.latent_channels)
            self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.scaling_factor = float(self.vae.config.scaling_factor)
            self.shift_factor = float(self.vae.config.shift_factor or 0.0)
        if image_size % self.factor:
            raise ValueError(f"image size {image_size} is not a multiple of the VAE's downsampling {self.factor}")
        self.sample_size = image_size // self.factor

    @torch.no_grad()
    def encode(self, images: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = x / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        if self.vae is None:
            return x
        dist = self.vae.encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=generator).to(self.device) if generator else None
        latents = dist.mean if noise is None else dist.mean + dist.std * noise
        return (latents - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> np.ndarray:
        if self.vae is not None:
            x = self.vae.decode(x.float() / self.scaling_factor + self.shift_factor).sample
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
        return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)


class InHousePipeline:
    """An in-house checkpoint ready to sample. Build it with `from_checkpoint`."""

    def __init__(self, model, meta: dict, text_encoder, space: ImageSpace, device: str | torch.device = "cpu"):
        self.model, self.meta, self.text_encoder, self.space = model, meta, text_encoder, space
        self.device = torch.device(device)
        self.recipe = meta.get("recipe", {})
        self.objective = self.recipe["objective"]
        self._uncond = conditioning(text_encoder, [""])  # the empty prompt, for classifier-free guidance

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> InHousePipeline:
        """Load config.json + model.safetensors, the text encoder and the VAE (if any) the recipe names.

        Raises FileNotFoundError (no such directory / file) or ValueError (corrupt or inconsistent files)."""
        path = Path(path)
        try:
            model, meta = load_mmdit(path, device=device, dtype=torch.float32)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"cannot load the in-house checkpoint {path}: {e}") from e
        recipe = meta.get("recipe") or {}
        for key in ("objective", "text_encoder"):
            if key not in recipe:
                raise ValueError(f"cannot load the in-house checkpoint {path}: its recipe has no {key!r}")
        config = model.config
        text_encoder = load_checkpoint_text_encoder(recipe["text_encoder"], config.text_dim, config.pooled_dim, path)
        image_size = int(recipe.get("image_size") or config.sample_size)
        space = ImageSpace(recipe.get("vae"), image_size, device=device)
        if space.channels != config.in_channels:
            raise ValueError(
                f"checkpoint {path} models {config.in_channels} channels but its image space has {space.channels}"
            )
        return cls(model, meta, text_encoder, space, device=device)

    @property
    def default_size(self) -> int:
        return self.space.image_size

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
        batch_size: int = 32,
    ) -> list[Image.Image]:
        """One RGB PIL image per (prompt, seed) pair, in order.

        steps: sampler steps (Euler for rectified flow, DDIM for eps models); guidance_scale: classifier-free
        guidance weight (1 = none); shift: timestep shift a of t' = a t / (1 + (a - 1) t) (rectified flow
        only; eps models need 1); height/width: pixels, default the training resolution, multiples of
        patch size x VAE factor, at most the position table's size (pos_embed_max_size patches).
        Prompts are processed batch_size at a time."""
        check_prompts(prompts, seeds)
        height, width = height or self.default_size, width or self.default_size
        cell = self.space.factor * self.model.config.patch_size
        if height % cell or width % cell:
            raise ValueError(f"height and width must be multiples of {cell}, got {height}x{width}")
        largest = self.model.config.pos_embed_max_size * cell
        if height > largest or width > largest:
            raise ValueError(f"this checkpoint generates at most {largest}x{largest} pixels, got {height}x{width}")
        shape = (self.space.channels, height // self.space.factor, width // self.space.factor)
        settings = SamplerSettings(steps=steps, guidance_scale=guidance_scale, shift=shift, device=self.device)
        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch_size):
            chunk, chunk_seeds = list(prompts[start : start + batch_size]), list(seeds[start : start + batch_size])
            cond = conditioning(self.text_encoder, chunk)
            latents = sample(
                self.model, self.objective, cond, self._uncond, shape=shape, seeds=chunk_seeds, settings=settings
            )
            images += [Image.fromarray(a) for a in self.space.decode(latents)]
        return images
