"""The top-model rules under the null: how often the e-process of a truly best model reaches 1/alpha.

    .venv/bin/python bench/top_rule_null.py [--rules rebalanced_ties,rebalanced_ties_rho8] [--campaigns 300]
        [--votes 1500] [--strengths 0,0,-1] [--ties 0.1] [--policy active|uniform] [--steer rule|stateless]

Every campaign runs through analysis.simulate.simulate_campaign (the engine's pair choice, a look every 25
votes, TOP_EVIDENCE_LOOK_EVERY) to its last vote, never stopping at a certificate, and the tracker's log
e-values against "b is the best" are read at every look for each model b that is truly best (the strengths'
maximum, tied).
Ville's inequality bounds the share of those e-processes that ever reach 1/alpha by alpha = 5%, for any
fixed mixture prior; what this measures is how the large-sample Gaussian approximation behind them holds,
where the engine chases the tied leaders (steered by the rule's own evidence by default, the harder case).
Seeds [7, campaign]: every rule sees the same campaigns up to its first look that differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.decisions import KEPT_RULES, TOP_EVIDENCE_LOOK_EVERY  # noqa: E402
from analysis.simulate import simulate_campaign  # noqa: E402

ALPHA = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", default="rebalanced_ties,rebalanced_ties_rho8")
    parser.add_argument("--campaigns", type=int, default=300)
    parser.add_argument("--votes", type=int, default=1500)
    parser.add_argument("--strengths", default="0,0,-1", help="true BT strengths; the maximum may be tied")
    parser.add_argument("--ties", type=float, default=0.1)
    parser.add_argument("--policy", choices=("active", "uniform"), default="active")
    parser.add_argument("--steer", choices=("rule", "stateless"), default="rule")
    args = parser.parse_args()
    strengths = np.array([float(x) for x in args.strengths.split(",")])
    best = np.flatnonzero(strengths == strengths.max())
    print(
        f"top-model rules under the null: strengths {strengths.tolist()} ({len(best)} tied best), {args.ties:.0%} "
        f"ties, {args.policy} pairs steered by the {args.steer} evidence, {args.campaigns} campaigns of "
        f"{args.votes} votes, alpha {ALPHA}"
    )
    print("| rule | true-best e-processes that reached 1/alpha | campaigns certifying any model | first crossings |")
    print("|---|---|---|---|")
    for rule in args.rules.split(","):
        if rule not in KEPT_RULES:
            parser.error(f"unknown rule {rule!r}; choose from {KEPT_RULES}")
        started = time.perf_counter()
        crossed, certified, first = 0, 0, []
        for campaign in range(args.campaigns):
            run = simulate_campaign(
                strengths,
                np.random.default_rng([7, campaign]),
                policy=args.policy,
                tie_rate=args.ties,
                max_votes=args.votes,
                look_every=TOP_EVIDENCE_LOOK_EVERY,
                rule=rule,
                steer_by_rule=args.steer == "rule",
                run_to_the_end=True,
            )
            above = np.array(run.top_evidence)[:, best] >= np.log(1.0 / ALPHA)  # (looks, tied best)
            crossed += int(above.any(axis=0).sum())
            certified += run.certified_at is not None
            if above.any():
                first.append(TOP_EVIDENCE_LOOK_EVERY * (1 + int(np.argmax(above.any(axis=1)))))
        share = crossed / (args.campaigns * len(best))
        print(
            f"| {rule} | {crossed} / {args.campaigns * len(best)} = {share:.1%} | {certified / args.campaigns:.1%} "
            f"| {sorted(first)[:8]} ({time.perf_counter() - started:.0f} s) |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
