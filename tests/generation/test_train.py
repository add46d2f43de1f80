"""The training command: a few steps of a tiny model write a checkpoint, resume continues identically."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from generation.mmdit.checkpoint import load_mmdit
from generation.mmdit.train import STATE_FILE, TrainConfig, main, train
from generation.text import save_tiny_text_encoder


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return save_tiny_text_encoder(tmp_path_factory.mktemp("text") / "clip", "clip")


def tiny(out, text_encoder, **kw) -> TrainConfig:
    base = dict(
        out=str(out),
        steps=4,
        depth=2,
        width=32,
        heads=2,
        patch=4,
        batch_size=4,
        warmup_steps=2,
        text_encoder=text_encoder,
        threads=1,
        log_every=2,
        save_every=2,
    )
    return TrainConfig(**{**base, **kw})


def test_a_few_steps_write_an_ema_checkpoint_with_the_full_recipe(tmp_path, tiny_text):
    out = train(tiny(tmp_path / "run", tiny_text))
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", STATE_FILE}
    model, meta = load_mmdit(out)
    recipe = meta["recipe"]
    assert recipe["objective"] == "rf/lognorm(0.00,1.00)" and recipe["t_sampling"] == "logit_normal"
    assert recipe["steps_done"] == 4 and recipe["seed"] == 0 and recipe["text_encoder"] == tiny_text
    assert recipe["batch_size"] == 4 and recipe["lr"] == 2e-3 and recipe["resolution"] == [32, 32]
    assert recipe["weights"] == "ema" and recipe["software"]["torch"] == torch.__version__
    assert model.config.in_channels == 3 and model.config.depth == 2
    state = torch.load(out / STATE_FILE, weights_only=False)
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in state["ema"].items())  # the checkpoint holds the EMA
    assert any(not torch.equal(state["ema"][k], v) for k, v in state["model"].items())


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, tiny_text):
    straight = train(tiny(tmp_path / "straight", tiny_text, steps=4))
    train(tiny(tmp_path / "split", tiny_text, steps=4, stop_at=2))
    first = torch.load(tmp_path / "split" / STATE_FILE, weights_only=False)
    assert first["step"] == 2
    train(tiny(tmp_path / "split", tiny_text, steps=4), resume=True)
    a = torch.load(straight / STATE_FILE, weights_only=False)
    b = torch.load(tmp_path / "split" / STATE_FILE, weights_only=False)
    assert a["step"] == b["step"] == 4
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert torch.equal(a["generator"], b["generator"])


def test_data_workers_give_the_same_run_for_any_count_and_across_a_resume(tmp_path, tiny_text):
    """--data-workers draws step s's batch from (seed, s): one worker, and two workers in a run stopped and
    resumed, train the same weights; the in-process stream (0) is a different run."""
    one = train(tiny(tmp_path / "one", tiny_text, data_workers=1))
    train(tiny(tmp_path / "split", tiny_text, data_workers=2, stop_at=2))
    train(tiny(tmp_path / "split", tiny_text, data_workers=2), resume=True)
    local = train(tiny(tmp_path / "local", tiny_text))
    a = torch.load(one / STATE_FILE, weights_only=False)
    b = torch.load(tmp_path / "split" / STATE_FILE, weights_only=False)
    c = torch.load(local / STATE_FILE, weights_only=False)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert any(not torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
    assert json.loads((one / "config.json").read_text())["recipe"]["train_config"]["data_workers"] == 1


def test_resume_needs_a_state_and_a_fresh_run_refuses_to_overwrite_one(tmp_path, tiny_text):
    with pytest.raises(FileNotFoundError, match="train_state.pt"):
        train(tiny(tmp_path / "none", tiny_text), resume=True)
    train(tiny(tmp_path / "run", tiny_text, steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(tmp_path / "run", tiny_text, steps=1))


def test_command_line_trains_the_eps_ablation_with_snapshots(tmp_path, tiny_text, capsys):
    out = tmp_path / "eps"
    main(
        [
            "--out",
            str(out),
            "--objective",
            "eps",
            "--schedule",
            "linear",
            "--steps",
            "2",
            "--depth",
            "2",
            "--width",
            "32",
            "--heads",
            "2",
            "--batch-size",
            "2",
            "--text-encoder",
            tiny_text,
            "--threads",
            "1",
            "--snapshot-every",
            "1",
            "--kinds",
            "shape=1,word=1",
            "--no-bf16",
        ]
    )
    meta = json.loads((out / "config.json").read_text())
    assert meta["recipe"]["objective"] == "eps/linear" and meta["recipe"]["bf16_autocast"] is False
    assert meta["recipe"]["data"]["kinds"] == {"shape": 1.0, "word": 1.0}
    assert (out / "step-000001" / "model.safetensors").is_file() and (out / "step-000002").is_dir()
    assert "saved" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--kinds", "circles=1"])


def test_minutes_budget_fixes_a_plan_and_stops(tmp_path, tiny_text):
    out = train(tiny(tmp_path / "timed", tiny_text, steps=None, minutes=0.05, calibration_start=1, calibration_steps=3))
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert recipe["planned_steps"] >= recipe["steps_done"] >= 1
    assert recipe["elapsed_seconds"] < 30


def test_export_stores_half_precision_weights_that_load_back_as_float32(tmp_path, tiny_text):
    src = train(tiny(tmp_path / "run", tiny_text, steps=1))
    out = main(["--export", str(src), "--out", str(tmp_path / "small")])
    stored = load_file(str(out / "model.safetensors"))
    assert stored["final_layer.linear.weight"].dtype == torch.float16
    assert stored["patch_embed.pos_embed"].dtype == torch.float32  # buffers keep full precision
    model, meta = load_mmdit(out, dtype=torch.float32)
    assert meta["recipe"]["stored_dtype"] == "float16" and meta["recipe"]["steps_done"] == 1
    original, _ = load_mmdit(src)
    for (name, a), b in zip(original.state_dict().items(), model.state_dict().values(), strict=True):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3), name
    assert (out / "model.safetensors").stat().st_size < (src / "model.safetensors").stat().st_size
