"""Accuracy of demo image checkpoints (in-house MM-DiT and UNet baseline), read from the pixels by generation.checker.

    .venv/bin/python bench/demo_model_report.py                          # every checkpoint under demo_models/
    .venv/bin/python bench/demo_model_report.py /work/demo-runs/a /work/demo-runs/b --steps 10 28 --seeds 16

For each checkpoint and each number of sampling steps it generates every held-out prompt of the chosen kinds
(default: the colour-and-shape prompts) with seeds 0..S-1, scores the images with the checker and prints one
table row: background, object colour, shape (and relation / word for those kinds) and all-correct accuracy.
The baseline, checked in the same run, is the checker on ground-truth drawings of the same prompts; the last
column is the model's all-correct accuracy as a ratio of it. --json writes every figure to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from generation import demo_domain
from generation.checker import score_images
from generation.contract import CONFIG_FILE, MMDIT_FORMAT, UNET_BASELINE_FORMAT, WEIGHTS_FILE
from generation.mmdit.pipeline import InHousePipeline
from generation.unet.pipeline import UNetBaselinePipeline

ROOT = Path(__file__).resolve().parent.parent


def default_checkpoints() -> list[Path]:
    return sorted(
        p.parent
        for p in (ROOT / "demo_models").glob(f"*/{CONFIG_FILE}")
        if (p.parent / WEIGHTS_FILE).exists()
        and json.loads(p.read_text()).get("format") in (MMDIT_FORMAT, UNET_BASELINE_FORMAT)
    )


def ground_truth_scores(specs, seeds: int) -> dict:
    rng = np.random.default_rng(0)
    images = [demo_domain.render(s, rng) for s in specs for _ in range(seeds)]
    return score_images(images, [s for s in specs for _ in range(seeds)])


def checker_robustness(n: int) -> None:
    """The checker on n ground-truth drawings of every kind, clean and with Gaussian blur + pixel noise."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    images, captions, _ = demo_domain.sample_batch(n, rng, "all", {k: 1.0 for k in demo_domain.KINDS})
    print(f"checker on {n} ground-truth images (all kinds, train + held-out prompts), all-correct accuracy:")
    for sigma, noise in [(0.0, 0.0), (0.6, 25.0), (0.8, 30.0), (1.0, 40.0)]:
        x = images.astype(np.float32)
        if sigma:
            x = np.stack([ndimage.gaussian_filter(im, sigma=(sigma, sigma, 0)) for im in x])
        x = np.clip(x + rng.normal(0, noise, x.shape), 0, 255) if noise else x
        scores = score_images(x, captions)
        cells = "  ".join(f"{k} {scores[k]['all'] * 100:5.1f}% (n={scores[k]['n']})" for k in demo_domain.KINDS)
        print(f"  blur sigma {sigma:.1f} px, noise sd {noise:4.1f}: {cells}")


def evaluate(
    path: Path,
    specs,
    seeds: int,
    steps: int,
    guidance: float,
    shift: float,
    scheduler: str = "ddim",
    device: str = "cpu",
    batch_size: int = 64,
) -> tuple[dict, float]:
    prompts = [s.caption for s in specs for _ in range(seeds)]
    seed_list = [i for _ in specs for i in range(seeds)]
    start = time.time()
    if json.loads((path / CONFIG_FILE).read_text()).get("format") == UNET_BASELINE_FORMAT:
        unet = UNetBaselinePipeline.from_checkpoint(path, device=device)
        images = [
            im
            for i in range(0, len(prompts), batch_size)
            for im in unet(
                prompts[i : i + batch_size],
                seed_list[i : i + batch_size],
                steps=steps,
                guidance_scale=guidance,
                scheduler=scheduler,
            )
        ]
    else:
        pipe = InHousePipeline.from_checkpoint(path, device=device)
        shift = shift if pipe.objective.startswith("rf/") else 1.0  # DDIM has no timestep shift
        images = pipe(prompts, seed_list, steps=steps, guidance_scale=guidance, shift=shift, batch_size=batch_size)
    seconds = time.time() - start
    return score_images(images, [s for s in specs for _ in range(seeds)]), seconds


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", type=Path, help="checkpoint directories (default: demo_models/*)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 28], help="sampling steps to compare")
    p.add_argument("--seeds", type=int, default=16, help="images per prompt (seeds 0..S-1)")
    p.add_argument("--split", default="heldout", choices=["heldout", "train", "all"])
    p.add_argument("--kinds", default="shape", help="comma-separated prompt kinds: shape,position,word")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--shift", type=float, default=1.0)
    p.add_argument("--unet-scheduler", default="ddim", help="UNet baseline sampler: ddim or ddpm")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu", help="where the models sample: cpu, cuda")
    p.add_argument("--batch-size", type=int, default=64, help="images sampled at once")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--checker-only", type=int, metavar="N", help="only score N ground-truth images (robustness)")
    args = p.parse_args(argv)
    if args.checker_only:
        checker_robustness(args.checker_only)
        return {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoints = args.checkpoints or default_checkpoints()
    if not checkpoints:
        p.error("no checkpoints given and none found under demo_models/")
    kinds = [k.strip() for k in args.kinds.split(",")]
    specs = demo_domain.all_specs(args.split, kinds)
    attrs = ["background", "colour", "shape", "relation", "word", "all"]

    truth = ground_truth_scores(specs, args.seeds)
    results = {
        "split": args.split,
        "kinds": kinds,
        "seeds": args.seeds,
        "guidance": args.guidance,
        "shift": args.shift,
        "ground_truth": truth,
        "models": [],
    }
    header = (
        f"{'checkpoint':28} {'objective':22} {'trained':>7} {'steps':>5} {'kind':8} "
        + " ".join(f"{a[:6]:>6}" for a in attrs)
        + f" {'n':>5} {'sec':>6} {'vs truth':>8}"
    )
    print(
        f"split={args.split} kinds={','.join(kinds)} seeds/prompt={args.seeds} cfg={args.guidance} "
        f"shift={args.shift} prompts={len(specs)}"
    )
    print(header)
    print("-" * len(header))

    def row(name, objective, trained, steps, scores, seconds):
        for kind, per in scores.items():
            cells = " ".join(f"{per[a] * 100:6.1f}" if a in per else f"{'-':>6}" for a in attrs)
            ratio = per["all"] / truth[kind]["all"] if truth[kind]["all"] else float("nan")
            print(
                f"{name[:28]:28} {objective[:22]:22} {trained:>7} {steps:>5} {kind:8} {cells} {per['n']:5d} "
                f"{seconds:6.1f} {ratio:8.3f}",
                flush=True,
            )

    row("ground truth (checker)", "-", "-", "-", truth, 0.0)
    for path in checkpoints:
        meta = json.loads((path / CONFIG_FILE).read_text())
        recipe = meta.get("recipe", {})
        for steps in args.steps:
            scores, seconds = evaluate(
                path,
                specs,
                args.seeds,
                steps,
                args.guidance,
                args.shift,
                args.unet_scheduler,
                device=args.device,
                batch_size=args.batch_size,
            )
            row(path.name, recipe.get("objective", "?"), recipe.get("steps_done", "?"), steps, scores, seconds)
            results["models"].append(
                {
                    "checkpoint": str(path),
                    "objective": recipe.get("objective"),
                    "trained_steps": recipe.get("steps_done"),
                    "sampling_steps": steps,
                    "scores": scores,
                    "seconds": round(seconds, 1),
                }
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
