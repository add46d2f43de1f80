"""The MM-DiT benchmarks in bench/ end to end at a tiny size on the CPU, and the analytic FLOP formula they share
(generation.mmdit.benchmarking). The scripts are imported as modules of the repository's bench/ folder (pytest
puts the repository root on the path); one is also run as its command line."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from generation.mmdit import benchmarking
from generation.mmdit.model import MMDiT, MMDiTConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("bench.mmdit_forward")


@pytest.mark.parametrize("depth, side, tokens", [(2, 16, 7), (3, 12, 5)])
def test_analytic_flops_match_torch_flop_counter(depth, side, tokens):
    cfg = MMDiTConfig(
        in_channels=4,
        sample_size=16,
        patch_size=2,
        depth=depth,
        hidden_size=64,
        num_heads=2,
        text_dim=32,
        pooled_dim=16,
    )
    model = MMDiT(cfg).eval()
    x, t = torch.randn(2, 4, side, side), torch.rand(2)
    context, pooled = torch.randn(2, tokens, 32), torch.randn(2, 16)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, context, pooled)
    assert benchmarking.forward_flops(cfg, 2, side, side, tokens) == counter.get_total_flops()


def test_sd3_medium_size_matches_the_published_parameter_count():
    cfg = benchmarking.sd3_medium_config()
    with torch.device("meta"):
        model = MMDiT(cfg)
    # SD3-medium's MM-DiT has 2.03B parameters
    assert 2.0e9 < model.num_params() < 2.1e9
    # dominant terms: 2 x 12 D^2 weights per token and layer (qkv, out, MLP) + attention 4 L D per layer
    D, L = cfg.hidden_size, 4096 + 333
    per_token = benchmarking.forward_flops(cfg, 2, 128, 128, 333) / (2 * L)
    assert per_token == pytest.approx(cfg.depth * (24 * D * D + 4 * L * D), rel=0.02)


def test_cpu_run_times_both_models_and_reports_ratios(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--batch-sizes",
            "2",
            "--no-compile",
            "--threads",
            "1",
            "--rounds",
            "2",
            "--json",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["rows"] == result["rows"]
    rows = {r["impl"]: r for r in result["rows"]}
    assert set(rows) == {"diffusers eager [torch]", "in-house eager [torch]"}
    assert all(r["ms"] > 0 and r["tflops"] > 0 and len(r["round_ms"]) == 2 for r in rows.values())
    assert result["max_diff_batch_2_torch"] < 1e-4  # same weights, same output
    ours, theirs = rows["in-house eager [torch]"], rows["diffusers eager [torch]"]
    assert ours["speedup_vs_diffusers"] == pytest.approx(theirs["ms"] / ours["ms"])
    assert ours["speedup_vs_diffusers_torch"] == ours["speedup_vs_diffusers"]
    assert "vs diffusers, same kernels" in capsys.readouterr().out


@pytest.mark.parametrize("scope", ["full", "blocks"])
def test_in_house_model_compiles_without_graph_breaks(bench, scope):
    result = bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "--skip-diffusers",
            "--compile-scope",
            scope,
            "--compile-backend",
            "eager",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ]
    )
    assert [r["impl"] for r in result["rows"]] == ["in-house compiled [torch]", "in-house eager [torch]"]


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_modes_are_refused_block_by_block(bench, mode, capsys):
    # block by block, the alike blocks would share one graph's output buffers (on the H200 this failed with
    # "accessing tensor output of CUDAGraphs that has been overwritten"); the bench says why before building models
    with pytest.raises(SystemExit) as stop:
        bench.main(["--tiny", "--device", "cpu", "--compile-mode", mode])
    assert stop.value.code == 2
    assert "--compile-scope full" in capsys.readouterr().err
    assert not bench.uses_cuda_graphs("max-autotune-no-cudagraphs")


def test_attention_variants_time_both_models_under_each_kernel_order(bench):
    result = bench.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "--no-compile",
            "--threads",
            "1",
            "--attention",
            "torch",
            "flash",
        ]
    )
    assert sorted(r["impl"] for r in result["rows"]) == [
        "diffusers eager [flash]",
        "diffusers eager [torch]",
        "in-house eager [flash]",
        "in-house eager [torch]",
    ]
    assert result["max_diff_batch_1_flash"] < 1e-4
    flash = next(r for r in result["rows"] if r["impl"] == "in-house eager [flash]")
    assert flash["speedup_vs_diffusers_torch"] != flash["speedup_vs_diffusers"]  # two different baselines


def test_sdpa_layout_bench_times_both_layouts_with_the_same_values(tmp_path):
    module = importlib.import_module("bench.sdpa_layout")
    rows = module.main(
        [
            "--device",
            "cpu",
            "--batch",
            "1",
            "--heads",
            "2",
            "--tokens",
            "40",
            "--iters",
            "2",
            "--json",
            str(tmp_path / "sdpa.json"),
        ]
    )
    assert {(r["layout"], r["kernel"]) for r in rows} == {
        (layout, kernel) for layout in ("heads-major", "tokens-major") for kernel in ("torch", "flash", "math")
    }
    assert all(r["ms"] > 0 and r["max_diff_vs_first"] < 1e-5 for r in rows)
    assert all(r["torch_picks"] for r in rows if r["kernel"] == "torch")
    assert json.loads((tmp_path / "sdpa.json").read_text())["rows"] == rows


def test_kernel_profile_compares_both_models_by_kind(tmp_path, capsys):
    module = importlib.import_module("bench.mmdit_kernels")
    result = module.main(
        ["--tiny", "--device", "cpu", "--no-compile", "--forwards", "1", "--json", str(tmp_path / "kernels.json")]
    )
    for name in ("diffusers", "in-house"):
        model = result["models"][name]
        assert model["groups"]["matmul"] > 0 and model["total_us"] == pytest.approx(sum(model["groups"].values()))
    assert "in-house - diffusers" in capsys.readouterr().out
    assert module.group_of("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert module.group_of("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert module.group_of("triton_per_fused_add_cat_mean_mul_pow_rsqrt_0") == "triton (fused pointwise / norm)"


def test_attention_variants_compute_the_same_function_and_restore_the_model(tmp_path):
    from generation.mmdit import model as mmdit

    module = importlib.import_module("bench.mmdit_attention_variants")
    before = (mmdit.JointAttention.forward, mmdit.RMSNorm.forward)
    result = module.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--compile-backend",
            "eager",
            "--rounds",
            "1",
            "--iters",
            "1",
            "--json",
            str(tmp_path / "variants.json"),
        ]
    )
    assert [r["impl"] for r in result["rows"]] == [
        "diffusers",
        "current",
        "heads-major",
        "manual-rms",
        "both",
        "diffusers",
    ]
    assert all(r["max_diff_vs_current"] < 1e-5 for r in result["rows"][2:5])
    assert (mmdit.JointAttention.forward, mmdit.RMSNorm.forward) == before


def test_a_bench_script_runs_as_its_own_command(tmp_path):
    """`.venv/bin/python bench/X.py`, as the README runs them: the scripts import generation/ like any module."""
    out = tmp_path / "sdpa.json"
    args = ["--device", "cpu", "--batch", "1", "--heads", "2", "--tokens", "16", "--iters", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sdpa_layout.py"), *args],
        cwd=tmp_path,  # not the repository: nothing may rely on the working directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert {row["layout"] for row in json.loads(out.read_text())["rows"]} == {"heads-major", "tokens-major"}
