"""Fragility and style control on the demo campaign, in one process (issue 15, items 1 and 2).

    .venv/bin/python bench/demo_fragility.py      # options: --prompts --raters --votes-per-pair --seed --threads

What the demo campaign is, without the web server: the committed demo checkpoints (demo_models/mmdit-demo,
mmdit-demo-step2000, unet-baseline) generate the demo run's images (seed_demo's settings: 28 steps, guidance
4, 32x32, seeds 0 and 1) for --prompts demo prompts; the simulated crowd's raters (evalsite.crowd.behaviour:
careful and casual kinds, the pixel judge generation.demo_judge) answer prompt following and aesthetics on
every same-prompt, same-seed pair of images, left and right alternating. The bad kinds of the crowd are left
out here, as quality control leaves them out on the dashboard. Then, per criterion, exactly what the
dashboard shows: the decisions (analysis.decisions; the top model by the site's rule, the votes replayed in the
order they were cast), their fragility (analysis.fragility.decision_fragility, "certified" by that rule, with the
older Bonferroni rule's figure beside it)
and the leaderboard with and without style control on the images' real pixel covariates
(analysis.style_control.fit_style_control; the generation time is the model's batch time per image, so it is
left out as explained by the model). Timings of each step are printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.decisions import campaign_decisions, replay_top_evidence, top_rule_settings  # noqa: E402
from analysis.fragility import decision_fragility  # noqa: E402
from analysis.image_style import image_covariates  # noqa: E402
from analysis.style_control import fit_style_control  # noqa: E402
from analysis.votes import count_pairs, vote_sequence  # noqa: E402
from evalsite.crowd.behaviour import decide, draw_profile  # noqa: E402
from generation import demo_domain  # noqa: E402
from generation.demo_judge import judge_image  # noqa: E402
from generation.mmdit.pipeline import InHousePipeline  # noqa: E402
from generation.unet.pipeline import UNetBaselinePipeline  # noqa: E402

CHECKPOINTS = ("mmdit-demo", "mmdit-demo-step2000", "unet-baseline")  # folders of demo_models/ = model names
SETTINGS = {"steps": 28, "guidance_scale": 4.0}  # evalsite/demo seed_demo's DEMO_RUN_SETTINGS (32x32)
SEEDS = (0, 1)
CRITERIA = ("prompt_following", "aesthetics")
SITE_TOP_RULE = "rebalanced_ties_rho8"  # evalsite.dashboards.results.CAMPAIGN_TOP_RULE (this bench runs without Django)


def generate(name: str, prompts: list[str]) -> tuple[list[np.ndarray], float]:
    path = ROOT / "demo_models" / name
    recipe = json.loads((path / "config.json").read_text()).get("recipe") or {}
    shift = float((recipe.get("sampler_defaults") or {}).get("shift", 1.0))  # as seed_demo's sampler settings
    texts = [p for p in prompts for _ in SEEDS]
    seeds = [s for _ in prompts for s in SEEDS]
    start = time.perf_counter()
    if name == "unet-baseline":
        pipe = UNetBaselinePipeline.from_checkpoint(path)
        images = pipe(texts, seeds, steps=SETTINGS["steps"], guidance_scale=SETTINGS["guidance_scale"])
    else:
        pipe = InHousePipeline.from_checkpoint(path)
        images = pipe(texts, seeds, steps=SETTINGS["steps"], guidance_scale=SETTINGS["guidance_scale"], shift=shift)
    return [np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in images], (
        time.perf_counter() - start
    ) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=40, help="demo prompts (the demo set has 40)")
    parser.add_argument("--raters", type=int, default=7, help="careful and casual raters")
    parser.add_argument("--votes-per-pair", type=int, default=2, help="raters per image pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    rows = demo_domain.demo_prompt_rows()
    chosen = sorted(rng.choice(len(rows), min(args.prompts, len(rows)), replace=False))
    prompts = [rows[i]["text"] for i in chosen]
    started = time.perf_counter()
    images, covariates, seconds_per_image = {}, {}, {}
    for model in CHECKPOINTS:
        pictures, seconds_per_image[model] = generate(model, prompts)
        for (prompt_index, seed), picture in zip(itertools.product(range(len(prompts)), SEEDS), pictures, strict=True):
            token = f"{model}/{prompt_index}/{seed}"
            images[token] = (picture, prompts[prompt_index])
            covariates[token] = {**image_covariates(picture), "generation_seconds": seconds_per_image[model]}
    print(f"generated {len(images)} images of {len(prompts)} prompts in {time.perf_counter() - started:.0f} s")

    started = time.perf_counter()
    scores = {token: judge_image(picture, prompt) for token, (picture, prompt) in images.items()}
    kinds = ["careful" if n % 10 < 7 else "casual" for n in range(args.raters)]
    raters = [draw_profile(kind, rng) for kind in kinds]
    votes = []
    flip = itertools.count()
    for prompt_index, seed in itertools.product(range(len(prompts)), SEEDS):
        for a, b in itertools.combinations(CHECKPOINTS, 2):
            left, right = (a, b) if next(flip) % 2 else (b, a)
            image_left, image_right = f"{left}/{prompt_index}/{seed}", f"{right}/{prompt_index}/{seed}"
            for r in rng.choice(len(raters), args.votes_per_pair, replace=False):
                for criterion in CRITERIA:
                    answer = decide(raters[r], scores[image_left], scores[image_right], criterion, rng)
                    winner = {"left": "model_a", "right": "model_b"}.get(answer, answer)
                    votes.append(
                        {
                            "criterion": criterion,
                            "model_a": left,
                            "model_b": right,
                            "winner": winner,
                            "rater": f"{kinds[r]}-{r}",
                            "image_left": image_left,
                            "image_right": image_right,
                        }
                    )
    votes_table = pd.DataFrame(votes)
    covariate_table = pd.DataFrame.from_dict(covariates, orient="index")
    print(f"{len(votes_table):,} votes by {args.raters} simulated raters in {time.perf_counter() - started:.1f} s\n")

    for criterion in CRITERIA:
        counted = votes_table[votes_table.criterion == criterion]
        pairs = count_pairs(counted)
        ordered = vote_sequence(counted, pairs.models)  # the votes in the order they were cast
        evidence = replay_top_evidence(*ordered, pairs.n_models, **top_rule_settings(SITE_TOP_RULE))
        decisions = campaign_decisions(
            pairs.half_wins(), model_names=pairs.models, project=False, top_evidence=evidence
        )
        started = time.perf_counter()
        fragility = decision_fragility(pairs, top_rule=SITE_TOP_RULE, ordered=ordered)
        fragility_seconds = time.perf_counter() - started
        stateless = next(d for d in decision_fragility(pairs) if d["kind"] == "top_model_certified")
        top = decisions["top_model"]
        print(f"== {criterion}: {len(counted):,} counted votes; top model {top['model_name']},")
        print(
            f"   certified by the site's rule ({SITE_TOP_RULE}, replayed in vote order): {top['certified']} "
            f"(confidence {top['confidence']:.3f}); by the older Bonferroni rule: {top['bonferroni']['certified']} "
            f"(confidence {top['bonferroni']['confidence']:.3f})"
        )
        print(f"   fragility ({fragility_seconds:.2f} s, {sum(d['refits'] for d in fragility)} refits):")
        print(f"   {'decision':<52} {'holds':>5} {'first-order':>11} {'confirmed':>9} {'share':>6}")
        for d in fragility:
            approx = "–" if d["approximate"] is None else str(d["approximate"])
            confirmed = "–" if d["votes_to_change"] is None else str(d["votes_to_change"])
            share = "–" if d["share"] is None else f"{100 * d['share']:.1f}%"
            print(f"   {d['claim']:<52} {d['holds']!s:>5} {approx:>11} {confirmed:>9} {share:>6}")
            if d["removed"]:
                print(f"   {'':<4}remove: {'; '.join(r['text'] for r in d['removed'])}")
        approx = "–" if stateless["approximate"] is None else str(stateless["approximate"])
        confirmed = "–" if stateless["votes_to_change"] is None else str(stateless["votes_to_change"])
        print(f"   the same claim by the older Bonferroni rule (what the card showed before): {stateless['claim']},")
        print(f"   first-order {approx}, confirmed {confirmed}, {stateless['refits']} refits")
        if stateless["removed"]:
            print(f"   {'':<4}remove: {'; '.join(r['text'] for r in stateless['removed'])}")
        started = time.perf_counter()
        style = fit_style_control(counted, covariate_table)
        style_seconds = time.perf_counter() - started
        print(f"   style control ({style_seconds:.2f} s), {style.confidence:.0%} {style.intervals} intervals:")
        print(f"   {'model':<16} {'without control':>28} {'rank':>4}   {'with control':>28} {'rank':>4}")
        for model, row in style.leaderboard.sort_values("plain_score", ascending=False).iterrows():
            plain = f"{row.plain_score:7.1f} [{row.plain_lower:7.1f}, {row.plain_upper:7.1f}]"
            controlled = f"{row.score:7.1f} [{row.lower:7.1f}, {row.upper:7.1f}]"
            print(f"   {model:<16} {plain:>28} {int(row.plain_rank):>4}   {controlled:>28} {int(row['rank']):>4}")
        for name, row in style.effects.iterrows():
            print(
                f"   effect {name:<14} {row.coefficient:+.3f} [{row.lower:+.3f}, {row.upper:+.3f}] log-odds per SD"
                f" ({row.elo_per_sd:+.0f} score points), p = {row.p_value:.3g}"
            )
        for name, reason in style.left_out.items():
            print(f"   left out {name}: {reason}")
        print()


if __name__ == "__main__":
    main()
