"""Adaptive campaigns: how many votes the engine saves over uniform pairs, and what it costs in errors.

    .venv/bin/python bench/adaptive_campaigns.py [--reps N] [--cases 4,4e,8c,20]
                                                 [--rules bonferroni,rebalanced_ties,rebalanced_ties_rho8]
                                                 [--policies uniform,active] [--certify-only]
                                                 [--steer stateless|rule] [--jobs J] [--save FILE]

Defaults: 30 campaigns per case and policy, cases 4, 4e and 8c (a few minutes on one free core). The
20-model case is opt-in (--cases 20): its uniform campaigns need ~40,000 votes each (~15 s apiece).
Reported figures (docs/adaptive-campaigns.md): --reps 200 --cases 4,4e,8c and --reps 60 --cases 20;
issue 15's stopping rules side by side: --reps 200 --cases 4,4e --certify-only and --reps 100 --cases 8c
--certify-only, --rules bonferroni,rebalanced_ties,rebalanced_ties_rho8 (--certify-only: each campaign
stops at certification, so the "votes to separate" columns are left empty).

Simulated raters follow known Bradley-Terry strengths with 10% ties (analysis.simulate.vote_model:
E[score] = sigmoid(difference), so the ties-as-half-wins BT model is the truth). Every campaign runs
through the same functions the site uses: choose_model_pair picks every pair, campaign_decisions is
checked every 25 votes (BT refit with a warm start) and stops the campaign when it certifies a top model
(anytime-valid, alpha = 0.05). The stopping rules for the top model (analysis.decisions.TOP_RULES), on
campaigns with the same seeds: 'bonferroni' (the stateless rule, each rival at alpha / (K-1)),
'rebalanced' (one e-process per model kept across looks, analysis.confidence_sequences.TopModelEvidence),
'rebalanced_ties' (the same with each vote's variance from the observed ties,
analysis.bradley_terry.bt_covariance_observed_ties) and 'rebalanced_ties_rho8' (the same with the
mixtures' prior precision 8 instead of 20: the rule the site runs). The engine focuses its pairs by the
stateless evidence whatever the rule, as the site's engine does (--steer stateless, the default), so
under uniform pairs and under the engine alike the campaigns of one seed see the same votes until the
first rule stops; --steer rule focuses by the rule's own evidence instead.
Per case, policy ('uniform' pairs; the 'active' engine) and rule it reports:

  votes to certify     median and 90th percentile of votes until the top model is certified
  wrong winner         share of campaigns that certified a model other than the true best
  cover any / plain    coverage of the 95% intervals of all pairwise score differences at the stopping
                       time: the anytime-valid intervals campaign_decisions reports, and plain Wald
                       intervals (d_hat +- 1.96 sd) for comparison
  needed est/actual    median of (votes-still-needed estimated at the look nearest half the eventual
                       stopping time) / (votes it actually took from there); also pooled over the looks
                       at 25%, 50% and 75% of the stopping time
  votes to separate    votes until the leader's plain 95% per-model interval (Fisher, sum-to-zero, as
                       on the leaderboard) clears the runner-up's, and how often that leader was wrong
                       (issue 6). Campaigns run on after certification until this happens.
and the ratios uniform / engine of median and 90th-percentile votes, and bonferroni / each other rule per
policy: of the medians, 90th percentiles and means, and paired (the median over seeds of the two rules' votes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.bradley_terry import bt_covariance  # noqa: E402
from analysis.confidence_sequences import MIXTURE_PRECISION  # noqa: E402
from analysis.decisions import campaign_decisions, top_rule_settings  # noqa: E402
from analysis.simulate import STOPPING_RULES, simulate_campaign  # noqa: E402

ALPHA = 0.05
TIE_RATE = 0.1
MIN_VOTES_PER_PAIR = 2
LOOK_EVERY = 25
MAX_VOTES = 200_000

# True strengths (natural-log BT units; centred before use). See docs/adaptive-campaigns.md for why.
CASES = {
    # 4 models like the notes': a clear leader 0.42 ahead of the second, the other two far behind.
    # With the notes' own rule (uniform pairs, plain z = 2.6) these need a median of ~525 votes as theirs did.
    "4": np.array([0.0, -0.42, -1.62, -2.82]),
    # 4 models, evenly spaced (a harder shape for any engine: the third model is close too)
    "4e": np.array([0.0, -0.36, -0.72, -1.08]),
    # 20 models evenly spaced 0.18 apart (the notes' rule needs ~21,000 uniform votes; theirs 18,825)
    "20": -0.18 * np.arange(20),
    # our own: 8 models with a close top two (0.25 apart), the rest spread below
    "8c": np.array([0.0, -0.25, -0.75, -1.0, -1.25, -1.5, -1.75, -2.0]),
}
CASE_TITLES = {
    "4": "4 models (0, -0.42, -1.62, -2.82)",
    "4e": "4 models evenly spaced (0, -0.36, -0.72, -1.08)",
    "20": "20 models, 0.18 apart",
    "8c": "8 models, close top two (0, -0.25, -0.75, ... -2.0)",
}
POLICIES = ("uniform", "active")
RULES = STOPPING_RULES


def _wald_coverage(wins: np.ndarray, theta: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    cov = bt_covariance(wins, theta)
    iu = np.triu_indices(len(theta), 1)
    d_hat = (theta[:, None] - theta[None, :])[iu]
    d_true = (truth[:, None] - truth[None, :])[iu]
    sd = np.sqrt(np.diag(cov)[iu[0]] + np.diag(cov)[iu[1]] - 2 * cov[iu])
    return int((np.abs(d_hat - d_true) <= 1.959963984540054 * sd).sum()), len(d_hat)


def one_campaign(args: tuple) -> dict:
    """Run one seeded campaign and measure it (module-level so a process pool can run it)."""
    case, policy, rule, until_separated, seed_seq, steer_by_rule = args
    strengths = CASES[case] - CASES[case].mean()
    rng = np.random.default_rng(seed_seq)
    run = simulate_campaign(
        strengths,
        rng,
        policy=policy,
        alpha=ALPHA,
        min_votes_per_pair=MIN_VOTES_PER_PAIR,
        tie_rate=TIE_RATE,
        look_every=LOOK_EVERY,
        max_votes=MAX_VOTES,
        until_separated=until_separated,
        keep_looks=True,
        rule=rule,
        steer_by_rule=steer_by_rule,
    )
    best = int(np.argmax(strengths))
    out = {
        "certified_at": run.certified_at,
        "wrong": run.certified_at is not None and run.certified_model != best,
        "separated_at": run.separated_at,
        "separated_wrong": run.separated_at is not None and run.separated_model != best,
    }
    if run.certified_at is None:
        return out
    # coverage at the stopping time: anytime-valid intervals as reported, and plain Wald intervals
    votes_at = [v for v, _, _ in run.looks]
    stop = votes_at.index(run.certified_at)
    _, wins, theta = run.looks[stop]
    iu = np.triu_indices(len(strengths), 1)
    d_true = (strengths[:, None] - strengths[None, :])[iu]
    lower = np.array(run.final_decisions["intervals"]["lower"])[iu]
    upper = np.array(run.final_decisions["intervals"]["upper"])[iu]
    out["covered_anytime"] = int(((lower <= d_true) & (d_true <= upper)).sum())
    out["covered_plain"], out["pairs"] = _wald_coverage(wins, theta, strengths)
    # votes-still-needed: estimated at looks near 25%, 50%, 75% of the stopping time, against the truth
    k = len(strengths)
    coverage_votes = MIN_VOTES_PER_PAIR * k * (k - 1) // 2
    ratios = {}
    kept = top_rule_settings(rule) if rule != "bonferroni" else None
    for frac in (0.25, 0.5, 0.75):
        target = frac * run.certified_at
        idx = int(np.argmin([abs(v - target) for v in votes_at[:stop]])) if stop > 0 else None
        if idx is None or votes_at[idx] < coverage_votes:
            continue
        votes, wins, theta = run.looks[idx]
        decision = campaign_decisions(
            wins,
            ALPHA,
            theta=theta,
            project=True,
            policy=policy,
            min_votes_per_pair=MIN_VOTES_PER_PAIR,
            top_evidence=run.top_evidence[idx] if run.top_evidence else None,
            ties=run.ties_at_looks[idx] if kept is not None and kept["tie_variance"] else None,
            top_rho=kept["rho"] if kept is not None else MIXTURE_PRECISION,
        )["top_model"]
        estimate = decision["votes_still_needed"]
        ratios[frac] = (np.inf if estimate is None else estimate) / (run.certified_at - votes)
    out["needed_ratio"] = ratios
    return out


def separation_ceiling(strengths: np.ndarray) -> float:
    """Votes ratio uniform / best fixed allocation for the issue-6 measure, knowing the true strengths.

    The leaderboard's per-model intervals are centred (sum-to-zero), so the top two only separate once
    every model's score is known well enough to pin down the mean; this is the most any engine could
    save over uniform pairs on that measure (ratio of sd_1 + sd_2 squared at the optimum allocation).
    """
    from scipy.optimize import minimize

    k = len(strengths)
    iu = np.triu_indices(k, 1)
    p = 1.0 / (1.0 + np.exp(-(strengths[:, None] - strengths[None, :])))
    weight = p * (1.0 - p)
    first, second = np.argsort(-strengths)[:2]

    def sd_sum(share: np.ndarray) -> float:
        counts = np.zeros((k, k))
        counts[iu] = share + 1e-9
        lap = -(counts + counts.T) * weight
        np.fill_diagonal(lap, -lap.sum(axis=1))
        cov = np.linalg.inv(lap + 1.0 / k) - 1.0 / k
        return float(np.sqrt(cov[first, first]) + np.sqrt(cov[second, second]))

    uniform = sd_sum(np.full(len(iu[0]), 1.0 / len(iu[0])))
    best = minimize(lambda z: sd_sum(np.exp(z) / np.exp(z).sum()), np.zeros(len(iu[0])), method="L-BFGS-B")
    return (uniform / best.fun) ** 2


def summarise(results: list[dict]) -> dict:
    done = [r for r in results if r["certified_at"] is not None]
    votes = np.array([r["certified_at"] for r in done], dtype=float)
    sep = np.array([r["separated_at"] for r in results if r["separated_at"] is not None], dtype=float)
    half = [r["needed_ratio"][0.5] for r in done if 0.5 in r["needed_ratio"]]
    pooled = [x for r in done for x in r["needed_ratio"].values()]
    pairs = sum(r["pairs"] for r in done)
    return {
        "reps": len(results),
        "unfinished": len(results) - len(done),
        "median": float(np.median(votes)) if len(votes) else np.nan,
        "mean": float(np.mean(votes)) if len(votes) else np.nan,
        "stops": [r["certified_at"] for r in results],  # per campaign, in seed order (None: not certified)
        "p90": float(np.percentile(votes, 90)) if len(votes) else np.nan,
        "wrong": sum(r["wrong"] for r in results) / len(results),
        "cover_anytime": sum(r["covered_anytime"] for r in done) / max(pairs, 1),
        "cover_plain": sum(r["covered_plain"] for r in done) / max(pairs, 1),
        "needed_half": float(np.median(half)) if half else np.nan,
        "needed_pooled": float(np.median(pooled)) if pooled else np.nan,
        "sep_median": float(np.median(sep)) if len(sep) else np.nan,
        "sep_wrong": sum(r["separated_wrong"] for r in results) / len(results),
        "sep_unfinished": len(results) - len(sep),
    }


def paired_ratio(old: list, new: list) -> float:
    """Median over campaigns of (votes under the old rule) / (votes under the new one), the same seed for both:
    under the engine (steered by the stateless evidence) and under uniform pairs alike, both rules see the very
    same votes until the first of them stops. Campaigns either rule left uncertified are left out."""
    both = [(o, n) for o, n in zip(old, new, strict=True) if o is not None and n is not None]
    return float(np.median([o / n for o, n in both])) if both else np.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30, help="campaigns per case and policy (default 30)")
    parser.add_argument("--cases", default="4,4e,8c", help=f"comma-separated, from {list(CASES)} (default 4,4e,8c)")
    parser.add_argument(
        "--rules", default=",".join(RULES), help=f"comma-separated stopping rules, from {RULES} (default: both)"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, from {POLICIES}")
    parser.add_argument(
        "--certify-only", action="store_true", help="stop each campaign at certification (no votes to separate)"
    )
    parser.add_argument(
        "--steer",
        choices=("rule", "stateless"),
        default="stateless",
        help="the engine focuses by the stateless evidence whatever the rule (default: what the site's engine "
        "does) or by the stopping rule's own evidence",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=20240607)
    parser.add_argument("--save", help="write every campaign's measurements to this JSON-lines file")
    args = parser.parse_args()
    cases = args.cases.split(",")
    rules = args.rules.split(",")
    policies = args.policies.split(",")
    for policy in policies:
        if policy not in POLICIES:
            parser.error(f"unknown policy {policy!r}; choose from {POLICIES}")
    for rule in rules:
        if rule not in RULES:
            parser.error(f"unknown rule {rule!r}; choose from {RULES}")
    for case in cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {list(CASES)}")

    print(
        f"adaptive campaigns: reps={args.reps} per case and policy, alpha={ALPHA}, ties={TIE_RATE:.0%}, "
        f"coverage {MIN_VOTES_PER_PAIR} votes/pair, looks every {LOOK_EVERY} votes, seed={args.seed}, "
        f"engine steered by the {'rule' if args.steer == 'rule' else 'stateless'} evidence"
    )
    for case in cases:
        started = time.perf_counter()
        # the same seeds for both policies of a case; each campaign its own stream
        seeds = np.random.SeedSequence([args.seed, list(CASES).index(case)]).spawn(args.reps)
        summary = {}
        for policy, rule in [(p, r) for p in policies for r in rules]:
            jobs = [(case, policy, rule, not args.certify_only, s, args.steer == "rule") for s in seeds]
            if args.jobs > 1:
                with ProcessPoolExecutor(args.jobs) as pool:
                    results = list(pool.map(one_campaign, jobs, chunksize=2))
            else:
                results = [one_campaign(j) for j in jobs]
            summary[policy, rule] = summarise(results)
            if args.save:
                with open(args.save, "a") as out:
                    for r in results:
                        r = {**r, "needed_ratio": {str(f): x for f, x in r.get("needed_ratio", {}).items()}}
                        out.write(json.dumps({"case": case, "policy": policy, "rule": rule, **r}, default=float) + "\n")
        print(f"\n## {CASE_TITLES[case]}  ({time.perf_counter() - started:.0f} s)")
        print(
            "| policy | rule | votes to certify (median / p90) | wrong winner | cover 95% anytime / plain "
            "| needed est/actual (half / pooled) | votes to separate (median) | wrong at separation |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for policy, rule in summary:
            s = summary[policy, rule]
            unfinished = f" ({s['unfinished']} unfinished at {MAX_VOTES})" if s["unfinished"] else ""
            print(
                f"| {policy} | {rule} | {s['median']:,.0f} / {s['p90']:,.0f}{unfinished} | {s['wrong']:.1%} "
                f"| {s['cover_anytime']:.1%} / {s['cover_plain']:.1%} "
                f"| {s['needed_half']:.2f} / {s['needed_pooled']:.2f} | {s['sep_median']:,.0f} "
                f"| {s['sep_wrong']:.1%} |"
            )
        for rule in rules if set(POLICIES) <= set(policies) else []:
            u, a = summary["uniform", rule], summary["active", rule]
            print(
                f"{rule}: ratio uniform/engine: certify median {u['median'] / a['median']:.2f}x, "
                f"p90 {u['p90'] / a['p90']:.2f}x (wrong winner {u['wrong']:.1%} vs {a['wrong']:.1%}); "
                f"separate median {u['sep_median'] / a['sep_median']:.2f}x"
            )
        if RULES[0] in rules:
            for policy, rule in [(p, r) for p in policies for r in rules if r != RULES[0]]:
                old, new = summary[policy, RULES[0]], summary[policy, rule]
                print(
                    f"{policy}: votes to certify {RULES[0]} / {rule}: median {old['median'] / new['median']:.2f}x, "
                    f"p90 {old['p90'] / new['p90']:.2f}x, mean {old['mean'] / new['mean']:.2f}x, paired "
                    f"{paired_ratio(old['stops'], new['stops']):.2f}x (wrong winner {old['wrong']:.1%} vs "
                    f"{new['wrong']:.1%})"
                )
        print(
            "separate, best fixed allocation knowing the truth: "
            f"{separation_ceiling(CASES[case] - CASES[case].mean()):.2f}x over uniform"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
