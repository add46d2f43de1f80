"""Helpers of the text-to-3D tests: a prior whose denoised estimate is a fixed image, and small settings."""

from __future__ import annotations

import dataclasses

import torch

from generation.flow import linear_alphas_cumprod
from generation.threed import AssetSettings, FieldConfig, RenderSettings


class FixedTargetPrior:
    """A prior that denoises every noised image to the same `target` (C, H, W) in [-1, 1]: its velocity is
    v = (z - target) / t, its eps (z - sqrt(ab) target) / sqrt(1 - ab). The guidance scale is ignored."""

    def __init__(self, target: torch.Tensor, prediction: str = "velocity"):
        self.target, self.prediction = target, prediction
        self.image_size = target.shape[-1]
        self.alphas_cumprod = linear_alphas_cumprod() if prediction == "eps" else None
        self.device = torch.device("cpu")
        self.calls: list[float] = []

    def encode_prompt(self, prompt: str):
        return prompt

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb * 2 - 1

    def predict(self, z, t, text, guidance_scale):
        self.calls.append(guidance_scale)
        if self.prediction == "velocity":
            return (z - self.target) / t.float().view(-1, 1, 1, 1)
        ab = self.alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)
        return (z - ab.sqrt() * self.target) / (1 - ab).sqrt()


def small_settings(steps: int = 3, size: int = 8) -> AssetSettings:
    """A 12^3 grid, 8x8 views, 8 samples per ray, 2 views per step: milliseconds per step."""
    return dataclasses.replace(
        AssetSettings(),
        steps=steps,
        views_per_step=2,
        field=FieldConfig(resolution=12),
        render=RenderSettings(image_size=size, samples_per_ray=8),
    )
