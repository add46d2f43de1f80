"""What every trainer in generation/ shares (generation.mmdit.train, generation.unet.train,
generation.dual_encoder.train): the learning-rate schedule, the EMA of the weights, CPU threads, the time
budget, prompt-kind weights on the command line and the software-versions record.

Learning rate: a linear warm-up (step s of warmup_steps gets lr * (s + 1) / warmup_steps), then a half cosine
from lr down to lr * min_lr_ratio at the planned last step (`lr_at`). The dual encoder, which trains for a
time budget without a planned number of steps, runs the same cosine over the fraction of its budget used and
multiplies it by the warm-up ramp (`lr_over_budget`).

Time budget: `TimeBudget` counts seconds on a clock (the wall clock, or this process's CPU time, which a busy
shared machine does not eat into) and turns a measured speed into a plan: the step at which the budget runs
out, which fixes the cosine's end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn

from generation import demo_domain


class ScheduleConfig(Protocol):
    """The fields of a training config that shape its learning rate."""

    lr: float  # peak learning rate
    warmup_steps: int  # linear warm-up steps
    min_lr_ratio: float  # the cosine ends at lr * min_lr_ratio


def cosine_factor(progress: float, min_lr_ratio: float) -> float:
    """1 at progress 0, along a half cosine down to min_lr_ratio at progress 1."""
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, planned: int, cfg: ScheduleConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) of a run planned to end at step `planned`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, planned - cfg.warmup_steps))
    return cfg.lr * cosine_factor(progress, cfg.min_lr_ratio)


def lr_over_budget(step: int, fraction: float, cfg: ScheduleConfig) -> float:
    """Learning rate when a run has no planned last step: the warm-up ramp times the cosine over `fraction`,
    the share of the time budget used so far (0..1)."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * cosine_factor(fraction, cfg.min_lr_ratio)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def ema_update_(ema: nn.Module, model: nn.Module, step: int, max_decay: float) -> None:
    """ema <- ema + (1 - d) (model - ema) after optimizer step `step` (0-based), d = min(max_decay, (1 + step) /
    (10 + step)): a short memory while the weights still move fast, max_decay later. One multi-tensor kernel."""
    decay = min(max_decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def setup_threads(threads: int) -> None:
    """Flush denormals (without it CPU training slows about 3x once weights get tiny) and use `threads` torch CPU
    threads; 0 leaves the number as it is (a trainer given 0 calls `adapt_threads` as it goes)."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def adapt_threads() -> None:
    """Use every core on an idle machine, one thread when other processes keep the cores busy."""
    cores = os.cpu_count() or 1
    others = os.getloadavg()[0] - torch.get_num_threads()
    want = cores if others < 0.75 else 1
    if want != torch.get_num_threads():
        torch.set_num_threads(want)
        print(f"load {os.getloadavg()[0]:.1f}: using {want} thread(s)", flush=True)


class TimeBudget:
    """`minutes` on a clock (time.time: wall clock; time.process_time: this process's CPU time), counted from
    now minus `used` seconds (a resumed run brings the time it already spent). minutes None: no limit."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.time, used: float = 0.0):
        self.seconds = None if minutes is None else minutes * 60
        self.clock = clock
        self.start = clock() - used

    def used(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        if self.seconds is None:
            raise ValueError("a budget without a limit has no time left to plan with")
        return self.seconds - self.used()

    def spent(self) -> bool:
        return self.seconds is not None and self.used() >= self.seconds

    def fraction(self) -> float:
        """The share of the budget used, 0..1 (1 for an empty budget)."""
        if self.seconds is None:
            raise ValueError("a budget without a limit has no fraction used")
        return min(self.used() / self.seconds, 1.0) if self.seconds > 0 else 1.0

    def plan(self, step: int, rate: float) -> int:
        """The step at which the budget runs out when training goes on at `rate` steps per second."""
        return step + int(rate * self.left())


def parse_kinds(text: str) -> dict[str, float]:
    """'shape=1,position=0.5' -> {'shape': 1.0, 'position': 0.5}: demo prompt kinds and their weights (--kinds)."""
    out = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        if not sep or name.strip() not in demo_domain.KINDS:
            raise argparse.ArgumentTypeError(f"--kinds takes kind=weight pairs of {demo_domain.KINDS}, got {text!r}")
        out[name.strip()] = float(weight)
    return out


def software_versions() -> dict:
    """The software a checkpoint (or an image) was made with, recorded beside it. Read from the installed
    packages' metadata, so recording it imports nothing; a package that is not installed is recorded as None
    (a GPU machine that trains in pixel space needs no diffusers)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "transformers": installed("transformers"),
        "diffusers": installed("diffusers"),
        "machine": platform.machine(),
    }
