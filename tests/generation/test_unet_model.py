"""The UNet baseline's input skip (eps = sqrt(1 - abar_n) x + UNet(...)) and the checkpoints written without it."""

from __future__ import annotations

import json

import pytest
import torch

from generation.unet.checkpoint import load_unet_baseline, save_checkpoint
from generation.unet.model import UNetBaseline, UNetBaselineConfig
from tests.support import TINY_UNET, tiny_unet_checkpoint


def inputs(config: UNetBaselineConfig, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = config.sample_size
    x = torch.randn(batch, 3, size, size, generator=g)
    n = torch.tensor([0, 500, 999][:batch])
    context = torch.randn(batch, 4, config.text_dim, generator=g)
    pooled = torch.randn(batch, config.pooled_dim, generator=g)
    return x, n, context, pooled


def test_the_skip_adds_exactly_sqrt_one_minus_abar_times_the_input():
    torch.manual_seed(0)
    plain = UNetBaseline(UNetBaselineConfig(**TINY_UNET))
    skip = UNetBaseline(UNetBaselineConfig(**TINY_UNET, input_skip=True))
    skip.load_state_dict(plain.state_dict())  # the same weights: the skip adds no parameter
    x, n, context, pooled = inputs(plain.config)
    abar = plain.config.objective().alphas_cumprod[n].float()
    with torch.no_grad():
        difference = skip(x, n, context, pooled) - plain(x, n, context, pooled)
    torch.testing.assert_close(difference, (1 - abar).sqrt().view(-1, 1, 1, 1) * x)
    assert "skip_scale" not in skip.state_dict()  # derived from the schedule, never stored


def test_at_the_highest_noise_the_skip_alone_is_nearly_the_right_noise():
    """x_n = sqrt(abar) x0 + sqrt(1 - abar) eps with abar ~ 0.005 at n = 999: the skip's guess is already close."""
    torch.manual_seed(1)
    config = UNetBaselineConfig(**TINY_UNET, input_skip=True)
    objective = config.objective()
    x0, eps = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 3, 16, 16)
    abar = objective.alphas_cumprod[999].float()
    x = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    guess = UNetBaseline(config).skip_scale[999] * x
    assert ((guess - eps) ** 2).mean() < 0.02 * (eps**2).mean()


def test_checkpoints_written_before_the_option_load_as_plain_unets(tmp_path):
    path = tiny_unet_checkpoint(tmp_path / "old")
    meta = json.loads((path / "config.json").read_text())
    meta["config"].pop("input_skip")  # as written before the option existed
    (path / "config.json").write_text(json.dumps(meta))
    model, _ = load_unet_baseline(path)
    assert model.config.input_skip is False


def test_a_checkpoint_with_the_skip_round_trips(tmp_path):
    torch.manual_seed(2)
    model = UNetBaseline(UNetBaselineConfig(**TINY_UNET, input_skip=True)).eval()
    path = save_checkpoint(model, {"text_encoder": "minilm", "trained_by": "tests"}, tmp_path / "skip")
    loaded, _ = load_unet_baseline(path)
    assert loaded.config.input_skip is True
    x, n, context, pooled = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, n, context, pooled), model(x, n, context, pooled))


def test_the_trainer_writes_the_skip_and_the_recommended_guidance_into_the_checkpoint(tmp_path):
    from generation.unet.train import main

    out = tmp_path / "trained"
    main(["--out", str(out), "--steps", "2", "--batch-size", "2", "--widths", "32,64", "--threads", "1",
          "--input-skip", "--guidance-scale", "1.5"])  # fmt: skip
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["input_skip"] is True
    assert meta["recipe"]["sampler_defaults"] == {"steps": 28, "guidance_scale": 1.5, "scheduler": "ddim"}
    model, _ = load_unet_baseline(out)
    assert model.config.input_skip is True


def test_the_snr_weighting_raises_the_noisiest_steps_and_keeps_the_mean_at_one():
    from generation.unet.train import loss_weights

    abar = UNetBaselineConfig(**TINY_UNET).objective().alphas_cumprod.float()
    assert loss_weights(abar, "eps", 20.0) is None
    w = loss_weights(abar, "snr+1", 20.0)
    torch.testing.assert_close(w.mean(), torch.tensor(1.0))
    assert torch.all(w[1:] >= w[:-1])  # noisier steps never weigh less
    assert w[999] / w[0] > 19.0  # clipped at 20 x the cleanest step's weight (1 + 1/SNR_0 ~ 1)
    assert w[999] == w.max() and torch.isclose(w[999], w[990])  # the clip flattens the last steps


def test_a_weighted_loss_trains_and_is_recorded(tmp_path):
    from generation.unet.train import main

    out = tmp_path / "weighted"
    main(["--out", str(out), "--steps", "2", "--batch-size", "2", "--widths", "32,64", "--threads", "1",
          "--input-skip", "--loss-weighting", "snr+1", "--max-loss-weight", "20"])  # fmt: skip
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert recipe["train_config"]["loss_weighting"] == "snr+1"
    assert recipe["loss_weighting"] == "snr+1, clipped at 20, mean 1"
    assert recipe["objective"] == "eps/linear (DDPM, scaled-linear betas)"  # the model still predicts eps


def test_stop_at_replays_a_stopped_run_with_the_longer_plans_learning_rates(tmp_path):
    """The committed checkpoint was stopped by a timeout at step 3,875 of a 5,000-step plan: --stop-at replays that
    (the same data and learning rates as the longer plan, then a save), and refuses a step outside the plan."""
    from generation.unet.train import main

    args = ["--batch-size", "2", "--widths", "32,64", "--threads", "1", "--warmup-steps", "1"]
    main(["--out", str(tmp_path / "cut"), "--steps", "6", "--stop-at", "3", *args])
    main(["--out", str(tmp_path / "full"), "--steps", "3", *args])
    cut = json.loads((tmp_path / "cut" / "config.json").read_text())["recipe"]
    assert (cut["steps_done"], cut["planned_steps"], cut["train_config"]["stop_at"]) == (3, 6, 3)
    # the same three batches, but the 6-step plan's cosine is still high at step 3: the weights differ
    cut_w, full_w = load_unet_baseline(tmp_path / "cut")[0], load_unet_baseline(tmp_path / "full")[0]
    assert any(not torch.equal(a, b) for a, b in zip(cut_w.parameters(), full_w.parameters(), strict=True))
    for bad in (["--stop-at", "3"], ["--steps", "6", "--stop-at", "7"], ["--steps", "6", "--stop-at", "0"]):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "bad"), *bad, *args])
    assert not (tmp_path / "bad").exists()


def test_a_terminated_training_run_saves_the_steps_it_did(tmp_path):
    """SIGTERM (a `timeout`, a scheduler ending a job) stops the run after its current step with a checkpoint,
    where it used to die with nothing newer than the last timed save."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "generation.unet.train", "--out", str(out), "--steps", "100000", "--batch-size", "2",
           "--widths", "32,64", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it trains
        if line.startswith("step 25 "):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest
    assert "stopped by SIGTERM" in rest
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert 25 <= recipe["steps_done"] < 100000 and recipe["planned_steps"] == 100000
    load_unet_baseline(out)
