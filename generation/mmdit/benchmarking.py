"""What the MM-DiT speed benchmarks in bench/ share (mmdit_forward.py, mmdit_kernels.py,
mmdit_attention_variants.py, sdpa_layout.py): the model sizes they time, random weights and inputs, the
analytic FLOP count of one forward, how to call either implementation, torch.compile by block, the orders in
which attention kernels are tried, and the timers.

FLOPs are counted analytically for the in-house forward (`forward_flops`, a multiply-add = 2 FLOPs):
    per block, image stream: 2 B N (3D^2 + D^2 + 2 D M)        qkv, attention out-proj, MLP (M = 4D)
               text stream:  2 B T (3D^2 + D^2 + 2 D M)        the last block only 2 B T 3D^2 (its keys/values)
               attention:    4 B Lq L D, L = T + N keys         (QK^T and AV); Lq = L, in the last block Lq = N
               modulation:   2 B D (6D + 6D), last block 2 B D (6D + 2D)
    once: patch embedding 2 B N (C p^2) D, context embedder 2 B T text_dim D, final layer 2 B D 2D +
          2 B N D (p^2 C), timestep MLP 2 B (256 D + D^2), pooled MLP 2 B (pooled_dim D + D^2).
diffusers does slightly more work in its last block (text queries it throws away); the benchmarks count the
useful work for both. tests/generation/test_bench_mmdit.py checks the formula against
torch.utils.flop_counter on the in-house model.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from generation.mmdit.diffusers_export import to_diffusers
from generation.mmdit.model import MMDiT, MMDiTConfig

# Orders in which scaled_dot_product_attention tries its CUDA kernels (torch takes the first that accepts the
# inputs). "torch": torch's own order, what diffusers gets by default.
ATTENTION = {
    "torch": None,
    "cudnn": (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "flash": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
}


@contextmanager
def attention_variant(name: str):
    """Both models try the attention kernels in ATTENTION[name]'s order (a compiled model keeps the kernel it
    was traced with, so each variant's compiled rows are traced under it)."""
    order = ATTENTION[name]
    with sdpa_kernel(list(order), set_priority=True) if order else nullcontext():
        yield


def sd3_medium_config() -> MMDiTConfig:
    return MMDiTConfig.from_depth(
        24,
        in_channels=16,
        sample_size=128,
        patch_size=2,
        text_dim=4096,
        pooled_dim=2048,
        pos_embed_max_size=192,
        qk_norm="rms",
    )


def tiny_config() -> MMDiTConfig:
    return MMDiTConfig(
        in_channels=4,
        sample_size=16,
        patch_size=2,
        depth=2,
        hidden_size=64,
        num_heads=2,
        text_dim=32,
        pooled_dim=16,
        qk_norm="rms",
    )


def shapes(tiny: bool) -> tuple[MMDiTConfig, int, int]:
    """(model config, latent side, text tokens) of a benchmark: SD3-medium on a 1024x1024 image (128x128 latent,
    333 text tokens), or the tiny size the CPU tests run."""
    return (tiny_config(), 16, 7) if tiny else (sd3_medium_config(), 128, 333)


def build_models(
    cfg: MMDiTConfig, device: torch.device, dtype: torch.dtype, with_diffusers: bool = True
) -> tuple[MMDiT, nn.Module | None]:
    """The in-house model with seeded random weights and diffusers' SD3Transformer2DModel holding the same weights
    (copied in float32; None without `with_diffusers`), both then in `dtype` and in eval mode."""
    torch.manual_seed(0)
    with torch.device(device):
        ours = MMDiT(cfg)
    randomise_(ours)
    theirs = to_diffusers(ours) if with_diffusers else None
    ours.to(dtype).eval()
    if theirs is not None:
        theirs.to(dtype).eval()
    return ours, theirs


def forward_flops(cfg: MMDiTConfig, batch: int, height: int, width: int, text_tokens: int) -> int:
    """Matmul and attention FLOPs of one in-house forward (see the module docstring)."""
    B, D, M, p = batch, cfg.hidden_size, cfg.mlp_hidden_size, cfg.patch_size
    N, T = (height // p) * (width // p), text_tokens
    L = N + T
    stream = 3 * D * D + D * D + 2 * D * M  # weights a token meets in one full block
    full_block = 2 * B * (N + T) * stream + 4 * B * L * L * D + 2 * B * D * 12 * D
    last_block = 2 * B * N * stream + 2 * B * T * 3 * D * D + 4 * B * N * L * D + 2 * B * D * 8 * D
    once = (
        2 * B * N * cfg.in_channels * p * p * D
        + 2 * B * T * cfg.text_dim * D
        + 2 * B * D * 2 * D
        + 2 * B * N * D * p * p * cfg.out_channels
        + 2 * B * (cfg.frequency_embedding_size * D + D * D)
        + 2 * B * (cfg.pooled_dim * D + D * D)
    )
    return (cfg.depth - 1) * full_block + last_block + once


def randomise_(model: torch.nn.Module, seed: int = 0) -> None:
    """Small random weights everywhere (the adaLN-Zero init would make every output 0)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=g, device=param.device, dtype=param.dtype) * 0.02
            param.copy_(noise + (1.0 if "norm" in name else 0.0))


def call_in_house(model, x, t, context, pooled):
    return model(x, t, context, pooled)


def call_diffusers(model, x, t, context, pooled, timestep_scale=1000.0):
    """diffusers takes the timestep in its own scale (t * 1000)."""
    return model(
        hidden_states=x,
        encoder_hidden_states=context,
        pooled_projections=pooled,
        timestep=t * timestep_scale,
        return_dict=False,
    )[0]


def make_inputs(cfg: MMDiTConfig, batch: int, side: int, text_tokens: int, device, dtype) -> dict:
    g = torch.Generator(device="cpu").manual_seed(batch)
    return {
        "x": torch.randn(batch, cfg.in_channels, side, side, generator=g).to(device, dtype),
        "t": torch.rand(batch, generator=g).to(device),
        "context": torch.randn(batch, text_tokens, cfg.text_dim, generator=g).to(device, dtype),
        "pooled": torch.randn(batch, cfg.pooled_dim, generator=g).to(device, dtype),
    }


def compile_model(model: torch.nn.Module, scope: str, fullgraph: bool, backend: str, mode: str | None):
    """torch.compile the whole model, or each transformer block in place (regional compilation: blocks that
    differ only in their weights share one compiled graph)."""
    if scope == "full":
        return torch.compile(model, fullgraph=fullgraph, dynamic=False, backend=backend, mode=mode)
    blocks = model.get_submodule("blocks" if hasattr(model, "blocks") else "transformer_blocks")  # in-house, diffusers
    for block in blocks.children():
        block.compile(fullgraph=fullgraph, dynamic=False, backend=backend, mode=mode)
    return model


def timer(device: torch.device, warmup: int, iters: int):
    def measure(fn) -> tuple[float, float]:
        """-> (first call ms, median ms of `iters` calls after `warmup` more)."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        first = (time.perf_counter() - start) * 1e3
        return first, median_ms(fn, device, warmup, iters)

    return measure


def median_ms(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median ms of `iters` calls after `warmup` untimed ones: CUDA events on the GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, iters: int = 10) -> float:
    """Rate of one large n^3 matrix product on random data: the ceiling the TFLOP/s columns are read against."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(iters):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * iters / (begin.elapsed_time(end) * 1e-3) / 1e12
