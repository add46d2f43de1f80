"""bench/diffusers_throughput.py at its tiny size on the CPU: the pipelines it builds are the real diffusers
classes, each mode runs through the worker's backend code path, and a compiled mode makes the eager images."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("bench.diffusers_throughput")


def test_modes_are_parsed_into_checked_runtime_options(bench):
    mode = bench.Mode.parse("fp16+compile=max-autotune+fullgraph+cl")
    assert mode.options == {"precision": "fp16", "compile": "max-autotune", "fullgraph": True, "channels_last": True}
    assert bench.Mode.parse("bf16+compile").options == {"precision": "bf16", "compile": "default"}
    with pytest.raises(SystemExit, match="unknown part 'fast'"):
        bench.Mode.parse("fp16+fast")
    with pytest.raises(SystemExit, match="precision must be one of"):
        bench.Mode.parse("fp8")
    with pytest.raises(SystemExit, match="fullgraph needs a compile mode"):
        bench.Mode.parse("fp16+fullgraph")


def test_the_real_size_configurations_are_sd15_and_sd3_medium(bench):
    """The configurations alone (no weights: built on the meta device), against the published parameter counts."""
    import torch

    with torch.device("meta"):
        sd15, side15 = bench.build_sd15()
        sd3, side3 = bench.build_sd3()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert (side15, side3) == (512, 1024)
    assert 855e6 < count(sd15.unet) < 865e6  # SD 1.5's UNet: 859.5M
    assert 2.0e9 < count(sd3.transformer) < 2.1e9  # SD3-medium's MMDiT: 2.03B
    assert sd3.text_encoder_3 is None and count(sd3.text_encoder_2) > 690e6  # OpenCLIP bigG's text tower: 695M


def test_the_bench_runs_eager_and_compiled_modes_with_the_same_images(bench, capsys):
    rows = bench.main(
        [
            "--tiny",
            "--device=cpu",
            "--steps=2",
            "--batch=2",
            "--repeats=1",
            "--pipelines=sd3",
            "--modes=fp32,bf16,fp32+compile+fullgraph",
        ]
    )
    assert [r.mode.label for r in rows] == ["fp32", "bf16", "fp32+compile+fullgraph"]
    assert all(r.median > 0 and len(r.images_per_s) == 1 for r in rows)
    eager, half, compiled = rows
    assert abs(compiled.pixels - eager.pixels).mean() < 0.5  # the compiled graph computes the eager model
    assert abs(half.pixels - eager.pixels).mean() < 6.0  # bf16: the same images up to its rounding
    out = capsys.readouterr().out
    assert "| sd3 | fp32+compile+fullgraph |" in out and "(fp32) |" in out


def test_task_overhead_runs_a_saved_diffusers_pipeline_with_runtime_options(tmp_path):
    """bench/task_overhead.py as its command line, with a pipeline of this bench saved to disk and a model whose
    runtime options cap the batch: the real worker makes every image, and both rates are printed."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    options = '{"precision": "fp32", "batch_size": 1}'
    done = subprocess.run(
        [sys.executable, "bench/task_overhead.py", "--pipeline=sd15", "--tiny", "--images=4", "--batch=2"]
        + ["--repeats=1", "--steps=2", f"--options={options}"],
        cwd=repo,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model: sd15 pipeline, random weights (diffusers" in done.stdout
    assert '"batch_size": 1' in done.stdout and "ratio task/direct" in done.stdout
