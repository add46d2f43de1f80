"""How well the OCR typography metric reads: character error rate on rendered text and on demo images.

    .venv/bin/python bench/ocr_typography.py                 # all three parts, about 15 minutes on 2 busy cores
    .venv/bin/python bench/ocr_typography.py --parts rendered --json bench/results/ocr.json

1. rendered: words and phrases drawn with real TrueType fonts (DejaVu from fonts-dejavu-core) at several pixel
   sizes, black on white and coloured; OCR (analysis.typography.read_text) against the drawn text.
2. demo-truth: demo-domain word drawings (32 px, 3x5 bitmap font), read by OCR with and without `flat` and by
   the demo's pixel checker (generation.checker), which knows the font: how often each reads the word, and
   how often they agree. The checker is the baseline measured in the same run.
2b. scene: the same texts in bold DejaVu (20-33 px, dark blue) on 256 px images with a grey gradient and a
   coloured ellipse below the text, closer to a generated picture that shows a sign: OCR on the whole image,
   for each Tesseract page segmentation mode.
3. demo-run: word prompts (held-out) drawn by the committed demo checkpoints (generation pipelines, 10 steps)
   and by four synthetic "models" of known quality (the right drawing; one letter wrong; blurred and noisy;
   nothing drawn); per model OCR's and the checker's error rate and exact-word rate, and the Spearman rank
   correlation of OCR's per-model error rate with the checker's.

CER: edit distance / requested length, per image clipped at 1, then averaged (analysis.typography).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from analysis import typography as t
from generation import demo_domain
from generation.checker import check_image

ROOT = Path(__file__).resolve().parent.parent
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
SIZES = (10, 14, 20, 32)  # font size in pixels
TEXTS = ("OPEN", "SALE", "Hello", "CAFE 24", "Good Morning", "Pizza Place", "NO PARKING", "2024")
COLOURS = [("black", "white"), ((200, 30, 30), (250, 240, 200))]  # (text, background)


def render_text(text: str, font_file: str, size: int, colour, background):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT_DIR / font_file), size)
    left, top, right, bottom = font.getbbox(text)
    pad = max(size // 2, 4)
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), background)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=colour)
    return image


def summary(scores: t.TypographyScores) -> dict:
    return {"n": scores.n, "cer": round(scores.mean_cer, 4), "exact": round(scores.exact_rate, 4)}


def rendered_part() -> dict:
    print("\n1. Rendered text: OCR character error rate (exact-word rate), per font size and font")
    fonts = [f for f in FONTS if (FONT_DIR / f).is_file()]
    print(f"{'size px':>8} " + " ".join(f"{f.removesuffix('.ttf'):>22}" for f in fonts) + f" {'all fonts':>18}")
    out: dict = {"texts": list(TEXTS), "colours": [str(c) for c in COLOURS], "by_size": {}}
    everything = []
    for size in SIZES:
        cells, row = [], {}
        for font in fonts:
            items = [(render_text(x, font, size, c, b), x) for x in TEXTS for c, b in COLOURS]
            scores = t.typography_scores([i for i, _ in items], [x for _, x in items])
            row[font] = summary(scores) | {
                "misread": [(x, r) for (_, x), r in zip(items, scores.readings, strict=True) if r != x][:10]
            }
            everything.append(scores)
            cells.append(f"{scores.mean_cer:10.3f} ({scores.exact_rate * 100:5.1f}%)")
        n = sum(s.n for s in everything[-len(fonts) :])
        cer = float(np.mean([min(c, 1.0) for s in everything[-len(fonts) :] for c in s.cer]))
        exact = float(np.mean([e for s in everything[-len(fonts) :] for e in s.exact]))
        print(f"{size:>8} " + " ".join(f"{c:>22}" for c in cells) + f" {cer:8.3f} ({exact * 100:5.1f}%)", flush=True)
        out["by_size"][size] = row | {"all": {"n": n, "cer": round(cer, 4), "exact": round(exact, 4)}}
    all_cer = [min(c, 1.0) for s in everything for c in s.cer]
    out["all"] = {"n": len(all_cer), "cer": round(float(np.mean(all_cer)), 4)}
    out["all"]["exact"] = round(float(np.mean([e for s in everything for e in s.exact])), 4)
    print(f"all {out['all']['n']} images: CER {out['all']['cer']:.3f}, exact-word {out['all']['exact'] * 100:.1f}%")
    return out


def scene_images(n: int) -> list[tuple]:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        gradient = np.linspace(180, 250, 256)[None, :, None] * np.ones((256, 1, 3))  # (256, 256, 3)
        image = Image.fromarray(gradient.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        box = [int(rng.integers(0, 100)), int(rng.integers(150, 180)), int(rng.integers(150, 250)), 250]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans-Bold.ttf"), int(rng.integers(20, 34)))
        draw.text((int(rng.integers(5, 40)), int(rng.integers(10, 100))), text, font=font, fill=(20, 20, 60))
        out.append((image, text))
    return out


def scene_part(n: int = 24) -> dict:
    print(f"\n2b. Text in a 256 px scene ({n} images: gradient, an ellipse, bold DejaVu 20-33 px), per page mode")
    items = scene_images(n)
    out = {}
    for psm, meaning in ((7, "one line (the default)"), (6, "one block"), (11, "sparse text"), (3, "automatic")):
        scores = t.typography_scores([i for i, _ in items], [x for _, x in items], psm=psm)
        out[psm] = summary(scores) | {"readings": scores.readings[:8]}
        print(f"  psm {psm:2} {meaning:22} CER {scores.mean_cer:.3f}   exact-word {scores.exact_rate * 100:5.1f}%")
    return out


def checker_scores(images, specs) -> t.TypographyScores:
    """The pixel checker's reading of each word drawing, in the same form as OCR's."""
    readings = [str(check_image(i, s).found["word"]) for i, s in zip(images, specs, strict=True)]
    words = [s.word for s in specs]
    return t.TypographyScores(
        readings=readings,
        cer=[t.character_error_rate(r, w) for r, w in zip(readings, words, strict=True)],
        exact=[t.exact_word_match(r, w) for r, w in zip(readings, words, strict=True)],
    )


def agreement(a: t.TypographyScores, b: t.TypographyScores) -> dict:
    pairs = list(zip(a.exact, b.exact, strict=True))
    return {
        "both_right": sum(x and y for x, y in pairs),
        "ocr_only": sum(x and not y for x, y in pairs),
        "checker_only": sum(y and not x for x, y in pairs),
        "neither": sum(not x and not y for x, y in pairs),
        "same_reading": sum(ra == rb for ra, rb in zip(a.readings, b.readings, strict=True)),
    }


def demo_truth_part(n: int) -> dict:
    print(f"\n2. Demo-domain word drawings ({n} images, 32 px, train + held-out prompts): OCR vs the pixel checker")
    rng = np.random.default_rng(0)
    specs = demo_domain.all_specs("all", ["word"])
    chosen = [specs[i] for i in rng.choice(len(specs), size=min(n, len(specs)), replace=False)]
    images = [demo_domain.render(s, rng) for s in chosen]
    words = [s.word for s in chosen]
    start = time.perf_counter()
    flat = t.typography_scores(images, words, flat=True)
    seconds = time.perf_counter() - start
    colour = t.typography_scores(images, words, flat=False)
    checker = checker_scores(images, chosen)
    out = {"n": len(chosen), "ocr_flat": summary(flat), "ocr_colour": summary(colour), "checker": summary(checker)}
    out["ocr_seconds_per_image"] = round(seconds / len(chosen), 3)
    out["agreement_flat_vs_checker"] = agreement(flat, checker)
    for name, s in (
        ("OCR, flat (used for demo prompts)", flat),
        ("OCR, in colour (no flat)", colour),
        ("pixel checker", checker),
    ):
        print(f"  {name:36} CER {s.mean_cer:.3f}   exact-word {s.exact_rate * 100:5.1f}%")
    a = out["agreement_flat_vs_checker"]
    print(
        f"  word read right by both {a['both_right']}, OCR only {a['ocr_only']}, checker only {a['checker_only']},"
        f" neither {a['neither']}; identical readings {a['same_reading']} of {len(chosen)}"
    )
    misread: dict[str, list[str]] = {}
    for w, r, e in zip(words, flat.readings, flat.exact, strict=True):
        if not e:
            misread.setdefault(w, []).append(r)
    per_word = {
        w: [words.count(w), sum(e for x, e in zip(words, flat.exact, strict=True) if x == w)] for w in set(words)
    }
    print(
        "  OCR (flat) per word, right/drawn: " + ", ".join(f"{w} {r}/{n_}" for w, (n_, r) in sorted(per_word.items()))
    )
    out["per_word"] = per_word
    out["misread"] = {w: rs[:5] for w, rs in misread.items()}
    print(f"  OCR time {out['ocr_seconds_per_image']} s per image (one tesseract process per image, one thread)")
    return out


def synthetic_models(specs, seeds: int) -> dict[str, list[np.ndarray]]:
    """Ground-truth drawings, one letter changed, blurred + noisy, and blank: four writers of known quality."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    letters = sorted(demo_domain.FONT)
    models: dict[str, list[np.ndarray]] = {"truth": [], "one letter wrong": [], "blurred + noise": [], "blank": []}
    for spec in specs:
        for _ in range(seeds):
            right = demo_domain.render(spec, rng)
            models["truth"].append(right)
            i = int(rng.integers(len(spec.word)))
            other = letters[(letters.index(spec.word[i]) + 1 + int(rng.integers(len(letters) - 1))) % len(letters)]
            wrong = demo_domain.WordSpec(spec.word[:i] + other + spec.word[i + 1 :], spec.colour, spec.background)
            models["one letter wrong"].append(demo_domain.render(wrong, rng))
            blurred = ndimage.gaussian_filter(right.astype(np.float32), sigma=(0.8, 0.8, 0))
            noisy = np.clip(blurred + rng.normal(0, 30.0, right.shape), 0, 255).astype(np.uint8)
            models["blurred + noise"].append(noisy)
            blank = np.empty_like(right)
            blank[:] = demo_domain.PALETTE[spec.background]
            models["blank"].append(blank)
    return models


def checkpoint_images(path: Path, specs, seeds: int, steps: int) -> list[np.ndarray]:
    from generation.contract import CONFIG_FILE, UNET_BASELINE_FORMAT

    prompts = [s.caption for s in specs for _ in range(seeds)]
    seed_list = [i for _ in specs for i in range(seeds)]
    if json.loads((path / CONFIG_FILE).read_text()).get("format") == UNET_BASELINE_FORMAT:
        from generation.unet.pipeline import UNetBaselinePipeline

        images = UNetBaselinePipeline.from_checkpoint(path)(prompts, seed_list, steps=steps, guidance_scale=4.0)
    else:
        from generation.mmdit.pipeline import InHousePipeline

        pipe = InHousePipeline.from_checkpoint(path)
        images = pipe(prompts, seed_list, steps=steps, guidance_scale=4.0, shift=1.0, batch_size=64)
    return [np.asarray(i.convert("RGB")) if hasattr(i, "convert") else np.asarray(i) for i in images]


def demo_run_part(seeds: int, steps: int, checkpoints: list[Path]) -> dict:
    from scipy.stats import spearmanr

    specs = demo_domain.all_specs("heldout", ["word"])
    print(
        f"\n3. Demo run: {len(specs)} held-out word prompts x {seeds} seeds per model; OCR (flat) vs the pixel checker"
    )
    models = {p.name: checkpoint_images(p, specs, seeds, steps) for p in checkpoints}
    models |= synthetic_models(specs, seeds)
    words = [s.word for s in specs for _ in range(seeds)]
    expanded = [s for s in specs for _ in range(seeds)]
    print(
        f"  {'model':24} {'OCR CER':>8} {'OCR exact':>10} {'checker CER':>12} {'checker exact':>14}"
        f" {'same reading':>13}"
    )
    out: dict = {"prompts": len(specs), "seeds": seeds, "steps": steps, "models": {}}
    for name, images in models.items():
        ocr = t.typography_scores(images, words, flat=True)
        checker = checker_scores(images, expanded)
        a = agreement(ocr, checker)
        out["models"][name] = {"ocr": summary(ocr), "checker": summary(checker), "agreement": a}
        out["models"][name]["ocr_readings"] = ocr.readings[:8]
        print(
            f"  {name:24} {ocr.mean_cer:8.3f} {ocr.exact_rate * 100:9.1f}% {checker.mean_cer:12.3f}"
            f" {checker.exact_rate * 100:13.1f}% {a['same_reading']:>6}/{len(images)}",
            flush=True,
        )
    names = list(out["models"])
    ocr_cer = [out["models"][m]["ocr"]["cer"] for m in names]
    checker_cer = [out["models"][m]["checker"]["cer"] for m in names]
    rho = float(spearmanr(ocr_cer, checker_cer).statistic)
    out["spearman_ocr_vs_checker_cer"] = round(rho, 3)
    print(f"  Spearman rho of the per-model error rates, OCR vs checker, over {len(names)} models: {rho:.3f}")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="rendered,scene,demo-truth,demo-run", help="comma-separated parts to run")
    p.add_argument("--demo-images", type=int, default=96, help="demo word drawings in part 2")
    p.add_argument("--seeds", type=int, default=1, help="images per held-out word prompt in part 3")
    p.add_argument("--steps", type=int, default=10, help="sampling steps of the demo checkpoints in part 3")
    p.add_argument(
        "--checkpoints",
        type=Path,
        nargs="*",
        default=[ROOT / "demo_models" / n for n in ("mmdit-demo", "mmdit-demo-step2000", "unet-baseline")],
    )
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = [x.strip() for x in args.parts.split(",")]
    import torch

    torch.set_num_threads(1)
    print(f"engine: {t.tesseract_version()} (psm {t.DEFAULT_PSM}, upscaled to >= {t.DEFAULT_MIN_HEIGHT} px)")
    start = time.perf_counter()
    results: dict = {"engine": t.tesseract_version()}
    if "rendered" in parts:
        results["rendered"] = rendered_part()
    if "scene" in parts:
        results["scene"] = scene_part()
    if "demo-truth" in parts:
        results["demo_truth"] = demo_truth_part(args.demo_images)
    if "demo-run" in parts:
        results["demo_run"] = demo_run_part(args.seeds, args.steps, [c for c in args.checkpoints if c.exists()])
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"\n{results['seconds']} s in all")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
