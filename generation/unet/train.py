"""Train the UNet baseline on the demo domain (CPU-friendly).

    python -m generation.unet.train --out demo_models/unet-baseline --minutes 10     # or --steps 1056

The run writes the EMA weights as a checkpoint (generation.unet.checkpoint) every --save-every-minutes and at
the end; its recipe records the command, the steps done and planned, and the software versions.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generation import demo_domain
from generation.contract import DEFAULT_SAMPLER_SETTINGS
from generation.text import CachedTextEncoder, Encoding, drop_conditioning, load_text_encoder
from generation.training import (
    TimeBudget,
    adapt_threads,
    ema_update_,
    lr_at,
    parse_kinds,
    set_lr,
    setup_threads,
    software_versions,
)
from generation.unet.checkpoint import save_checkpoint
from generation.unet.model import UNetBaseline, UNetBaselineConfig, unet_config


@dataclass
class TrainConfig:
    out: str  # output directory: model.safetensors + config.json (the EMA weights)
    minutes: float = 10.0  # budget in CPU minutes of this process (a busy shared machine gets the same training)
    steps: int | None = None  # planned optimizer steps; None = planned from the speed of the first 20 steps
    stop_at: int | None = None  # stop (and save) at this step though the plan is longer: replays a stopped run
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
    guidance_scale: float = DEFAULT_SAMPLER_SETTINGS["guidance_scale"]  # the sampler default written to the recipe
    # Loss weight per step n, in eps terms: "eps" = 1 (DDPM's simple loss); "snr+1" = 1 + 1/SNR_n, clipped at
    # max_loss_weight and divided by its mean over n (the x0 error weighted as v-prediction weights it; see
    # loss_weights). The model still predicts eps.
    loss_weighting: str = "eps"
    max_loss_weight: float = 20.0
    model: UNetBaselineConfig = field(default_factory=UNetBaselineConfig)
    device: str = "cpu"  # where the model trains; data, noise and steps are drawn on the CPU, so a run is the same


LOSS_WEIGHTINGS = ("eps", "snr+1")


def loss_weights(alphas_cumprod: torch.Tensor, weighting: str, max_weight: float) -> torch.Tensor | None:
    """Per-step weights (N,) of the eps regression, or None for DDPM's unweighted loss.

    An eps error e at step n is an x0 error e / sqrt(SNR_n) (SNR_n = abar_n / (1 - abar_n)), so the plain eps loss
    weights x0 errors by SNR_n: at the noisiest steps of the scaled-linear schedule by about 0.005. Those steps
    decide the layout and shape of the image, and DDIM multiplies their eps error by up to 1 / sqrt(abar) ~ 15
    on its way to x0. "snr+1" weights the eps error by 1 + 1/SNR_n (the x0 error by SNR_n + 1, as a v-prediction
    loss does), clipped at max_weight so the last few steps do not take the whole gradient, and normalised to
    mean 1 over the steps so the learning rate keeps its meaning."""
    if weighting == "eps":
        return None
    if weighting != "snr+1":
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {', '.join(LOSS_WEIGHTINGS)}")
    if max_weight < 1:
        raise ValueError("max_loss_weight must be at least 1")
    snr = alphas_cumprod / (1 - alphas_cumprod)
    w = (1 + 1 / snr).clamp(max=max_weight)
    return w / w.mean()


def diffusion_loss(
    model: UNetBaseline,
    x0: torch.Tensor,
    text: Encoding,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDPM's loss on a batch x0 (B, 3, H, W) in [-1, 1]: draw steps n and noise eps from `generator`, noise x0 to
    x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, and regress the model's prediction onto eps (each row weighted
    by weights[n] when given: see loss_weights)."""
    tokens, mask, pooled = (t.to(x0.device) for t in text)
    n = torch.randint(0, model.config.num_train_timesteps, (x0.shape[0],), generator=generator)  # (B,)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    a = alphas_cumprod[n].view(-1, 1, 1, 1).to(x0.device)
    if weights is not None:
        weights = weights[n].to(x0.device)
    n = n.to(x0.device)
    xn = a.sqrt() * x0 + (1 - a).sqrt() * eps
    if weights is None:
        return F.mse_loss(model(xn, n, tokens, pooled, mask), eps)
    per_row = (model(xn, n, tokens, pooled, mask) - eps).pow(2).mean(dim=(1, 2, 3))
    return (weights * per_row).mean()


def recipe(cfg: TrainConfig, step: int, planned: int | None, wall: TimeBudget, cpu: TimeBudget) -> dict:
    """What config.json records about the run: the command, its progress and the software."""
    return {
        "trained_by": "generation.unet.train",
        "objective": "eps/linear (DDPM, scaled-linear betas)",  # what the model predicts; the weighting is below
        "loss_weighting": "eps (unweighted)"
        if cfg.loss_weighting == "eps"
        else f"{cfg.loss_weighting}, clipped at {cfg.max_loss_weight:g}, mean 1",
        "command": "python -m generation.unet.train " + " ".join(sys.argv[1:]),
        "steps_done": step,
        "planned_steps": planned,
        "elapsed_seconds": round(wall.used(), 1),
        "cpu_seconds": round(cpu.used(), 1),
        "text_encoder": cfg.text_encoder,
        "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"},
        "data": {"domain": "generation.demo_domain", "kinds": cfg.kinds, "split": "train"},
        "sampler_defaults": {"steps": DEFAULT_SAMPLER_SETTINGS["steps"], "guidance_scale": cfg.guidance_scale}
        | {"scheduler": "ddim"},
        "software": software_versions(),
    }


def train(cfg: TrainConfig) -> Path:
    """Train for cfg.minutes of CPU time (or exactly cfg.steps steps); with a time budget the learning-rate plan
    is fixed from the speed of the first 20 steps."""
    from diffusers import DDPMScheduler

    setup_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the model's initial weights
    data_rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    text = CachedTextEncoder(load_text_encoder(cfg.text_encoder))
    empty = text.encode([""])
    mcfg = cfg.model
    mcfg.text_dim, mcfg.pooled_dim = text.dim, text.pooled_dim
    model = UNetBaseline(mcfg).to(cfg.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # (N,); diffusers sets the attribute in an __init__ wrapped by @register_to_config, which hides it from mypy
    alphas_cumprod = DDPMScheduler(**mcfg.scheduler_config()).alphas_cumprod  # type: ignore[attr-defined]
    weights = loss_weights(alphas_cumprod, cfg.loss_weighting, cfg.max_loss_weight)
    print(f"UNet baseline: {model.num_params() / 1e6:.2f}M parameters", flush=True)

    wall, cpu = TimeBudget(None), TimeBudget(cfg.minutes, clock=time.process_time)
    next_save = time.time() + cfg.save_every_minutes * 60
    planned = cfg.steps
    step, window = 0, []
    stop = []  # SIGTERM (a `timeout`, a scheduler) ends the run after the current step, with a checkpoint
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while (
        not stop
        and (cfg.steps is not None or not cpu.spent())
        and (planned is None or step < planned)
        and (cfg.stop_at is None or step < cfg.stop_at)
    ):
        if cfg.threads == 0 and step % 25 == 0:
            adapt_threads()
        set_lr(opt, lr_at(step, planned or 10**9, cfg))
        images, captions, _ = demo_domain.sample_batch(cfg.batch_size, data_rng, "train", cfg.kinds)
        x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(cfg.device) / 127.5 - 1.0  # (B, 3, H, W)
        text.warm(captions)  # the batch's new captions in one call
        conditioning = drop_conditioning(text.encode(captions), empty, cfg.caption_dropout, gen)
        loss = diffusion_loss(model, x0, conditioning, alphas_cumprod, gen, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update_(ema, model, step, cfg.ema_decay)
        step += 1
        window.append(loss.item())
        if step == 20 and cfg.steps is None:  # fix the cosine plan from the measured speed (start-up included)
            rate = step / cpu.used()
            planned = cpu.plan(step, rate)
            print(f"{rate:.2f} steps per CPU second: planning {planned} steps", flush=True)
        if step % 25 == 0:
            print(
                f"step {step} loss {np.mean(window):.4f} lr {lr_at(step - 1, planned or 10**9, cfg):.2e} "
                f"{cpu.used() / 60:.1f} CPU min, {wall.used() / 60:.1f} min",
                flush=True,
            )
            window = []
        if time.time() >= next_save:
            save_checkpoint(ema, recipe(cfg, step, planned, wall, cpu), cfg.out)
            next_save = time.time() + cfg.save_every_minutes * 60
    signal.signal(signal.SIGTERM, previous)
    if stop:
        print(f"stopped by SIGTERM at step {step} of {planned}", flush=True)
    save_checkpoint(ema, recipe(cfg, step, planned, wall, cpu), cfg.out)
    print(f"saved {cfg.out} at step {step} ({cpu.used() / 60:.1f} CPU min, {wall.used() / 60:.1f} min)", flush=True)
    return Path(cfg.out)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a training process never reaches a model hub
    defaults = TrainConfig(out="")
    p = argparse.ArgumentParser(prog="python -m generation.unet.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--minutes", type=float, default=defaults.minutes, help="training budget in CPU minutes")
    p.add_argument("--steps", type=int, help="train exactly this many steps (no clock; reproduces a --minutes run)")
    p.add_argument(
        "--stop-at",
        type=int,
        help="stop (and save) at this step of the --steps plan: replays a run that a timeout or SIGTERM stopped",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--kinds", type=parse_kinds, default=defaults.kinds, help="e.g. shape=1,position=0.5,word=0.5")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--widths", default="64,128", help="UNet widths, one resolution level each")
    p.add_argument("--space-to-depth", type=int, default=4, help="f: f x f pixel blocks become channels")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where the model trains (cpu, cuda)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=DEFAULT_SAMPLER_SETTINGS["guidance_scale"],
        help="the classifier-free guidance the checkpoint recommends (its sampler default on the platform)",
    )
    p.add_argument(
        "--input-skip", action="store_true", help="eps = sqrt(1 - abar) x + UNet(...) (see UNetBaselineConfig)"
    )
    p.add_argument(
        "--loss-weighting",
        choices=LOSS_WEIGHTINGS,
        default=defaults.loss_weighting,
        help="eps: DDPM's simple loss; snr+1: weight the noisiest steps up (see loss_weights)",
    )
    p.add_argument("--max-loss-weight", type=float, default=defaults.max_loss_weight, help="clip for snr+1")
    args = p.parse_args(argv)
    if args.max_loss_weight < 1:
        p.error("--max-loss-weight must be at least 1")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1):
        p.error("--minutes and --steps must be positive")
    if args.stop_at is not None and (args.steps is None or not 1 <= args.stop_at <= args.steps):
        p.error("--stop-at needs --steps (the plan it cuts short) and must lie between 1 and --steps")
    try:
        model = unet_config([int(w) for w in args.widths.split(",")], args.space_to_depth, input_skip=args.input_skip)
    except ValueError as e:
        p.error(f"--widths/--space-to-depth: {e}")
    train(
        TrainConfig(
            out=args.out,
            minutes=args.minutes,
            steps=args.steps,
            stop_at=args.stop_at,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            kinds=args.kinds,
            threads=args.threads,
            guidance_scale=args.guidance_scale,
            loss_weighting=args.loss_weighting,
            max_loss_weight=args.max_loss_weight,
            model=model,
            device=args.device,
        )
    )


if __name__ == "__main__":
    main()
