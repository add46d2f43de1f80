"""Images per second of diffusers pipelines through the platform's backend, eager vs compiled, in one run.

    .venv/bin/python bench/diffusers_throughput.py [--pipelines sd15,sd3] [--modes fp16,fp16+compile,...]
        [--batch 4] [--steps 28] [--repeats 3] [--device cuda] [--tiny]

Two pipelines built here with random weights at their real sizes (nothing is downloaded; the time of a step
does not depend on what the weights are):

  sd15   StableDiffusionPipeline: the SD 1.x UNet (860M parameters), CLIP ViT-L/14 text encoder, the 4-channel
         VAE; 512x512 images, DDIM
  sd3    StableDiffusion3Pipeline: the SD3-medium transformer (24 joint blocks, 2B parameters), CLIP-L and CLIP-G,
         no T5 (the pipeline's zeros in its place, as SD3 is run without T5), the 16-channel VAE; 1024x1024 images,
         flow-matching Euler

A mode is a precision and runtime options (generation.contract.DEFAULT_RUNTIME_OPTIONS), written
`PRECISION[+compile[=MODE]][+fullgraph][+cl]`: `fp16` (eager), `bf16+compile` (torch.compile default mode),
`fp16+compile=max-autotune+cl` (CUDA graphs and autotuned kernels, channels-last). Each mode builds its pipeline
again from the same seed and runs it through generation.backends.DiffusersBackend.from_pipeline, the worker's
code path: one first call (which compiles, timed apart), then `repeats` calls of `batch` images, each image with
its own seed. Ratios are against the first mode, in the same run. "same images" compares each mode's first-call
pixels with the eager mode at the same precision, or an eager mode's with the first mode's (mean absolute
difference, 0-255, against the mode named in brackets). On a GPU the table also gives the peak
memory and the batch size that `batch_size: "auto"` would choose from the free memory.

`--tiny` builds the tests' small pipelines of the same classes (tests/support.py, 16 px): the command the
tests run on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation.backends import DiffusersBackend, RuntimeOptions, batch_size_for, resolve_device  # noqa: E402
from generation.contract import DIFFUSERS, check_runtime_options  # noqa: E402

DEFAULT_GPU_MODES = "fp16,bf16,fp16+compile,fp16+compile=max-autotune,fp16+compile=max-autotune+fullgraph"
DEFAULT_CPU_MODES = "fp32,bf16,fp32+compile"
PROMPTS = ("a red circle above a blue square", "the word HELLO in green letters", "three yellow triangles")


# ----------------------------------------------------------------------------------------------- pipelines


def _tokenizer():
    """A CLIP tokenizer with a small vocabulary (the real one's files are a download away): ids index into the
    text encoder's real-size embedding table, and every prompt is padded to the real 77 tokens."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_letters + string.digits + "\"'.,!?-":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _clip(cls, hidden: int, layers: int, heads: int, projection: int | None, tiny: bool):
    from transformers import CLIPTextConfig

    if tiny:
        from tests.support import tiny_clip_text

        return tiny_clip_text(cls, 49408, 32 if projection else None)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act="gelu" if hidden == 1280 else "quick_gelu",
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **({"projection_dim": projection} if projection else {}),
    )
    return cls(config)


def _vae(latent_channels: int, tiny: bool, **kw):
    from diffusers import AutoencoderKL

    if tiny:
        from tests.support import tiny_vae

        return tiny_vae(latent_channels, **kw)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        **kw,
    )


def build_sd15(tiny: bool = False):
    """An SD 1.x-class StableDiffusionPipeline with random weights; returns (pipe, image side)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    if tiny:
        from tests.support import tiny_sd_unet

        unet = tiny_sd_unet()
    else:  # runwayml/stable-diffusion-v1-5's unet/config.json
        unet = UNet2DConditionModel(
            sample_size=64,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
    pipe = StableDiffusionPipeline(
        vae=_vae(4, tiny, scaling_factor=0.18215),
        text_encoder=_clip(CLIPTextModel, 768, 12, 12, None, tiny),
        tokenizer=_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe, 16 if tiny else 512


def build_sd3(tiny: bool = False):
    """An SD3-medium-class StableDiffusion3Pipeline (no T5) with random weights; returns (pipe, image side)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    if tiny:
        from tests.support import tiny_sd3_transformer

        transformer = tiny_sd3_transformer()
    else:  # stabilityai/stable-diffusion-3-medium-diffusers' transformer/config.json
        transformer = SD3Transformer2DModel(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            joint_attention_dim=4096,
            caption_projection_dim=1536,
            pooled_projection_dim=2048,
            out_channels=16,
            pos_embed_max_size=192,
        )
    tokenizer = _tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(
            16,
            tiny,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5305,
        ),
        text_encoder=_clip(CLIPTextModelWithProjection, 768, 12, 12, 768, tiny),
        tokenizer=tokenizer,
        text_encoder_2=_clip(CLIPTextModelWithProjection, 1280, 32, 20, 1280, tiny),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    return pipe, 16 if tiny else 1024


BUILDERS = {"sd15": build_sd15, "sd3": build_sd3}


def build(name: str, device: str, tiny: bool = False, seed: int = 0):
    """Pipeline `name` with random weights from `seed`, its parameters made on `device` (no copy from the CPU)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return BUILDERS[name](tiny)


# ----------------------------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    label: str
    options: dict  # runtime options, precision included

    @classmethod
    def parse(cls, text: str) -> Mode:
        precision, *flags = text.strip().split("+")
        options: dict = {"precision": precision}
        for flag in flags:
            name, _, value = flag.partition("=")
            if name == "compile":
                options["compile"] = value or "default"
            elif name == "fullgraph":
                options["fullgraph"] = True
            elif name == "cl":
                options["channels_last"] = True
            else:
                raise SystemExit(f"mode {text!r}: unknown part {flag!r} (compile[=MODE], fullgraph, cl)")
        try:
            check_runtime_options(DIFFUSERS, options)
        except ValueError as e:
            raise SystemExit(f"mode {text!r}: {e}") from e
        return cls(text.strip(), options)

    @property
    def eager_twin(self) -> str:
        return self.options["precision"]


@dataclass
class Row:
    pipeline: str
    mode: Mode
    first_call_s: float
    images_per_s: list[float]
    peak_gib: float | None
    auto_batch: int | None
    pixels: np.ndarray

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, mode: Mode, args, device: str) -> Row:
    pipe, side = build(name, device, args.tiny)
    options = RuntimeOptions.of(DIFFUSERS, mode.options)
    backend = DiffusersBackend.from_pipeline(pipe, device, options.dtype(DIFFUSERS, device), options)
    settings = {"steps": args.steps, "guidance_scale": 5.0, "height": side, "width": side}
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    first = backend.generate(prompts, list(range(args.batch)), settings)  # compiles, for a compiled mode
    _sync(device)
    first_call = time.perf_counter() - t0
    rates = []
    for rep in range(args.repeats):
        seeds = [1000 * (rep + 1) + i for i in range(args.batch)]
        _sync(device)
        t0 = time.perf_counter()
        backend.generate(prompts, seeds, settings)
        _sync(device)
        rates.append(args.batch / (time.perf_counter() - t0))
    peak = auto = None
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        auto_options = RuntimeOptions.of(DIFFUSERS, {**mode.options, "batch_size": "auto"})
        auto = batch_size_for(backend, auto_options, settings, device, job_size=10_000)
    pixels = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in first])
    del backend, pipe, first
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return Row(name, mode, first_call, rates, peak, auto, pixels)


def report(rows: list[Row], args, device: str) -> None:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(
        f"\n{name}; torch {torch.__version__}; batch {args.batch}, {args.steps} steps, guidance 5, "
        f"{args.repeats} timed calls per mode after one first call; ratios against the first mode, same run"
    )
    columns = ("pipeline", "mode", "first call s", "images/s (median)", "calls", "ratio", "same images", "peak GiB")
    print("| " + " | ".join((*columns, "auto batch")) + " |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    for pipeline in dict.fromkeys(r.pipeline for r in rows):
        mine = [r for r in rows if r.pipeline == pipeline]
        base = mine[0]
        eager = {r.mode.label: r for r in mine}
        for r in mine:
            twin = eager.get(r.mode.eager_twin)
            ref = twin if twin is not None and twin is not r else (base if base is not r else None)
            same = "" if ref is None else f"{np.abs(r.pixels - ref.pixels).mean():.2f} ({ref.mode.label})"
            calls = " ".join(f"{x:.3f}" for x in r.images_per_s)
            peak = "" if r.peak_gib is None else f"{r.peak_gib:.1f}"
            auto = "" if r.auto_batch is None else str(r.auto_batch)
            print(
                f"| {pipeline} | {r.mode.label} | {r.first_call_s:.1f} | {r.median:.3f} | {calls} | "
                f"{r.median / base.median:.3f} | {same} | {peak} | {auto} |"
            )


def main(argv=None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipelines", default="sd15,sd3", help="comma-separated: sd15, sd3")
    p.add_argument(
        "--modes", default=None, help=f"comma-separated (GPU: {DEFAULT_GPU_MODES}; CPU: {DEFAULT_CPU_MODES})"
    )
    p.add_argument("--batch", type=int, default=4, help="images per call")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="small pipelines of the same classes (tests, CPU)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    default_modes = DEFAULT_GPU_MODES if device != "cpu" else DEFAULT_CPU_MODES
    modes = [Mode.parse(m) for m in (args.modes or default_modes).split(",")]
    pipelines = [x.strip() for x in args.pipelines.split(",")]
    unknown = set(pipelines) - set(BUILDERS)
    if unknown:
        raise SystemExit(f"unknown pipeline(s) {', '.join(sorted(unknown))}; known: {', '.join(BUILDERS)}")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = []
    for pipeline in pipelines:
        for mode in modes:
            rows.append(measure(pipeline, mode, args, device))
            r = rows[-1]
            print(f"  {pipeline} {mode.label}: first call {r.first_call_s:.1f} s, {r.median:.3f} images/s", flush=True)
    report(rows, args, device)
    return rows


if __name__ == "__main__":
    main()
