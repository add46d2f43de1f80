"""Text-to-3D by score distillation from the demo MM-DiT: are the rendered views of each asset right?

    nice .venv/bin/python bench/threed_sds.py                       # 3 held-out prompts x 2 seeds, 800 steps
    nice .venv/bin/python bench/threed_sds.py --steps 200 --seeds 0 --save-dir /tmp/threed

For each prompt and seed it optimises one asset (generation.threed.generate_asset, default settings: 48^3
grid, 32x32 views, 4 views per step, guidance 30, w(t) = t, Adam 0.05), renders 8 views around it (azimuth 0,
45, ..., 315 at elevation 10) and scores each with generation.checker. A view is "right" when the checker reads
the prompt's background and object colour from it (shape is reported too, but a field seen from the side is
not the prompt's flat shape). Baselines measured in the same run:
    init     the same seed's field before any step (the random initial grid), and the initial fields of seeds
             0 .. --init-seeds - 1 (no training needed): grey noise reads as white to the checker, so a prompt
             with a white object is right at initialisation whenever the random background lands on its colour,
    control  the trained asset scored against a wrong prompt (the next prompt in the list, other colours).
Consistency: silhouette IoU of each view against the exactly opposite one (azimuths 0, 45, 90, 135 and their
opposites, elevations 0 and 10), printed per asset. Prints one row per prompt (views right, summed over seeds)
and the CPU seconds per asset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from PIL import Image

from generation.checker import check_image
from generation.contract import GENERATING_KINDS, INHOUSE
from generation.demo_domain import all_prompts
from generation.threed import AssetSettings, generate_asset, load_prior, render_turntable, save_asset
from generation.threed.render import opposite_view_iou
from generation.threed.sds import SDSSettings

ROOT = Path(__file__).resolve().parent.parent
# Held out of the demo checkpoint's training (all_prompts("heldout", kinds=["shape"])), colours all different.
DEFAULT_PROMPTS = [
    "a red circle on a blue background",
    "a white square on a green background",
    "a green triangle on a yellow background",
]


def views_right(images: list[Image.Image], prompt: str) -> dict[str, int]:
    """How many views show the prompt's background and object colour ("right"), and its shape as well ("all")."""
    results = [check_image(image, prompt) for image in images]
    right = sum(r.checks["background"] and r.checks["colour"] for r in results)
    return {"right": right, "all": sum(r.correct for r in results)}


def strip(images: list[Image.Image], scale: int = 4) -> Image.Image:
    """The views side by side, enlarged `scale` times (nearest neighbour) for looking at."""
    w, h = images[0].size
    out = Image.new("RGB", (w * len(images), h))
    for i, image in enumerate(images):
        out.paste(image, (i * w, 0))
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "demo_models" / "mmdit-demo"))
    parser.add_argument("--kind", default=INHOUSE, choices=GENERATING_KINDS, help="the checkpoint's model kind")
    parser.add_argument("--guidance", type=float, default=SDSSettings().guidance_scale)
    parser.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=AssetSettings().steps)
    parser.add_argument("--views", type=int, default=8, help="turntable views scored per asset")
    parser.add_argument("--elevation", type=float, default=10.0)
    parser.add_argument("--init-seeds", type=int, default=20, help="initial fields scored per prompt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-dir", type=Path, help="write each asset and its turntable PNGs here")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if len(args.prompts) < 2:
        parser.error("the wrong-prompt control needs at least two prompts")
    heldout = set(all_prompts("heldout", kinds=["shape"]))
    for p in args.prompts:
        print(f"{'held-out' if p in heldout else 'TRAINING'} prompt: {p}")

    t0 = time.perf_counter()
    prior = load_prior(args.kind, args.checkpoint)
    print(f"prior {args.checkpoint} loaded in {time.perf_counter() - t0:.1f} s ({prior.prediction} prediction)")
    defaults = AssetSettings()
    sds = dataclasses.replace(defaults.sds, guidance_scale=args.guidance)
    settings = dataclasses.replace(defaults, steps=args.steps, sds=sds)
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    rows, records = [], []
    for i, prompt in enumerate(args.prompts):
        wrong = args.prompts[(i + 1) % len(args.prompts)]
        total = {"trained": 0, "trained_all": 0, "init": 0, "control": 0, "cpu": 0.0, "wall": 0.0, "init_many": 0}
        untrained = dataclasses.replace(settings, steps=0)
        for seed in range(args.init_seeds):
            initial = generate_asset(prior, prompt, seed, untrained)
            total["init_many"] += views_right(render_turntable(initial, args.views, elevation=args.elevation), prompt)[
                "right"
            ]
        for seed in args.seeds:
            initial = generate_asset(prior, prompt, seed, untrained)
            init_views = render_turntable(initial, args.views, elevation=args.elevation)
            asset = generate_asset(prior, prompt, seed, settings)
            views = render_turntable(asset, args.views, elevation=args.elevation)
            trained, init, control = (
                views_right(views, prompt),
                views_right(init_views, prompt),
                views_right(views, wrong),
            )
            iou = {
                e: sum(opposite_view_iou(asset.field, asset.settings.render, a, e) for a in (0, 45, 90, 135)) / 4
                for e in (0.0, 10.0)
            }
            record = {
                "prompt": prompt,
                "seed": seed,
                "wrong_prompt": wrong,
                "trained_right": trained["right"],
                "trained_all": trained["all"],
                "init_right": init["right"],
                "control_right": control["right"],
                "opposite_view_iou": {f"elevation {e:g}": round(v, 3) for e, v in iou.items()},
                "cpu_seconds": round(asset.cpu_seconds, 1),
                "wall_seconds": round(asset.wall_seconds, 1),
                "found": [check_image(v, prompt).found for v in views],
            }
            records.append(record)
            print(
                f"  {prompt!r} seed {seed}: {trained['right']}/{args.views} right ({trained['all']} with shape), "
                f"init {init['right']}, control {control['right']}; opposite-view silhouette IoU "
                f"{iou[0.0]:.2f} at elevation 0, {iou[10.0]:.2f} at 10; {asset.cpu_seconds:.1f} CPU s, "
                f"{asset.wall_seconds:.1f} wall s",
                flush=True,
            )
            total["trained"] += trained["right"]
            total["trained_all"] += trained["all"]
            total["init"] += init["right"]
            total["control"] += control["right"]
            total["cpu"] += asset.cpu_seconds
            total["wall"] += asset.wall_seconds
            if args.save_dir:
                stem = args.save_dir / f"{prompt.replace(' ', '_')}-seed{seed}"
                save_asset(asset, stem.with_suffix(".safetensors"))
                strip(views).save(f"{stem}-trained.png")
                strip(init_views).save(f"{stem}-init.png")
                strip(render_turntable(asset, args.views, elevation=args.elevation, shading="textureless")).save(
                    f"{stem}-textureless.png"
                )
        rows.append((prompt, wrong, total))
        print(f"  {prompt!r}: initial fields of {args.init_seeds} seeds: {total['init_many']} views right", flush=True)

    n = len(args.seeds) * args.views
    k = len(args.seeds)
    print(
        f"\n{args.steps} steps, {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {args.views} views at "
        f"elevation {args.elevation:g}; right = background and object colour read right by the checker"
    )
    m = args.init_seeds * args.views
    print(
        f"| prompt (held out) | trained: views right | with shape | init, same seeds | init, {args.init_seeds} seeds "
        "| control (scored against) | CPU s / asset |"
    )
    print("|---|---|---|---|---|---|---|")
    for prompt, wrong, t in rows:
        print(
            f"| {prompt} | {t['trained']}/{n} ({t['trained'] / n:.0%}) | {t['trained_all']}/{n} | "
            f"{t['init']}/{n} ({t['init'] / n:.0%}) | {t['init_many']}/{m} ({t['init_many'] / max(m, 1):.1%}) | "
            f'{t["control"]}/{n} ({t["control"] / n:.0%}; "{wrong}") | '
            f"{t['cpu'] / k:.1f} (wall {t['wall'] / k:.1f}) |"
        )
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "seeds": args.seeds, "records": records}, indent=1))


if __name__ == "__main__":
    main()
