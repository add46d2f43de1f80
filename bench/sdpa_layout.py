"""Joint attention alone at the SD3-medium shape: each scaled_dot_product_attention kernel, on each memory layout.

    python bench/sdpa_layout.py                 # CUDA, bf16: batch 2, 24 heads of 64, 4096 + 333 tokens
    python bench/sdpa_layout.py --device cpu --batch 1 --heads 2 --tokens 64   # a small CPU run (tested)

The MM-DiT's attention is about a third of its forward FLOPs (generation.mmdit.benchmarking.forward_flops).
Its queries, keys and values can reach the kernel in two layouts: heads-major (B, H, L, hd) contiguous, as
diffusers builds them, or tokens-major (B, L, H, hd) contiguous seen through a transpose, which is what
concatenating per-token projections gives for free. This times both, for torch's own kernel order and for
each kernel alone, and says which kernel torch's order picks. FLOPs: 4 B H L^2 hd (QK^T and AV).
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from generation.mmdit.benchmarking import median_ms

KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def make_qkv(layout: str, batch: int, heads: int, tokens: int, head_dim: int, device, dtype, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = [torch.randn(batch, heads, tokens, head_dim, generator=g).to(device, dtype) for _ in range(3)]
    # the same values either way; tokens-major is stored (B, L, H, hd) and seen as (B, H, L, hd)
    return out if layout == "heads-major" else [t.transpose(1, 2).contiguous().transpose(1, 2) for t in out]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=24)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=4096 + 333)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kernels = ["torch", "flash", "cudnn", "efficient"] if device.type == "cuda" else ["torch", "flash", "math"]
    flops = 4 * args.batch * args.heads * args.tokens**2 * args.head_dim
    rows, reference = [], None
    for layout in ("heads-major", "tokens-major"):
        q, k, v = make_qkv(layout, args.batch, args.heads, args.tokens, args.head_dim, device, dtype)
        chosen = SDPBackend(torch._fused_sdp_choice(q, k, v)).name
        for kernel in kernels:

            def call(q=q, k=k, v=v):
                return F.scaled_dot_product_attention(q, k, v)

            row = {"layout": layout, "kernel": kernel, "torch_picks": chosen if kernel == "torch" else None}
            try:
                with sdpa_kernel([KERNELS[kernel]]) if kernel != "torch" else nullcontext():
                    out = call().float()
                    if reference is None:
                        reference = out
                    row["max_diff_vs_first"] = float((out - reference).abs().max())
                    row["ms"] = median_ms(call, device, args.warmup, args.iters)
                row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
            except RuntimeError as e:  # no such kernel for these inputs on this device
                row["error"] = str(e).splitlines()[0][:200]
            rows.append(row)
            shown = (
                f"{row['ms']:8.3f} ms {row['tflops']:7.1f} TFLOP/s  max diff {row['max_diff_vs_first']:.3g}"
                if "ms" in row
                else f"unavailable: {row['error']}"
            )
            picks = f" (torch picks {chosen})" if kernel == "torch" else ""
            print(f"{layout:>12} {kernel:>9}{picks}: {shown}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": vars(args), "dtype": str(dtype), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
