"""What score distillation needs of a text-to-image model, and adapters for the models the platform runs.

A `Prior` is anything that, given a noised image (in its own image space) and a prompt, returns the denoising
direction it was trained to predict, with classifier-free guidance:

    prediction "velocity" (rectified flow): z_t = (1 - t) x + t eps, t in (0, 1), the model predicts v = eps - x;
    prediction "eps" (DDPM): z_n = sqrt(ab_n) x + sqrt(1 - ab_n) eps on training step n, the model predicts eps.

Adapters (neither copies the model code; both call the models exactly as their samplers do):
    InHousePrior     an in-house MM-DiT checkpoint (generation.mmdit.pipeline.InHousePipeline), either objective;
                     the guided prediction is generation.sampling.guided_prediction, the sampler's own.
    UNetBaselinePrior  the UNet eps-prediction baseline (generation.unet), the same way.
    DiffusersPrior   a loaded diffusers pipeline's denoiser: a UNet (eps or v-prediction scheduler, e.g. Stable
                     Diffusion) or an SD3-style transformer (flow matching); renders go through its VAE encoder.
`load_prior(kind, source)` loads the prior of a platform model by its kind. Nothing here computes gradients
through a prior: `predict` runs under torch.no_grad().
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from generation.contract import DIFFUSERS, INHOUSE, UNET_BASELINE
from generation.flow import EpsPrediction, make_objective
from generation.sampling import guided_prediction
from generation.text import conditioning

PREDICTIONS = ("velocity", "eps")


@runtime_checkable
class Prior(Protocol):
    prediction: str  # "velocity" or "eps" (PREDICTIONS)
    image_size: int  # pixels per side of the RGB views the prior judges
    alphas_cumprod: torch.Tensor | None  # eps: (N,) float64 alpha_bar_n of its training schedule; velocity: None
    device: torch.device

    def encode_prompt(self, prompt: str) -> Any:
        """The prompt's text inputs, and the empty prompt's for guidance, in whatever form `predict` takes."""
        ...

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, C, h, w) in the model's image space; differentiable."""
        ...

    def predict(self, z: torch.Tensor, t: torch.Tensor, text: Any, guidance_scale: float) -> torch.Tensor:
        """The guided prediction (B, C, h, w) float32 for noised z at t: (B,) float t in (0, 1) for "velocity",
        (B,) long training steps n for "eps". No gradient."""
        ...


def _expand(cond: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    return {key: value.expand(batch, *value.shape[1:]) for key, value in cond.items()}


class _TrainedHerePrior:
    """A model trained by this project: text from its MiniLM encoder, guidance by the sampler's own code."""

    pipeline: Any
    device: torch.device
    model: Any

    def encode_prompt(self, prompt: str) -> tuple[dict, dict]:
        encoder = self.pipeline.text_encoder
        move = lambda c: {k: v.to(self.device) for k, v in c.items()}  # noqa: E731
        return move(conditioning(encoder, [prompt])), move(conditioning(encoder, [""]))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, z: torch.Tensor, t: torch.Tensor, text: tuple[dict, dict], guidance_scale: float):
        cond, uncond = (_expand(c, z.shape[0]) for c in text)
        return guided_prediction(self.model, z, self.model_time(t).to(z.device), cond, uncond, guidance_scale)


@dataclass
class InHousePrior(_TrainedHerePrior):
    """An in-house MM-DiT (rectified flow or eps-prediction), from a loaded InHousePipeline."""

    pipeline: Any  # generation.mmdit.pipeline.InHousePipeline

    def __post_init__(self):
        self.objective = make_objective(self.pipeline.objective)
        self.eps = isinstance(self.objective, EpsPrediction)
        self.prediction = "eps" if self.eps else "velocity"
        self.alphas_cumprod = self.objective.alphas_cumprod if self.eps else None
        self.image_size = int(self.pipeline.default_size)
        self.device = self.pipeline.device
        self.model = self.pipeline.model
        self.model.requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> InHousePrior:
        from generation.mmdit.pipeline import InHousePipeline

        return cls(InHousePipeline.from_checkpoint(path, device=device))

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        space = self.pipeline.space
        x = rgb * 2 - 1  # the MM-DiT's pixels are in [-1, 1]
        if space.vae is None:
            return x
        latents = space.vae.encode(x).latent_dist.mean
        return (latents - space.shift_factor) * space.scaling_factor

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """What its sampler gives the model: t itself (rectified flow), t = n / N (eps)."""
        return t.float() / self.objective.num_train_steps if self.eps else t.float()


@dataclass
class UNetBaselinePrior(_TrainedHerePrior):
    """The UNet eps-prediction baseline (generation.unet), pixels in [-1, 1], given the integer step n."""

    pipeline: Any  # generation.unet.pipeline.UNetBaselinePipeline

    def __post_init__(self):
        config = self.pipeline.model.config
        self.objective = config.objective()
        self.prediction = "eps"
        self.alphas_cumprod = self.objective.alphas_cumprod
        self.image_size = int(config.sample_size)
        self.device = self.pipeline.device
        self.model = self.pipeline.model
        self.model.requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> UNetBaselinePrior:
        from generation.unet.pipeline import UNetBaselinePipeline

        return cls(UNetBaselinePipeline.from_checkpoint(path, device=device))

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb * 2 - 1

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        return t.long()  # its sampler's timestep_input="index"


@dataclass
class DiffusersPrior:
    """A diffusers text-to-image pipeline's denoiser (pipe.unet or pipe.transformer) behind its VAE.

    UNet pipelines (Stable Diffusion and kin): the scheduler's alphas_cumprod and prediction_type ("epsilon", or
    "v_prediction", turned into eps); transformer pipelines with a flow-matching scheduler (SD3): velocity,
    timestep = t * num_train_timesteps. Build it from a pipeline, or from a generation.backends.DiffusersBackend."""

    pipe: Any  # a diffusers DiffusionPipeline

    def __post_init__(self):
        pipe = self.pipe
        self.device = torch.device(pipe.device)
        self.denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
        if self.denoiser is None or getattr(pipe, "vae", None) is None:
            raise ValueError(f"{type(pipe).__name__} has no unet/transformer and VAE: not a latent denoiser")
        self.denoiser.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        self.transformer = getattr(pipe, "transformer", None) is not None
        config = pipe.scheduler.config
        if self.transformer:
            self.prediction, self.alphas_cumprod = "velocity", None
        else:
            kind = config.get("prediction_type", "epsilon")
            if kind not in ("epsilon", "v_prediction"):
                raise ValueError(f"SDS needs an eps or v-prediction scheduler, not {kind!r}")
            self.v_prediction = kind == "v_prediction"
            self.prediction = "eps"
            self.alphas_cumprod = pipe.scheduler.alphas_cumprod.double()
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.image_size = int(self.denoiser.config.sample_size) * int(pipe.vae_scale_factor)
        self.dtype = next(self.denoiser.parameters()).dtype

    @classmethod
    def from_backend(cls, backend) -> DiffusersPrior:
        return cls(backend.pipe)

    def encode_prompt(self, prompt: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            if self.transformer:
                embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
                    prompt, prompt, prompt, device=self.device, do_classifier_free_guidance=True, negative_prompt=""
                )
                return {"embeds": embeds, "negative": negative, "pooled": pooled, "negative_pooled": negative_pooled}
            embeds, negative = self.pipe.encode_prompt(prompt, self.device, 1, True, negative_prompt="")
            return {"embeds": embeds, "negative": negative}

    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        latents = vae.encode((rgb * 2 - 1).to(vae.dtype)).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    @torch.no_grad()
    def predict(self, z: torch.Tensor, t: torch.Tensor, text: dict[str, torch.Tensor], guidance_scale: float):
        B = z.shape[0]
        both = torch.cat([z, z]).to(self.dtype)
        embeds = torch.cat([text["negative"].expand(B, -1, -1), text["embeds"].expand(B, -1, -1)])
        if self.transformer:
            timestep = torch.cat([t, t]).float() * self.num_train_timesteps
            pooled = torch.cat([text["negative_pooled"].expand(B, -1), text["pooled"].expand(B, -1)])
            out = self.denoiser(
                hidden_states=both, timestep=timestep, encoder_hidden_states=embeds, pooled_projections=pooled
            ).sample
        else:
            out = self.denoiser(both, torch.cat([t, t]).long(), encoder_hidden_states=embeds).sample
        uncond, cond = out.float().chunk(2)
        pred = uncond + guidance_scale * (cond - uncond)
        if not self.transformer and self.v_prediction:  # v = sqrt(ab) eps - sqrt(1 - ab) x -> eps
            ab = self.alphas_cumprod.to(z.device)[t.long()].float().view(-1, 1, 1, 1)
            pred = ab.sqrt() * pred + (1 - ab).sqrt() * z
        return pred


def load_prior(kind: str, source: str, device: str | torch.device = "cpu") -> Prior:
    """The prior of a platform model: its kind (generation.contract: inhouse, unet_baseline, diffusers) and source
    (a checkpoint directory; for diffusers also a hub id in the local cache), loaded as generation.backends does."""
    if kind == INHOUSE:
        return InHousePrior.from_checkpoint(source, device=device)
    if kind == UNET_BASELINE:
        return UNetBaselinePrior.from_checkpoint(source, device=device)
    if kind == DIFFUSERS:
        from generation.backends import load_backend

        return DiffusersPrior.from_backend(load_backend(DIFFUSERS, source, str(device)))
    raise ValueError(f"no 3D prior for model kind {kind!r}; use one of {INHOUSE}, {UNET_BASELINE}, {DIFFUSERS}")
