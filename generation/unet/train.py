"""Train the UNet baseline on the demo domain (CPU-friendly).

    python -m generation.unet.train --out demo_models/unet-baseline --minutes 10     # or --steps 1056

The run writes the EMA weights as a checkpoint (generation.unet.checkpoint) every --save-every-minutes and at
the end; its recipe records the command, the steps done and planned, and the software versions.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation import demo_domain
from generation.text import CachedTextEncoder, drop_conditioning, load_text_encoder
from generation.unet.checkpoint import save_checkpoint
from generation.unet.model import UNetBaseline, UNetBaselineConfig, unet_config


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
            "trained_by": "generation.unet.train",
            "objective": "eps/linear (DDPM, scaled-linear betas)",
            "command": "python -m generation.unet.train " + " ".join(sys.argv[1:]),
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
    p = argparse.ArgumentParser(prog="python -m generation.unet.train", description=__doc__.split("\n\n")[0])
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
