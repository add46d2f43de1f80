"""Train the in-house MM-DiT on the demo domain (CPU-friendly; a GPU works too).

    python -m generation.mmdit.train --out runs/demo --minutes 20
    python -m generation.mmdit.train --out runs/eps --objective eps --schedule linear --steps 1000 --seed 0
    python -m generation.mmdit.train --out runs/demo --resume            # continue from runs/demo/train_state.pt
    python -m generation.mmdit.train --export runs/demo --out demo_models/demo   # fp16 copy of the EMA checkpoint

What a run writes into --out:
    model.safetensors + config.json   the EMA weights of the latest checkpoint (generation.mmdit.checkpoint format);
                                      config.json["recipe"] records the whole recipe (objective, t-sampling,
                                      steps done, seed, text encoder, lr, batch, resolution, versions...)
    train_state.pt                    raw weights, EMA, optimizer, step, elapsed time and every RNG state,
                                      so --resume continues exactly as if the run had not stopped
    step-NNNNNN/                      optional snapshots (--snapshot-every), model + config only

The learning rate warms up linearly, then follows a cosine to --min-lr-ratio of its peak at the planned last
step. With --minutes (and no --steps), the plan is fixed from the speed measured over --calibration-steps
steps after --calibration-start warm-up steps and written to the recipe as planned_steps, so
`--steps <planned_steps>` reproduces the run without a clock; the run also stops when the time is up.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import random
import shlex
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from generation import demo_domain
from generation.contract import DEFAULT_SAMPLER_SETTINGS
from generation.flow import make_objective, training_loss
from generation.mmdit.checkpoint import load_mmdit, save_checkpoint
from generation.mmdit.model import MMDiT, MMDiTConfig
from generation.mmdit.pipeline import ImageSpace
from generation.text import CachedTextEncoder, drop_conditioning, load_text_encoder
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

STATE_FILE = "train_state.pt"


def render_step_batch(seed: int, step: int, batch_size: int, kinds: dict) -> tuple[np.ndarray, list[str]]:
    """The images and captions of optimizer step `step` under --data-workers: a function of (seed, step) only."""
    images, captions, _ = demo_domain.sample_batch(batch_size, np.random.default_rng([seed, step]), "train", kinds)
    return images, captions


class StepBatches:
    """Renders the batches of the coming steps in worker processes, `ahead` batches in flight."""

    def __init__(self, cfg: TrainConfig, ahead: int | None = None):
        self.cfg = cfg
        self.ahead = ahead or 2 * cfg.data_workers
        self.pool = ProcessPoolExecutor(cfg.data_workers, mp_context=multiprocessing.get_context("spawn"))
        self.pending: deque[tuple[int, Future]] = deque()
        self.next_step = 0

    def _fill(self) -> None:
        while len(self.pending) < self.ahead:
            cfg = self.cfg
            job = self.pool.submit(render_step_batch, cfg.seed, self.next_step, cfg.batch_size, cfg.kinds)
            self.pending.append((self.next_step, job))
            self.next_step += 1

    def get(self, step: int) -> tuple[np.ndarray, list[str]]:
        if not self.pending or self.pending[0][0] != step:  # first call, or a jump (resume): restart the queue
            for _, job in self.pending:
                job.cancel()
            self.pending.clear()
            self.next_step = step
        self._fill()
        _, job = self.pending.popleft()
        self._fill()
        return job.result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class TrainConfig:
    out: str  # output directory (checkpoint, train_state.pt, snapshots)
    # --- objective
    objective: str = "rf"  # "rf" (rectified flow, velocity) or "eps" (DDPM eps-prediction ablation)
    t_sampling: str = "logit_normal"  # rf timestep density: logit_normal, uniform, mode, cosmap
    logit_mean: float = 0.0  # m of logit-normal(m, s)
    logit_std: float = 1.0  # s of logit-normal(m, s)
    mode_scale: float = 1.29  # s of the mode density
    schedule: str = "linear"  # eps noise schedule: linear (LDM scaled linear) or cos
    # --- budget
    steps: int | None = None  # planned number of optimizer steps (fixes the cosine schedule)
    minutes: float | None = None  # wall-clock budget; without --steps the plan is derived from the speed
    stop_at: int | None = None  # stop (and save) at this step even if the plan is longer; --resume goes on
    calibration_start: int = 50  # warm-up steps not timed (the first steps compile kernels and run slowly)
    calibration_steps: int = 100  # steps timed, after calibration_start, before a --minutes plan is fixed
    # --- optimisation
    seed: int = 0  # seeds data, noise, timesteps, dropout and initialisation
    batch_size: int = 64  # images per step
    lr: float = 2e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.05  # lr at the planned last step, as a fraction of the peak
    warmup_steps: int = 200  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    ema_decay: float = 0.999  # EMA of the weights; the saved model is the EMA
    caption_dropout: float = 0.1  # probability of replacing a caption's encoding by the empty prompt's
    bf16: bool = True  # bfloat16 autocast for the forward pass
    # --- model
    depth: int = 6  # MM-DiT blocks
    width: int = 128  # token width (hidden_size)
    heads: int = 4  # attention heads (width / heads per head)
    patch: int = 4  # patch side in pixels (or latent cells)
    mlp_ratio: float = 4.0  # MLP hidden width / token width
    # --- data and conditioning
    image_size: int = demo_domain.IMAGE_SIZE  # side of the demo images in pixels
    kinds: dict = field(default_factory=lambda: dict(demo_domain.DEFAULT_KIND_WEIGHTS))  # prompt kind weights
    text_encoder: str = "minilm"  # see generation.text.load_text_encoder
    data_workers: int = 0  # 0: draw batches in this process from one seeded stream (saved in train_state.pt);
    # N >= 1: N worker processes draw the batch of step s from a generator seeded with (seed, s), so the data
    # is the same for any N >= 1 and a resumed run needs no data-stream state (a GPU outruns one CPU renderer)
    vae: str | None = None  # directory of a diffusers AutoencoderKL; None = pixel space
    # --- bookkeeping
    save_every: int = 500  # steps between checkpoints (and one at the end)
    snapshot_every: int = 0  # steps between kept step-NNNNNN snapshots (0 = none)
    log_every: int = 100  # steps between plain log lines (for log files)
    threads: int = 1  # torch CPU threads; 0 = adapt (all cores while the machine is idle, 1 when others load it).
    # 1 by default: on the shared 2-core machine two OpenMP threads fighting other processes ran 2-30x slower
    # per step than one thread, while one thread is only ~25% slower than two on an idle machine.


def objective_name(cfg: TrainConfig) -> str:
    """The generation.flow name of the configured objective, e.g. 'rf/lognorm(0.00,1.00)'."""
    if cfg.objective == "eps":
        return f"eps/{cfg.schedule}"
    if cfg.objective != "rf":
        raise ValueError(f"objective must be 'rf' or 'eps', got {cfg.objective!r}")
    names = {
        "logit_normal": f"rf/lognorm({cfg.logit_mean:.2f},{cfg.logit_std:.2f})",
        "uniform": "rf/uniform",
        "mode": f"rf/mode({cfg.mode_scale:.2f})",
        "cosmap": "rf/cosmap",
    }
    if cfg.t_sampling not in names:
        raise ValueError(f"t-sampling must be one of {', '.join(names)}, got {cfg.t_sampling!r}")
    return names[cfg.t_sampling]


class Trainer:
    """Holds everything one run needs; `run()` trains until the plan, the clock or stop_at says stop."""

    def __init__(self, cfg: TrainConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.objective = make_objective(objective_name(cfg))
        self.space = ImageSpace(cfg.vae, cfg.image_size, device=device)
        self.text = CachedTextEncoder(load_text_encoder(cfg.text_encoder))
        self.empty = self.text.encode([""])
        torch.manual_seed(cfg.seed)
        model_cfg = MMDiTConfig(
            in_channels=self.space.channels,
            sample_size=self.space.sample_size,
            patch_size=cfg.patch,
            depth=cfg.depth,
            hidden_size=cfg.width,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            text_dim=self.text.dim,
            pooled_dim=self.text.pooled_dim,
        )
        self.model = MMDiT(model_cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        # multi-tensor ("foreach") updates: one kernel per step instead of ~10 small ones per parameter (on the
        # 2-core CPU the per-parameter AdamW took 9 ms of a 173 ms step)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, foreach=True
        )
        self.data_rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step, self.elapsed = 0, 0.0
        self.planned = cfg.steps
        self.last_loss = float("nan")
        self.batches = StepBatches(cfg) if cfg.data_workers > 0 else None

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "step": self.step,
            "elapsed": self.elapsed,
            "planned": self.planned,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_rng": self.data_rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }

    def load_state(self, state: dict) -> None:
        self.step, self.elapsed, self.planned = state["step"], state["elapsed"], state["planned"]
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_rng.bit_generator.state = state["data_rng"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])

    def recipe(self) -> dict:
        cfg = self.cfg
        return {
            "trained_by": "generation.mmdit.train",
            "objective": objective_name(cfg),
            "t_sampling": cfg.t_sampling if cfg.objective == "rf" else None,
            "steps_done": self.step,
            "planned_steps": self.planned,
            "elapsed_seconds": round(self.elapsed, 1),
            "steps_per_second": round(self.step / self.elapsed, 3) if self.elapsed else None,
            "seed": cfg.seed,
            "text_encoder": cfg.text_encoder,
            "text_dim": self.text.dim,
            "pooled_dim": self.text.pooled_dim,
            "caption_dropout": cfg.caption_dropout,
            "lr": cfg.lr,
            "lr_schedule": f"linear warm-up {cfg.warmup_steps} steps, cosine to {cfg.min_lr_ratio} x lr",
            "optimizer": f"AdamW betas (0.9, 0.999) weight_decay {cfg.weight_decay} grad_clip {cfg.grad_clip}",
            "batch_size": cfg.batch_size,
            "ema_decay": cfg.ema_decay,
            "weights": "ema",
            "bf16_autocast": cfg.bf16,
            "image_size": cfg.image_size,
            "resolution": [cfg.image_size, cfg.image_size],
            "vae": cfg.vae,
            "latent_scaling_factor": self.space.scaling_factor,
            "latent_shift_factor": self.space.shift_factor,
            "data": {
                "domain": "generation.demo_domain",
                "kinds": cfg.kinds,
                "split": "train",
                "shape_size": list(demo_domain.SHAPE_SIZE),
                "shape_jitter": demo_domain.SHAPE_JITTER,
                "heldout_seed": demo_domain.HELDOUT_SEED,
            },
            "sampler_defaults": {k: DEFAULT_SAMPLER_SETTINGS[k] for k in ("steps", "guidance_scale", "shift")},
            "train_config": asdict(cfg),
            "software": software_versions(),
        }

    def save(self, snapshot: bool = False) -> None:
        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (STATE_FILE + ".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, out / STATE_FILE)
        recipe = self.recipe()
        save_checkpoint(self.ema, recipe, out)
        if snapshot:
            save_checkpoint(self.ema, recipe, out / f"step-{self.step:06d}")

    # ------------------------------------------------------------------ training

    def batch(self) -> tuple[torch.Tensor, dict]:
        if self.batches is not None:
            images, captions = self.batches.get(self.step)
        else:
            images, captions, _ = demo_domain.sample_batch(self.cfg.batch_size, self.data_rng, "train", self.cfg.kinds)
        x0 = self.space.encode(images, generator=self.generator)  # (B, C, h, w)
        self.text.warm(captions)  # the batch's new captions in one call (one at a time they held a GPU back)
        enc = drop_conditioning(self.text.encode(captions), self.empty, self.cfg.caption_dropout, self.generator)
        tokens, mask, pooled = (t.to(self.device) for t in enc)
        return x0, {"context": tokens, "pooled": pooled, "context_mask": mask}

    def train_step(self) -> torch.Tensor:
        """One optimizer step; returns the loss as a 0-d tensor (reading it waits for the device, so the
        training loop reads losses only when it logs)."""
        cfg = self.cfg
        set_lr(self.optimizer, lr_at(self.step, self.planned or cfg.steps or 1, cfg))
        x0, cond = self.batch()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = training_loss(self.model, x0, cond, self.objective, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        self.optimizer.step()
        ema_update_(self.ema, self.model, self.step, cfg.ema_decay)
        self.step += 1
        return loss.detach()

    def run(self) -> Path:
        cfg = self.cfg
        budget = TimeBudget(cfg.minutes, used=self.elapsed)  # wall clock; a resumed run brings its elapsed time
        if self.planned is None and cfg.minutes is None:
            raise ValueError("give --steps or --minutes")
        bar = tqdm(total=self.planned, initial=self.step, desc=Path(cfg.out).name, unit="step", smoothing=0.05)
        window: list[torch.Tensor] = []
        calibration_start = None
        while True:
            if self.planned is not None and self.step >= self.planned:
                break
            if budget.spent():
                print(f"time budget of {cfg.minutes} min used at step {self.step}", flush=True)
                break
            if cfg.stop_at is not None and self.step >= cfg.stop_at:
                break
            if cfg.threads == 0 and self.step % 25 == 0:
                adapt_threads()
            window.append(self.train_step())
            self.elapsed = budget.used()
            bar.update(1)
            if self.planned is None:  # a --minutes plan: time some steps, then fix the number of steps
                if self.step == cfg.calibration_start:
                    calibration_start = (time.time(), self.step)
                elif calibration_start and self.step == cfg.calibration_start + cfg.calibration_steps:
                    rate = cfg.calibration_steps / (time.time() - calibration_start[0])
                    self.planned = budget.plan(self.step, rate)
                    bar.total = self.planned
                    bar.refresh()
                    print(f"measured {rate:.2f} steps/s: planning {self.planned} steps", flush=True)
            if self.step % cfg.log_every == 0:
                lr = lr_at(self.step - 1, self.planned or 1, cfg)
                self.last_loss = float(torch.stack(window).float().mean())
                bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.2e}")
                print(
                    f"step {self.step} loss {self.last_loss:.4f} lr {lr:.2e} "
                    f"{self.step / self.elapsed:.2f} steps/s elapsed {self.elapsed / 60:.1f} min",
                    flush=True,
                )
                window = []
            snapshot = cfg.snapshot_every > 0 and self.step % cfg.snapshot_every == 0
            if self.step % cfg.save_every == 0 or snapshot:
                self.save(snapshot=snapshot)
        bar.close()
        if self.batches is not None:
            self.batches.close()
        if self.planned is None:  # stopped before the plan was fixed (tiny budgets)
            self.planned = self.step
        self.save(snapshot=cfg.snapshot_every > 0 and self.step % cfg.snapshot_every != 0)
        print(f"saved {cfg.out} at step {self.step} ({self.elapsed / 60:.1f} min)", flush=True)
        return Path(cfg.out)


def train(cfg: TrainConfig, resume: bool = False, device: str = "cpu") -> Path:
    """Run (or with resume=True continue) a training run; returns the output directory."""
    setup_threads(cfg.threads)
    state_path = Path(cfg.out) / STATE_FILE
    state = None
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: {state_path} does not exist")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        saved = TrainConfig(**state["config"])
        # Only the budget may change on resume; everything that shapes the run comes from the saved state.
        saved.out, saved.minutes = cfg.out, cfg.minutes
        saved.stop_at = cfg.stop_at
        if cfg.steps is not None:
            saved.steps = cfg.steps
        cfg = saved
    elif state_path.exists():
        raise FileExistsError(f"{state_path} exists: pass --resume to continue that run, or choose a new --out")
    random.seed(cfg.seed)
    trainer = Trainer(cfg, device=device)
    if state is not None:
        trainer.load_state(state)
        if cfg.steps is not None:
            trainer.planned = cfg.steps
        print(f"resumed {cfg.out} at step {trainer.step} of {trainer.planned}", flush=True)
    print(f"model {trainer.model.num_params() / 1e6:.2f}M parameters, objective {objective_name(cfg)}", flush=True)
    return trainer.run()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m generation.mmdit.train", description=__doc__.split("\n\n")[0])
    defaults = TrainConfig(out="")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--device", default="cpu")
    p.add_argument("--objective", choices=["rf", "eps"], default=defaults.objective)
    p.add_argument("--t-sampling", choices=["logit_normal", "uniform", "mode", "cosmap"], default=defaults.t_sampling)
    p.add_argument("--schedule", choices=["linear", "cos"], default=defaults.schedule, help="eps noise schedule")
    p.add_argument("--kinds", type=parse_kinds, default=defaults.kinds, help="e.g. shape=1,position=0.25,word=0.25")
    for f in fields(TrainConfig):
        if f.name in ("out", "objective", "t_sampling", "schedule", "kinds", "bf16"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = {"int | None": int, "float | None": float, "str | None": str}.get(str(f.type), None)
        kind = kind or {"int": int, "float": float, "str": str}[str(f.type)]
        p.add_argument(flag, type=kind, default=getattr(defaults, f.name))
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    p.add_argument("--export", metavar="SRC", help="do not train: copy checkpoint SRC to --out in --export-dtype")
    p.add_argument("--export-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    return p


def export_checkpoint(source: str | Path, out: str | Path, dtype: str = "float16") -> Path:
    """Copy the (EMA) checkpoint in `source` to `out` with its weights stored in `dtype` (buffers such as the
    position table stay float32), for committing small demo checkpoints. The recipe gains "exported_from"
    and "stored_dtype"; load_mmdit / InHousePipeline cast back to float32 when loading."""
    model, meta = load_mmdit(source)
    target = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(target)
    recipe = {**meta["recipe"], "exported_from": str(source), "stored_dtype": dtype}
    return save_checkpoint(model, recipe, out)


def main(argv: list[str] | None = None) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a training process never reaches a model hub
    args = vars(build_parser().parse_args(argv))
    resume, device = args.pop("resume"), args.pop("device")
    export, export_dtype = args.pop("export"), args.pop("export_dtype")
    if export:
        path = export_checkpoint(export, args["out"], export_dtype)
        print(f"exported {export} to {path} ({export_dtype})")
        return path
    cfg = TrainConfig(**args)
    print("command: python -m generation.mmdit.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(json.dumps(asdict(cfg)), flush=True)
    return train(cfg, resume=resume, device=device)


if __name__ == "__main__":
    main()
