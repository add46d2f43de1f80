"""The classic baseline: a text-conditioned UNet with eps-prediction on a DDPM schedule (the SD3 paper's "LDM").

Diffusers' UNet2DConditionModel predicts the noise eps of z_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps on
1000 discrete steps with LDM's scaled-linear betas (0.00085 .. 0.012); sampling is DDIM (deterministic) or
DDPM (ancestral) with classifier-free guidance. It is trained here on the demo domain with the same text
encoder as the in-house MM-DiT, so the demo compares genuinely different models on equal terms.

Like LDM, the UNet does not run on raw pixels: a fixed, lossless space-to-depth "autoencoder" turns a
(3, 32, 32) image into a (48, 8, 8) latent (pixel_unshuffle by 4, the same 4x4 cells the MM-DiT's patches
see), which keeps this CPU's training fast.

    x (B, 3, H, W) --pixel_unshuffle(f)--> (B, 3f^2, H/f, W/f) --UNet(t, text tokens, pooled text)--> eps
    text: token states (B, T, 384) -> cross-attention (padding masked); pooled (B, 384) -> added to the
          timestep embedding (class_embed_type="projection")

A checkpoint is a directory with model.safetensors + config.json = {format, format_version, config, recipe}.

    python -m generation.unet_baseline --out demo_models/unet-baseline --minutes 10     # or --steps 1056
    pipe = UNetBaselinePipeline.from_checkpoint("demo_models/unet-baseline", device="cpu")
    images = pipe(["a red circle on a blue background"], seeds=[0], steps=28, guidance_scale=4.0)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from generation import demo_domain
from generation.checkpoint_io import read_checkpoint_meta as _read_meta
from generation.checkpoint_io import write_checkpoint
from generation.contract import UNET_BASELINE_FORMAT, WEIGHTS_FILE
from generation.sampling import initial_noise
from generation.text import CachedTextEncoder, concat_encodings, drop_conditioning, load_text_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHECKPOINT_FORMAT_VERSION = 1
SCHEDULERS = ("ddim", "ddpm")


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
        from diffusers import UNet2DConditionModel

        self.config = config
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
        return F.pixel_shuffle(eps, f) if f > 1 else eps  # (B, 3, H, W)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(model: UNetBaseline, recipe: dict | None, directory: str | os.PathLike) -> Path:
    """Write model.safetensors and config.json (config.json last, so its presence means complete)."""
    meta = {
        "format": UNET_BASELINE_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "recipe": recipe or {},
    }
    return write_checkpoint(directory, model.state_dict(), meta)


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    return _read_meta(directory, fmt=UNET_BASELINE_FORMAT, version=CHECKPOINT_FORMAT_VERSION, what="a UNet baseline")


def load_unet_baseline(
    directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[UNetBaseline, dict]:
    """-> (model in eval mode, meta). FileNotFoundError for missing files, ValueError for corrupt ones."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(directory)
    config = UNetBaselineConfig.from_dict(meta["config"])
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    model = UNetBaseline(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval(), meta


# ----------------------------------------------------------------------------------------------------------
# Sampling


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


# ----------------------------------------------------------------------------------------------------------
# Training on the demo domain


@dataclass
class TrainConfig:
    out: str  # output directory: model.safetensors + config.json (the EMA weights)
    minutes: float = 10.0  # budget in CPU minutes of this process (a busy shared machine gets the same training)
    steps: int | None = None  # planned optimizer steps; None = planned from the speed of the first 20 steps
    seed: int = 0  # seeds data, noise, timesteps, dropout and initialisation
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # peak AdamW learning rate
    warmup_steps: int = 50  # linear warm-up, then cosine to lr * min_lr_ratio at the planned last step
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    ema_decay: float = 0.999  # the saved weights are the EMA
    caption_dropout: float = 0.1  # probability of training a row unconditionally (for CFG)
    kinds: dict = field(default_factory=lambda: {"shape": 1.0, "position": 0.5, "word": 0.5})  # prompt kinds
    text_encoder: str = "minilm"  # see generation.text.load_text_encoder
    save_every_minutes: float = 2.0  # checkpoints while training, so a stopped run still leaves one
    threads: int = 0  # torch CPU threads; 0 = all cores on an idle machine, 1 when others load it
    model: UNetBaselineConfig = field(default_factory=UNetBaselineConfig)


def _adapt_threads() -> None:
    cores = os.cpu_count() or 1
    want = cores if os.getloadavg()[0] - torch.get_num_threads() < 0.75 else 1
    if want != torch.get_num_threads():
        torch.set_num_threads(want)


def _lr(step: int, cfg: TrainConfig, planned: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, planned - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig) -> Path:
    """Train for cfg.minutes of CPU time; the learning-rate plan is fixed from the speed of the first steps."""
    from diffusers import DDPMScheduler

    torch.set_flush_denormal(True)  # denormals slow CPU training several-fold once weights get small
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data_rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    text = CachedTextEncoder(load_text_encoder(cfg.text_encoder))
    empty = text.encode([""])
    mcfg = cfg.model
    mcfg.text_dim, mcfg.pooled_dim = text.dim, text.pooled_dim
    model = UNetBaseline(mcfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    alphas_cumprod = DDPMScheduler(**mcfg.scheduler_config()).alphas_cumprod  # (N,)
    print(f"UNet baseline: {model.num_params() / 1e6:.2f}M parameters", flush=True)

    start, cpu_start = time.time(), time.process_time()
    next_save = start + cfg.save_every_minutes * 60
    planned = cfg.steps

    def cpu_used() -> float:
        return time.process_time() - cpu_start

    step, window = 0, []

    def recipe() -> dict:
        import diffusers

        return {
            "trained_by": "generation.unet_baseline",
            "objective": "eps/linear (DDPM, scaled-linear betas)",
            "command": "python -m generation.unet_baseline " + " ".join(sys.argv[1:]),
            "steps_done": step,
            "planned_steps": planned,
            "elapsed_seconds": round(time.time() - start, 1),
            "cpu_seconds": round(cpu_used(), 1),
            "text_encoder": cfg.text_encoder,
            "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"},
            "data": {"domain": "generation.demo_domain", "kinds": cfg.kinds, "split": "train"},
            "sampler_defaults": {"steps": 28, "guidance_scale": 4.0, "scheduler": "ddim"},
            "software": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
            },
        }

    while (cfg.steps is not None or cpu_used() < cfg.minutes * 60) and (planned is None or step < planned):
        if cfg.threads == 0 and step % 25 == 0:
            _adapt_threads()
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg, planned or 10**9)
        images, captions, _ = demo_domain.sample_batch(cfg.batch_size, data_rng, "train", cfg.kinds)
        x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        tokens, mask, pooled = drop_conditioning(text.encode(captions), empty, cfg.caption_dropout, gen)
        n = torch.randint(0, mcfg.num_train_timesteps, (x0.shape[0],), generator=gen)  # (B,)
        eps = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[n].view(-1, 1, 1, 1)
        xn = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(model(xn, n, tokens, pooled, mask), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        window.append(loss.item())
        if step == 20 and cfg.steps is None:  # fix the cosine plan from the measured speed (start-up included)
            rate = step / cpu_used()
            planned = step + int(rate * (cfg.minutes * 60 - cpu_used()))
            print(f"{rate:.2f} steps per CPU second: planning {planned} steps", flush=True)
        if step % 25 == 0:
            print(
                f"step {step} loss {np.mean(window):.4f} lr {_lr(step - 1, cfg, planned or 10**9):.2e} "
                f"{cpu_used() / 60:.1f} CPU min, {(time.time() - start) / 60:.1f} min",
                flush=True,
            )
            window = []
        if time.time() >= next_save:
            save_checkpoint(ema, recipe(), cfg.out)
            next_save = time.time() + cfg.save_every_minutes * 60
    save_checkpoint(ema, recipe(), cfg.out)
    print(
        f"saved {cfg.out} at step {step} ({cpu_used() / 60:.1f} CPU min, {(time.time() - start) / 60:.1f} min)",
        flush=True,
    )
    return Path(cfg.out)


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


def _parse_kinds(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        if not sep or name.strip() not in demo_domain.KINDS:
            raise argparse.ArgumentTypeError(f"--kinds takes kind=weight pairs of {demo_domain.KINDS}, got {text!r}")
        out[name.strip()] = float(weight)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    defaults = TrainConfig(out="")
    p = argparse.ArgumentParser(prog="python -m generation.unet_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=defaults.minutes, help="training budget in CPU minutes")
    p.add_argument("--steps", type=int, help="train exactly this many steps (no clock; reproduces a --minutes run)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--kinds", type=_parse_kinds, default=defaults.kinds, help="e.g. shape=1,position=0.5,word=0.5")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--widths", default="64,128", help="UNet widths, one resolution level each")
    p.add_argument("--space-to-depth", type=int, default=4, help="f: f x f pixel blocks become channels")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1):
        p.error("--minutes and --steps must be positive")
    try:
        model = unet_config([int(w) for w in args.widths.split(",")], args.space_to_depth)
    except ValueError as e:
        p.error(f"--widths/--space-to-depth: {e}")
    train(
        TrainConfig(
            out=args.out,
            minutes=args.minutes,
            steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            kinds=args.kinds,
            threads=args.threads,
            model=model,
        )
    )


if __name__ == "__main__":
    main()
