"""Style control on simulated votes where one model wins only through a covariate (issue 15, item 1).

    .venv/bin/python bench/style_control.py      # options: --votes --effect --shift --seed

Three models of equal true strength; the images of "bright" are brighter by --shift standard deviations, and
raters prefer the brighter image by --effect log-odds per unit of brightness (analysis.simulate.
simulate_style_votes). Prints the leaderboard without and with style control side by side
(analysis.style_control.fit_style_control, sandwich 95% intervals) and the brightness effect. The baseline
in the same run is the plain fit: its "bright" lead is what style control should remove.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.simulate import simulate_style_votes  # noqa: E402
from analysis.style_control import fit_style_control  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=6000)
    parser.add_argument("--effect", type=float, default=0.6, help="log-odds per unit of brightness")
    parser.add_argument("--shift", type=float, default=1.0, help="how much brighter 'bright' is, in SDs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    strengths = {"alpha": 0.0, "bright": 0.0, "gamma": 0.0}
    votes, covariates = simulate_style_votes(
        strengths, {"bright": args.shift}, args.effect, args.votes, covariate="brightness", rng=args.seed
    )
    started = time.perf_counter()
    result = fit_style_control(votes, covariates)
    seconds = time.perf_counter() - started

    print(f"{len(votes):,} simulated votes, 3 models of equal true strength; 'bright' is {args.shift} SD brighter,")
    print(f"raters prefer brighter images by {args.effect} log-odds per SD. Fit: {seconds:.2f} s.\n")
    table = result.leaderboard
    print(f"{'model':<8} {'without control (95% CI)':>28} {'rank':>5}   {'with control (95% CI)':>28} {'rank':>5}")
    for model, row in table.sort_values("plain_score", ascending=False).iterrows():
        plain = f"{row.plain_score:7.1f} [{row.plain_lower:7.1f}, {row.plain_upper:7.1f}]"
        controlled = f"{row.score:7.1f} [{row.lower:7.1f}, {row.upper:7.1f}]"
        print(f"{model:<8} {plain:>28} {int(row.plain_rank):>5}   {controlled:>28} {int(row['rank']):>5}")
    pooled_sd = float(covariates["brightness"].std(ddof=0))
    print("\ncovariate effects (log-odds per SD of the covariate over the images shown):")
    for name, row in result.effects.iterrows():
        print(
            f"  {name:<12} {row.coefficient:+.3f} [{row.lower:+.3f}, {row.upper:+.3f}]  "
            f"({row.elo_per_sd:+.1f} Elo per SD; true {args.effect * pooled_sd:+.3f})"
        )
    lead_plain = table.loc["bright", "plain_score"] - table.drop("bright")["plain_score"].max()
    lead_controlled = table.loc["bright", "score"] - table.drop("bright")["score"].max()
    print(
        f"\n'bright' lead over the best other model: {lead_plain:+.1f} Elo without control, {lead_controlled:+.1f} with"
    )


if __name__ == "__main__":
    main()
