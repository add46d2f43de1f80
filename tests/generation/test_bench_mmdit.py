"""bench/mmdit_forward.py end to end at a tiny size on the CPU, and its FLOP formula."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from generation.mmdit import MMDiT, MMDiTConfig

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mmdit_forward.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mmdit_forward_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("depth, side, tokens", [(2, 16, 7), (3, 12, 5)])
def test_analytic_flops_match_torch_flop_counter(bench, depth, side, tokens):
    cfg = MMDiTConfig(in_channels=4, sample_size=16, patch_size=2, depth=depth, hidden_size=64, num_heads=2,
                      text_dim=32, pooled_dim=16)
    model = MMDiT(cfg).eval()
    x, t = torch.randn(2, 4, side, side), torch.rand(2)
    context, pooled = torch.randn(2, tokens, 32), torch.randn(2, 16)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, context, pooled)
    assert bench.forward_flops(cfg, 2, side, side, tokens) == counter.get_total_flops()


def test_sd3_medium_size_matches_the_published_parameter_count(bench):
    cfg = bench.sd3_medium_config()
    with torch.device("meta"):
        model = MMDiT(cfg)
    # SD3-medium's MM-DiT has 2.03B parameters
    assert 2.0e9 < model.num_params() < 2.1e9
    # dominant terms: 2 x 12 D^2 weights per token and layer (qkv, out, MLP) + attention 4 L D per layer
    D, L = cfg.hidden_size, 4096 + 333
    per_token = bench.forward_flops(cfg, 2, 128, 128, 333) / (2 * L)
    assert per_token == pytest.approx(cfg.depth * (24 * D * D + 4 * L * D), rel=0.02)


def test_cpu_run_times_both_models_and_reports_ratios(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = bench.main(["--tiny", "--device", "cpu", "--batch-sizes", "2", "--no-compile", "--threads", "1",
                         "--json", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    rows = {r["impl"]: r for r in result["rows"]}
    assert set(rows) == {"diffusers eager", "in-house eager"}
    assert all(r["ms"] > 0 and r["tflops"] > 0 for r in rows.values())
    assert result["max_diff_batch_2"] < 1e-4  # same weights, same output
    assert rows["in-house eager"]["speedup_vs_diffusers"] == pytest.approx(
        rows["diffusers eager"]["ms"] / rows["in-house eager"]["ms"])
    assert "speed-up vs diffusers" in capsys.readouterr().out


@pytest.mark.parametrize("scope", ["full", "blocks"])
def test_in_house_model_compiles_without_graph_breaks(bench, scope):
    result = bench.main(["--tiny", "--device", "cpu", "--batch-sizes", "1", "--skip-diffusers", "--compile-scope",
                         scope, "--compile-backend", "eager", "--iters", "1", "--warmup", "0", "--threads", "1"])
    assert [r["impl"] for r in result["rows"]] == ["in-house compiled", "in-house eager"]
