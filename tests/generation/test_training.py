"""What the trainers share: the learning-rate schedule, the EMA, the time budget, --kinds and the versions record."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
import torch

from generation.training import (
    TimeBudget,
    ema_update_,
    lr_at,
    lr_over_budget,
    parse_kinds,
    set_lr,
    software_versions,
)


@dataclass
class Schedule:
    lr: float = 2e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.05


def test_warm_up_is_linear_and_reaches_the_peak_at_its_last_step():
    cfg = Schedule()
    assert [lr_at(s, 100, cfg) for s in range(3)] == pytest.approx([2e-4, 4e-4, 6e-4])
    assert lr_at(9, 100, cfg) == pytest.approx(2e-3)
    assert lr_at(10, 100, cfg) == 2e-3  # the cosine starts at the peak


def test_cosine_falls_monotonically_to_the_floor_at_the_planned_step_and_stays_there():
    cfg = Schedule()
    after = [lr_at(s, 100, cfg) for s in range(10, 101)]
    assert all(a > b for a, b in zip(after, after[1:], strict=False))
    assert lr_at(55, 100, cfg) == pytest.approx(2e-3 * (0.05 + 0.95 * 0.5))  # half way: the cosine's midpoint
    assert lr_at(100, 100, cfg) == pytest.approx(2e-3 * 0.05)
    assert lr_at(5000, 100, cfg) == lr_at(100, 100, cfg)


def test_the_budget_schedule_multiplies_the_warm_up_ramp_by_the_cosine_of_the_time_used():
    cfg = Schedule()
    assert lr_over_budget(0, 0.0, cfg) == pytest.approx(2e-4)  # warm-up, nothing used yet
    assert lr_over_budget(4, 0.5, cfg) == pytest.approx(2e-3 * 0.5 * (0.05 + 0.95 * 0.5))
    assert lr_over_budget(50, 1.0, cfg) == pytest.approx(2e-3 * 0.05)


def test_set_lr_sets_every_parameter_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=1.0)
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_ema_remembers_little_early_and_max_decay_later():
    ema, model = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
    ema_update_(ema, model, step=0, max_decay=0.999)  # decay min(0.999, 1/10): 90% of the way to the model
    assert torch.allclose(ema.weight, torch.full((1, 2), 0.9))
    with torch.no_grad():
        ema.weight.fill_(0.0)
    ema_update_(ema, model, step=10**6, max_decay=0.999)
    assert torch.allclose(ema.weight, torch.full((1, 2), 0.001))
    assert torch.equal(model.weight, torch.ones(1, 2))  # the model is left alone


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_budget_counts_on_its_clock_and_plans_the_last_step():
    clock = FakeClock()
    budget = TimeBudget(2.0, clock=clock, used=30.0)  # a resumed run that already spent 30 s
    assert budget.used() == 30.0 and budget.left() == 90.0 and not budget.spent()
    clock.now += 60
    assert budget.fraction() == pytest.approx(0.75)
    assert budget.plan(step=100, rate=2.0) == 100 + 60  # 30 s left at 2 steps/s
    clock.now += 30
    assert budget.spent() and budget.fraction() == 1.0
    unlimited = TimeBudget(None, clock=clock)
    clock.now += 10**6
    assert not unlimited.spent() and unlimited.used() == 10**6
    with pytest.raises(ValueError):
        unlimited.left()
    assert TimeBudget(0.0, clock=clock).fraction() == 1.0


def test_kinds_parse_into_weights_and_unknown_kinds_are_refused():
    assert parse_kinds("shape=1,position=0.5") == {"shape": 1.0, "position": 0.5}
    for bad in ("circles=1", "shape", "shape=1,word"):
        with pytest.raises(argparse.ArgumentTypeError, match="--kinds"):
            parse_kinds(bad)


def test_software_versions_name_the_stack():
    versions = software_versions()
    assert versions["torch"] == torch.__version__
    assert {"python", "numpy", "transformers", "diffusers", "machine"} <= set(versions)
