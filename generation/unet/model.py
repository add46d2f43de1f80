"""The classic baseline: a text-conditioned UNet with eps-prediction on a DDPM schedule (the SD3 paper's "LDM").

Diffusers' UNet2DConditionModel predicts the noise eps of z_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps on
1000 discrete steps with LDM's scaled-linear betas (0.00085 .. 0.012). It is trained here on the demo domain
with the same text encoder as the in-house MM-DiT, so the demo compares genuinely different models on equal
terms.

Like LDM, the UNet does not run on raw pixels: a fixed, lossless space-to-depth "autoencoder" turns a
(3, 32, 32) image into a (48, 8, 8) latent (pixel_unshuffle by 4, the same 4x4 cells the MM-DiT's patches
see), which keeps this CPU's training fast.

    x (B, 3, H, W) --pixel_unshuffle(f)--> (B, 3f^2, H/f, W/f) --UNet(n, text tokens, pooled text)--> eps
    text: token states (B, T, 384) -> cross-attention (padding masked); pooled (B, 384) -> added to the
          timestep embedding (class_embed_type="projection")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from generation.flow import EpsPrediction


@dataclass
class UNetBaselineConfig:
    sample_size: int = 32  # side of the training images in pixels
    in_channels: int = 3  # image channels (RGB)
    space_to_depth: int = 4  # the fixed "autoencoder": f x f pixel blocks become channels (1 = raw pixels)
    block_out_channels: tuple[int, ...] = (64, 128)  # UNet widths per resolution level
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    layers_per_block: int = 1  # ResNet blocks per level
    attention_head_dim: int = 32  # width of one attention head
    norm_num_groups: int = 16  # GroupNorm groups (must divide every block width)
    text_dim: int = 384  # width of the text token states (cross-attention keys and values)
    pooled_dim: int = 384  # width of the pooled text vector (added to the timestep embedding)
    num_train_timesteps: int = 1000  # discrete diffusion steps n
    beta_start: float = 0.00085  # LDM scaled-linear schedule: betas = linspace(sqrt(start), sqrt(end))^2
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # diffusers name of the schedule
    # eps = sqrt(1 - abar_n) x_n + UNet(...): a fixed path from the input to the output. At high noise the
    # noise is nearly all of x_n, and the x0 a sampler derives, (x_n - sqrt(1 - abar_n) eps) / sqrt(abar_n),
    # multiplies any error of eps by up to 1 / sqrt(abar_n) ~ 15 here; a UNet without this path (its input
    # passes through GroupNorm before it can reach the output) leaves per-pixel errors that sampling from
    # pure noise bakes into the image. False = the plain UNet (checkpoints written before the option).
    input_skip: bool = False

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        if not (len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types)):
            raise ValueError("block_out_channels, down_block_types and up_block_types need the same length")
        if self.space_to_depth < 1 or self.sample_size % self.space_to_depth:
            raise ValueError(
                f"sample_size {self.sample_size} is not a multiple of space_to_depth {self.space_to_depth}"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every block width must be a multiple of norm_num_groups {self.norm_num_groups}")

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.space_to_depth**2

    @property
    def latent_size(self) -> int:
        return self.sample_size // self.space_to_depth

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this (space-to-depth times the UNet's downsampling)."""
        return self.space_to_depth * 2 ** (len(self.block_out_channels) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetBaselineConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet baseline config keys {sorted(unknown)}")
        return cls(**d)

    def objective(self) -> EpsPrediction:
        """The noise schedule as generation.sampling needs it: eps-prediction on these scaled-linear betas."""
        if self.beta_schedule != "scaled_linear":
            raise ValueError(f"the UNet baseline samples scaled-linear schedules only, not {self.beta_schedule!r}")
        return EpsPrediction("linear", self.num_train_timesteps, self.beta_start, self.beta_end)

    def scheduler_config(self) -> dict:
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": "epsilon",
            "clip_sample": True,
        }  # pixel space: x0 predictions are clipped to [-1, 1] while sampling


class UNetBaseline(nn.Module):
    """eps-prediction UNet over the space-to-depth latent of an image."""

    def __init__(self, config: UNetBaselineConfig):
        super().__init__()
        # diffusers.models, not diffusers: mypy reads the top-level name as its torch-less dummy class
        from diffusers.models import UNet2DConditionModel

        self.config = config
        skip = (1.0 - config.objective().alphas_cumprod).sqrt().float()  # (N,) sqrt(1 - abar_n)
        self.register_buffer("skip_scale", skip, persistent=False)  # derived from the config, never stored
        self.unet = UNet2DConditionModel(
            sample_size=config.latent_size,
            in_channels=config.latent_channels,
            out_channels=config.latent_channels,
            down_block_types=config.down_block_types,
            up_block_types=config.up_block_types,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            cross_attention_dim=config.text_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.pooled_dim,
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        x: torch.Tensor,
        n: torch.Tensor,
        context: torch.Tensor,
        pooled: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, 3, H, W) noisy image, n (B,) integer steps, context (B, T, text_dim), pooled (B, pooled_dim),
        context_mask (B, T) bool (True = real token). Returns the predicted noise (B, 3, H, W)."""
        f = self.config.space_to_depth
        z = F.pixel_unshuffle(x, f) if f > 1 else x  # (B, 3f^2, H/f, W/f)
        mask = None if context_mask is None else context_mask.to(x.dtype)
        eps = self.unet(
            z, n, encoder_hidden_states=context, class_labels=pooled.to(x.dtype), encoder_attention_mask=mask
        ).sample
        eps = F.pixel_shuffle(eps, f) if f > 1 else eps  # (B, 3, H, W)
        if self.config.input_skip:
            scale: torch.Tensor = self.skip_scale  # type: ignore[assignment]  # a buffer, not a submodule
            eps = eps + scale[n.long()].to(x.dtype).view(-1, 1, 1, 1) * x
        return eps


def unet_config(widths: Sequence[int], space_to_depth: int, **kw) -> UNetBaselineConfig:
    """A UNet with one level per width: cross-attention at every level but the first when there are 3 or
    more levels (at the highest resolution it costs most and helps least), at every level otherwise."""
    levels = len(widths)
    attends = [levels < 3 or i > 0 for i in range(levels)]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends))
    return UNetBaselineConfig(
        block_out_channels=tuple(widths), space_to_depth=space_to_depth, down_block_types=down, up_block_types=up, **kw
    )
