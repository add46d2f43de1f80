"""Experiment: ways of preparing the in-house model's attention inputs, compiled, against diffusers in one run.

    python bench/mmdit_attention_variants.py                 # SD3-medium size, CUDA, bf16, batch 2, compiled
    python bench/mmdit_attention_variants.py --tiny --device cpu --compile-backend eager   # the tested smoke run

bench/mmdit_kernels.py found the compiled in-house forward at batch 2 spending more than diffusers' in the
kernels that normalise queries/keys and gather them into the layout cuDNN's attention wants. The variants
here change only that part, by patching JointAttention / RMSNorm for the run (they compute the same function;
the script checks each against the current code):
    current       the model as committed: fused qkv, tokens-major concatenation, F.rms_norm
    heads-major   concatenate in (B, H, L, hd), as diffusers does
    manual-rms    RMSNorm written out in float32 (x * rsqrt(mean(x^2) + eps)), as diffusers writes it
    both          heads-major + manual-rms
Each variant is traced afresh (torch._dynamo.reset) and timed in --rounds rounds; diffusers is timed first and
last, so that drift over the run shows.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from generation.mmdit import benchmarking
from generation.mmdit import model as mmdit

ORIGINAL_ATTENTION_FORWARD = mmdit.JointAttention.forward
ORIGINAL_RMS_FORWARD = mmdit.RMSNorm.forward


def heads_major_forward(self, img, txt, attn_mask=None):
    B, N, D = img.shape
    T = txt.shape[1]
    H, hd = self.num_heads, self.head_dim
    q_i, k_i, v_i = self.img_qkv(img).view(B, N, 3, H, hd).unbind(2)
    q_t, k_t, v_t = self.txt_qkv(txt).view(B, T, 3, H, hd).unbind(2)
    q_i, k_i = self.img_q_norm(q_i).transpose(1, 2), self.img_k_norm(k_i).transpose(1, 2)
    k = torch.cat([self.txt_k_norm(k_t).transpose(1, 2), k_i], dim=2)
    v = torch.cat([v_t.transpose(1, 2), v_i.transpose(1, 2)], dim=2)
    q = q_i if self.context_pre_only else torch.cat([self.txt_q_norm(q_t).transpose(1, 2), q_i], dim=2)
    out = mmdit.attention(q, k, v, attn_mask).transpose(1, 2).reshape(B, -1, D)
    if self.context_pre_only:
        return self.img_out(out), None
    txt_out, img_out = out.split([T, N], dim=1)
    return self.img_out(img_out), self.txt_out(txt_out)


def manual_rms_forward(self, x):
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


VARIANTS = {
    "current": (ORIGINAL_ATTENTION_FORWARD, ORIGINAL_RMS_FORWARD),
    "heads-major": (heads_major_forward, ORIGINAL_RMS_FORWARD),
    "manual-rms": (ORIGINAL_ATTENTION_FORWARD, manual_rms_forward),
    "both": (heads_major_forward, manual_rms_forward),
}


def use_variant(name: str) -> None:
    mmdit.JointAttention.forward, mmdit.RMSNorm.forward = VARIANTS[name]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=None, help="default 2 (tiny: 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=None, help="default 10 (tiny: 2)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg, side, tokens = benchmarking.shapes(args.tiny)
    batch = args.batch or (1 if args.tiny else 2)
    iters = args.iters or (2 if args.tiny else 10)
    measure = benchmarking.timer(device, 2, iters)
    torch._dynamo.config.cache_size_limit = 64

    ours, theirs = benchmarking.build_models(cfg, device, dtype)
    x = benchmarking.make_inputs(cfg, batch, side, tokens, device, dtype)
    flops = benchmarking.forward_flops(cfg, batch, side, side, tokens)
    result: dict = {"batch": batch, "device": str(device), "rows": []}

    def time_rows(label: str, model: nn.Module, call, reference: torch.Tensor | None):
        torch._dynamo.reset()
        benchmarking.compile_model(
            model, "blocks", fullgraph=label != "diffusers", backend=args.compile_backend, mode=None
        )
        out = call(model, **x).float()
        diff = None if reference is None else float((out - reference).abs().max())
        medians, first = [], None
        for _ in range(args.rounds):
            f, ms = measure(lambda: call(model, **x))
            first, medians = first or f, medians + [ms]
        row = {
            "impl": label,
            "ms": statistics.median(medians),
            "round_ms": medians,
            "first_call_ms": first,
            "tflops": flops / (statistics.median(medians) * 1e-3) / 1e12,
            "max_diff_vs_current": diff,
        }
        result["rows"].append(row)
        print(
            f"  {label:<16} {row['ms']:9.3f} ms  rounds {[round(m, 3) for m in medians]}  max diff vs current {diff}",
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        return out

    call_theirs = lambda m, **kw: benchmarking.call_diffusers(m, timestep_scale=cfg.timestep_scale, **kw)  # noqa: E731
    try:
        with torch.inference_mode():
            time_rows("diffusers", theirs, call_theirs, None)
            reference = None
            for name in args.variants:
                use_variant(name)
                out = time_rows(name, ours, benchmarking.call_in_house, reference)
                reference = out if reference is None else reference
            time_rows("diffusers", theirs, call_theirs, None)
    finally:
        use_variant("current")
    base = statistics.median(r["ms"] for r in result["rows"] if r["impl"] == "diffusers")
    print(f"\nbatch {batch}, compiled; diffusers {base:.3f} ms (median of its two timings)")
    for r in result["rows"]:
        r["speedup_vs_diffusers"] = base / r["ms"]
        print(f"  {r['impl']:<16} {r['ms']:9.3f} ms {r['tflops']:8.1f} TFLOP/s  {r['speedup_vs_diffusers']:.3f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
