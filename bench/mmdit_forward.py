"""Forward time of the in-house MM-DiT against diffusers' SD3Transformer2DModel with the same weights.

    .venv/bin/python bench/mmdit_forward.py                      # SD3-medium size on CUDA, bf16, batch 2 and 8
    .venv/bin/python bench/mmdit_forward.py --tiny --device cpu  # a tiny size on the CPU (what the test runs)

SD3-medium size (the default): depth 24 (width 1536, 24 heads of 64), a 1024x1024 image = 128x128x16 latent,
patch 2 -> 4096 image tokens, 333 text tokens of width 4096 (77 CLIP + 256 T5), pooled width 2048, bf16.
Both models get the same (random) weights through `to_diffusers`; every row is timed in the same run, in
--rounds interleaved rounds (diffusers, in-house, diffusers, ...), each the median of --iters calls after
warm-up (CUDA events on the GPU, perf_counter on the CPU); a row reports the median over rounds and their
spread. Compiled rows use torch.compile (in-house with fullgraph=True; by default block by block, so the 23
alike blocks share one compiled graph) and report their first-call (compile) time separately. --attention
times both models under other attention-kernel orders too (default: torch's own). The measured bf16 matmul
ceiling is printed, and each row's TFLOP/s as a fraction of it. A GPU run takes about 2 minutes, mostly
compilation (four graphs per model: two block kinds x two batch sizes); --no-compile gives the eager rows only.
Figures measured on an H200: docs/mmdit-gpu-benchmark.md.

FLOPs are counted analytically (generation.mmdit.benchmarking.forward_flops, which also holds what the other
MM-DiT benchmarks share with this one); the same count (the useful work) is used for the diffusers rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from functools import partial

import torch

from generation.mmdit.benchmarking import (
    ATTENTION,
    attention_variant,
    build_models,
    call_diffusers,
    call_in_house,
    compile_model,
    forward_flops,
    make_inputs,
    matmul_peak_tflops,
    sd3_medium_config,
    timer,
    tiny_config,
)
from generation.mmdit.model import MMDiTConfig


def main(argv: list[str] | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a benchmark never reaches a model hub
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model and image (for a CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--dtype", default=None, choices=["bf16", "fp16", "fp32"], help="default bf16 on CUDA, fp32 on the CPU"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 2 8 (tiny: 1 2)")
    parser.add_argument("--image-size", type=int, default=None, help="latent side; default 128 (tiny: 16)")
    parser.add_argument("--text-tokens", type=int, default=None, help="default 333 (tiny: 7)")
    parser.add_argument("--warmup", type=int, default=None, help="default 3 (tiny: 1)")
    parser.add_argument("--iters", type=int, default=None, help="default 10 (tiny: 3)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds; default 3 (tiny: 1)")
    parser.add_argument(
        "--attention",
        nargs="+",
        choices=sorted(ATTENTION),
        default=None,
        help="attention kernel orders to time, each for both models (default: torch's own order)",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (tests: eager)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument(
        "--compile-scope",
        default="blocks",
        choices=["blocks", "full"],
        help="compile each transformer block (one compile serves all alike blocks: minutes less "
        "than the whole model) or the whole model",
    )
    parser.add_argument("--skip-diffusers", action="store_true", help="time the in-house model only")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args(argv)
    if args.compile_scope == "blocks" and uses_cuda_graphs(args.compile_mode) and not args.no_compile:
        # one compiled block serves all alike blocks, so they would share the graph's static output buffers: each
        # block's call overwrites the residual the next block still reads (measured on the H200, 2026-12-04)
        parser.error(f"--compile-mode {args.compile_mode} records CUDA graphs: use it with --compile-scope full")
    from diffusers.utils import logging as diffusers_logging

    threads_before, verbosity_before = torch.get_num_threads(), diffusers_logging.get_verbosity()
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # its warning about casting a freshly built model with .to()
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads_before)
        diffusers_logging.set_verbosity(verbosity_before)


def uses_cuda_graphs(mode: str | None) -> bool:
    """Whether a torch.compile mode records CUDA graphs (reduce-overhead and max-autotune do, unless told not to)."""
    return mode in ("reduce-overhead", "max-autotune")


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available here; run with --tiny --device cpu for a smoke run")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    cfg = tiny_config() if args.tiny else sd3_medium_config()
    batch_sizes = args.batch_sizes or ([1, 2] if args.tiny else [2, 8])
    side = args.image_size or (16 if args.tiny else 128)
    text_tokens = args.text_tokens or (7 if args.tiny else 333)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    iters = args.iters or (3 if args.tiny else 10)
    rounds = args.rounds or (1 if args.tiny else 3)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    ours, theirs = build_models(cfg, device, dtype, with_diffusers=not args.skip_diffusers)  # same weights
    measure = timer(device, warmup, iters)

    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "config": cfg.to_dict(),
        "image_tokens": (side // cfg.patch_size) ** 2,
        "text_tokens": text_tokens,
        "params_in_house": ours.num_params(),
        "params_diffusers": None if theirs is None else sum(p.numel() for p in theirs.parameters()),
    }
    print(
        f"device {info['device']}, torch {info['torch']}, {info['dtype']}; depth {cfg.depth}, width "
        f"{cfg.hidden_size}, {cfg.num_heads} heads; {info['image_tokens']} image + {text_tokens} text tokens; "
        f"params in-house {info['params_in_house'] / 1e6:.1f}M, diffusers "
        f"{(info['params_diffusers'] or 0) / 1e6:.1f}M"
    )

    models = {"in-house": (ours, call_in_house)}
    if theirs is not None:
        models = {"diffusers": (theirs, partial(call_diffusers, timestep_scale=cfg.timestep_scale)), **models}
    inputs = {batch: make_inputs(cfg, batch, side, text_tokens, device, dtype) for batch in batch_sizes}
    variants = args.attention or ["torch"]
    info.update(
        attention_variants={v: [b.name for b in ATTENTION[v] or ()] or "torch's order" for v in variants}, rounds=rounds
    )
    if device.type == "cuda":
        info["matmul_peak_tflops"] = matmul_peak_tflops(device, dtype)
        print(
            f"measured {info['dtype']} matmul ceiling (8192^3, random data): {info['matmul_peak_tflops']:.0f} TFLOP/s"
        )
    samples: dict[tuple, dict] = {}  # (batch, model, mode, variant) -> {"first": ms, "medians": [ms per round]}

    def save_partial():
        if args.json:  # what is measured so far, so that a run cut short still leaves its numbers
            with open(args.json, "w") as f:
                json.dump({**info, "rows": table(samples, cfg, side, text_tokens), "complete": False}, f, indent=2)

    def time_all(mode: str, variant: str):
        for r in range(rounds):  # interleaved rounds: drift of clocks or temperature hits both models alike
            for batch in batch_sizes:
                for name, (model, call) in models.items():
                    with attention_variant(variant):
                        first_ms, ms = measure(partial(call, model, **inputs[batch]))
                    entry = samples.setdefault((batch, name, mode, variant), {"first": first_ms, "medians": []})
                    entry["medians"].append(ms)
                    print(
                        f"  round {r + 1}: batch {batch} {name} {mode} [{variant}]: {ms:.3f} ms (first call "
                        f"{first_ms:.0f} ms)",
                        flush=True,
                    )
                    save_partial()

    def guarded(time_rows, mode: str, variant: str):
        """A variant the device cannot run (no such kernel, a compile failure) is reported, not fatal, as long as
        torch's own order ran."""
        try:
            time_rows(mode, variant)
        except Exception as e:
            if variant == "torch":
                raise
            info.setdefault("errors", {})[f"{mode} [{variant}]"] = f"{type(e).__name__}: {e}"[:2000]
            print(f"  {mode} [{variant}] failed: {type(e).__name__}: {str(e)[:500]}", flush=True)

    with torch.inference_mode():
        for batch in batch_sizes:
            if theirs is None:
                continue
            reference = models["diffusers"][1](theirs, **inputs[batch]).float()  # diffusers, torch's order
            for variant in variants:
                try:
                    with attention_variant(variant):
                        a = call_in_house(ours, **inputs[batch]).float()
                except Exception as e:
                    if variant == "torch":
                        raise
                    print(f"batch {batch}: in-house [{variant}] failed: {type(e).__name__}: {str(e)[:300]}")
                    continue
                diff = float((a - reference).abs().max())
                info[f"max_diff_batch_{batch}_{variant}"] = diff
                print(
                    f"batch {batch}: max |in-house [{variant}] - diffusers [torch]| = {diff:.3g} (output mean "
                    f"|.| {float(a.abs().mean()):.3g}, {info['dtype']})"
                )
        for variant in variants:
            guarded(time_all, "eager", variant)
        if not args.no_compile:
            for name, (model, call) in models.items():
                compiled = compile_model(
                    model,
                    args.compile_scope,
                    fullgraph=name == "in-house",
                    backend=args.compile_backend,
                    mode=args.compile_mode,
                )
                models[name] = (compiled, call)
            for variant in variants:
                torch._dynamo.reset()  # trace again under this variant's kernel order
                guarded(time_all, "compiled", variant)

    rows = table(samples, cfg, side, text_tokens)
    print(
        f"\n{'batch':>5}  {'implementation':<30} {'median ms':>10} {'spread':>7} {'first ms':>9} {'TFLOP/s':>8} "
        f"{'vs diffusers, same kernels':>26} {'vs diffusers [torch]':>21}"
    )
    for r in rows:
        same = "" if r["speedup_vs_diffusers"] is None else f"{r['speedup_vs_diffusers']:.3f}x"
        shipped = "" if r["speedup_vs_diffusers_torch"] is None else f"{r['speedup_vs_diffusers_torch']:.3f}x"
        print(
            f"{r['batch']:>5}  {r['impl']:<30} {r['ms']:>10.3f} {r['spread_pct']:>6.1f}% "
            f"{r['first_call_ms']:>9.0f} {r['tflops']:>8.3g} {same:>26} {shipped:>21}"
        )
    per_batch = [f"batch {b}: {forward_flops(cfg, b, side, side, text_tokens) / 1e9:.4g} GFLOP" for b in batch_sizes]
    print(f"(FLOPs per forward, analytic: {', '.join(per_batch)})")
    print(
        f"(median ms: median over {rounds} interleaved round(s) of each round's median of {iters} calls; spread: "
        "(max - min) / median over the rounds; first ms: the first call, compilation included for compiled rows)"
    )
    print(f"(attention kernels tried, in order: {info['attention_variants']})")
    if "matmul_peak_tflops" in info:
        for r in rows:
            r["fraction_of_matmul_peak"] = r["tflops"] / info["matmul_peak_tflops"]
        print(
            "(TFLOP/s as a fraction of the measured matmul ceiling: "
            + ", ".join(f"{r['impl']} b{r['batch']} {r['fraction_of_matmul_peak']:.0%}" for r in rows)
            + ")"
        )
    result = {**info, "rows": rows, "complete": True}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def table(samples: dict, cfg: MMDiTConfig, side: int, text_tokens: int) -> list[dict]:
    """One row per (batch, model, mode, attention variant), with its speed-up over diffusers in the same mode,
    both with the same kernels and with diffusers in torch's own order."""
    rows = []
    for (batch, name, mode, variant), entry in samples.items():
        ms = statistics.median(entry["medians"])
        flops = forward_flops(cfg, batch, side, side, text_tokens)
        rows.append(
            {
                "batch": batch,
                "model": name,
                "mode": mode,
                "attention": variant,
                "impl": f"{name} {mode} [{variant}]",
                "ms": ms,
                "round_ms": entry["medians"],
                "spread_pct": 100 * (max(entry["medians"]) - min(entry["medians"])) / ms,
                "first_call_ms": entry["first"],
                "tflops": flops / (ms * 1e-3) / 1e12,
                "gflop": flops / 1e9,
            }
        )
    base = {(r["batch"], r["mode"], r["attention"]): r["ms"] for r in rows if r["model"] == "diffusers"}
    for r in rows:
        same = base.get((r["batch"], r["mode"], r["attention"]))
        torch_order = base.get((r["batch"], r["mode"], "torch"))
        r["speedup_vs_diffusers"] = None if same is None else same / r["ms"]
        r["speedup_vs_diffusers_torch"] = None if torch_order is None else torch_order / r["ms"]
    rows.sort(key=lambda r: (r["batch"], r["mode"], r["attention"], r["model"]))
    return rows


if __name__ == "__main__":
    main()
