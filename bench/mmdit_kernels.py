"""Where a forward's time goes, kernel by kernel, for the in-house MM-DiT and diffusers' SD3Transformer2DModel.

    python bench/mmdit_kernels.py                          # SD3-medium size on CUDA, bf16, batch 2, compiled
    python bench/mmdit_kernels.py --tiny --device cpu      # a tiny run on the CPU (what the test runs)

bench/mmdit_forward.py says how long each model takes; this says on what. Both models get the same weights,
are compiled the same way (block by block, as there), warmed up, then run --forwards times under
torch.profiler. Kernels are grouped by kind (matrix products, attention, fused pointwise/normalisation
kernels, copies...) and the device time per forward is printed for both, side by side, with the difference.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from generation.mmdit import benchmarking

GROUPS = [  # (group, pattern on the kernel name), first match wins
    ("attention", r"flash|fmha|cudnn|attention|sdpa|_efficient_attention"),
    ("matmul", r"gemm|sm90_xmma|cutlass|nvjet|ampere|hopper|addmm|\bmm\b|matmul|linear"),
    ("triton (fused pointwise / norm)", r"triton"),
    ("copy / layout", r"copy|memcpy|clone|cat|elementwise_kernel_with_index|contiguous"),
    ("elementwise (eager)", r"elementwise|vectorized|unrolled|reduce"),
    ("conv", r"conv"),
]


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    return "other"


def kernel_times(fn, forwards: int, device: torch.device) -> dict[str, dict]:
    """{kernel name: {"us": device (on the CPU: self CPU) microseconds per forward, "calls": per forward}}."""
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(forwards):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    times = {}
    for event in prof.key_averages():
        us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        if us > 0:
            times[event.key] = {"us": us / forwards, "calls": event.count / forwards}
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=None, help="default 2 (tiny: 1)")
    parser.add_argument("--forwards", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per model")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg, side, tokens = benchmarking.shapes(args.tiny)
    batch = args.batch or (1 if args.tiny else 2)
    ours, theirs = benchmarking.build_models(cfg, device, dtype)
    inputs = benchmarking.make_inputs(cfg, batch, side, tokens, device, dtype)
    calls = {
        "diffusers": partial(benchmarking.call_diffusers, theirs, timestep_scale=cfg.timestep_scale),
        "in-house": partial(benchmarking.call_in_house, ours),
    }
    result: dict = {"batch": batch, "compiled": not args.no_compile, "models": {}}
    with torch.inference_mode():
        if not args.no_compile:
            for name, model in (("diffusers", theirs), ("in-house", ours)):
                benchmarking.compile_model(
                    model, "blocks", fullgraph=name == "in-house", backend=args.compile_backend, mode=None
                )
        for name, call in calls.items():
            for _ in range(3):  # compile and warm up
                call(**inputs)
            times = kernel_times(partial(call, **inputs), args.forwards, device)
            groups: dict[str, float] = defaultdict(float)
            for kernel, entry in times.items():
                groups[group_of(kernel)] += entry["us"]
            result["models"][name] = {
                "kernels": times,
                "groups": dict(groups),
                "total_us": sum(e["us"] for e in times.values()),
            }

    unit = "device" if device.type == "cuda" else "CPU"
    ours_g, theirs_g = result["models"]["in-house"]["groups"], result["models"]["diffusers"]["groups"]
    print(f"\n{unit} microseconds per forward, batch {batch}, {'compiled' if result['compiled'] else 'eager'}")
    print(f"{'kind':<34} {'diffusers':>11} {'in-house':>11} {'in-house - diffusers':>21}")
    for group in sorted(set(ours_g) | set(theirs_g), key=lambda g: -max(ours_g.get(g, 0), theirs_g.get(g, 0))):
        a, b = theirs_g.get(group, 0.0), ours_g.get(group, 0.0)
        print(f"{group:<34} {a:>11.0f} {b:>11.0f} {b - a:>+21.0f}")
    a, b = result["models"]["diffusers"]["total_us"], result["models"]["in-house"]["total_us"]
    print(f"{'total':<34} {a:>11.0f} {b:>11.0f} {b - a:>+21.0f}")
    for name in ("diffusers", "in-house"):
        kernels = result["models"][name]["kernels"]
        print(f"\n{name}: top kernels ({unit} us per forward, calls per forward)")
        for kernel, e in sorted(kernels.items(), key=lambda kv: -kv[1]["us"])[: args.top]:
            print(f"  {e['us']:>9.0f} {e['calls']:>5.0f}  {group_of(kernel):<12.12} {kernel[:100]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
