"""Benchmark: Bradley-Terry point fit + 100 bootstrap rounds on 1,000,000 simulated votes over 100 models.

    .venv/bin/python bench/bt_fit.py            # options: --votes --models --rounds --repeats --fschat-rounds

Times, in the same run and on the same votes:
  ours     analysis.leaderboard.fit_bradley_terry(votes, rounds=100): from the vote DataFrame to the
           leaderboard with bootstrap intervals (aggregation, Newton point fit, 100 Poisson-bootstrap refits).
  choix    choix.ilsr_pairwise_dense on the same tie-split win-count matrix (choix's only entry point that
           takes half wins), and 100 bootstrap refits on the same kind of resampled matrices. Needs the
           bench extra (pip install -e .[bench]).
  fastchat the published rating code of the PyPI package fschat 0.2.36, module
           fastchat.serve.monitor.elo_analysis: compute_elo_mle_with_tie (sklearn logistic regression on
           the duplicated battles) and get_bootstrap_result (pandas resampling of the battles). It pulls
           web-server dependencies, so it runs in its own venv, in a subprocess, on the same votes:
               python3.11 -m venv /tmp/fschat-venv
               /tmp/fschat-venv/bin/pip install fschat==0.2.36 plotly pytz scikit-learn pandas pyarrow tqdm \
                   psutil torch==2.13.0 transformers accelerate   # the module imports fastchat.model
           (or point FSCHAT_PYTHON at another interpreter that can import it). Its bootstrap is timed on
           --fschat-rounds rounds and scaled to --rounds (printed as such).
Ratings are compared after putting each on the Elo scale with mean 1000: max |difference| and Kendall tau.
The machine's load average is printed: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.bradley_terry import ELO_PER_NAT  # noqa: E402
from analysis.leaderboard import fit_bradley_terry  # noqa: E402
from analysis.simulate import simulate_votes  # noqa: E402
from analysis.votes import count_pairs  # noqa: E402

FSCHAT_PYTHON = os.environ.get("FSCHAT_PYTHON", "/tmp/fschat-venv/bin/python")

FSCHAT_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from fastchat.serve.monitor import elo_analysis as ea

votes = pd.read_parquet(sys.argv[1])
rounds = int(sys.argv[2])
start = time.perf_counter()
cpu = time.process_time()
point = ea.compute_elo_mle_with_tie(votes)
point_s, point_cpu = time.perf_counter() - start, time.process_time() - cpu
np.random.seed(0)
start = time.perf_counter()
cpu = time.process_time()
boot = ea.get_bootstrap_result(votes, ea.compute_elo_mle_with_tie, num_round=rounds)
boot_s, boot_cpu = time.perf_counter() - start, time.process_time() - cpu
json.dump({"point": point.to_dict(), "point_s": point_s, "boot_s": boot_s, "rounds": rounds,
           "point_cpu": point_cpu, "boot_cpu": boot_cpu,
           "lower": boot.quantile(0.025).to_dict(), "upper": boot.quantile(0.975).to_dict()}, sys.stdout)
"""


def centred(scores: pd.Series) -> pd.Series:
    return scores - scores.mean() + 1000.0


def compare(name: str, ours: pd.Series, theirs: pd.Series) -> str:
    ours, theirs = centred(ours), centred(theirs.reindex(ours.index))
    tau = stats.kendalltau(ours, theirs).statistic
    return f"{name}: max |score difference| {np.abs(ours - theirs).max():.4f} Elo, Kendall tau {tau:.4f}"


def timed(fn):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def time_ours(votes: pd.DataFrame, rounds: int, repeats: int):
    fit_bradley_terry(votes.iloc[:1000], rounds=rounds)  # warm-up (imports, thread pools)
    point, full = [], []
    for r in range(repeats):
        point.append(timed(lambda: fit_bradley_terry(votes, intervals="fisher"))[1:])
        fit, *times = timed(lambda r=r: fit_bradley_terry(votes, rounds=rounds, seed=r))
        full.append(times)
    return fit, np.array(point), np.array(full)  # times: (repeats, [wall, cpu])


def time_choix(votes: pd.DataFrame, rounds: int):
    try:
        import choix
    except ImportError:
        return None

    def point_fit():
        pairs = count_pairs(votes)  # same aggregation as ours, so both start from the DataFrame
        return pairs, choix.ilsr_pairwise_dense(pairs.half_wins())

    (pairs, params), point_wall, point_cpu = timed(point_fit)
    rng = np.random.default_rng(0)

    def bootstrap():
        return np.array(
            [
                choix.ilsr_pairwise_dense(
                    pairs.half_wins(rng.poisson(pairs.counts).astype(float)), initial_params=params
                )
                for _ in range(rounds)
            ]
        )

    boot, boot_wall, boot_cpu = timed(bootstrap)
    scores = pd.Series(1000 + ELO_PER_NAT * (params - params.mean()), index=pairs.models)
    boot = 1000 + ELO_PER_NAT * (boot - boot.mean(axis=1, keepdims=True))
    bounds = np.quantile(boot, [0.025, 0.975], axis=0, method="weibull")
    return scores, (point_wall, point_cpu), (point_wall + boot_wall, point_cpu + boot_cpu), bounds


def time_fastchat(votes: pd.DataFrame, rounds: int):
    if not Path(FSCHAT_PYTHON).exists():
        return None, f"skipped: {FSCHAT_PYTHON} not found (see this file's docstring to set it up)"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "votes.parquet"
        votes.assign(winner=votes["winner"].replace({"both_bad": "tie (bothbad)"})).to_parquet(path)
        done = subprocess.run(
            [FSCHAT_PYTHON, "-c", FSCHAT_SCRIPT, str(path), str(rounds)], capture_output=True, text=True
        )
    if done.returncode != 0:
        return None, "failed: " + done.stderr.strip().splitlines()[-1]
    return json.loads(done.stdout), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fschat-rounds", type=int, default=2, help="FastChat bootstrap rounds actually run")
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rng = np.random.default_rng(0)
    theta = rng.normal(0.0, 0.8, args.models)
    start = time.perf_counter()
    votes = simulate_votes(theta, args.votes, tie_rate=0.1, rng=rng, both_bad_share=0.3)
    print(f"simulated {len(votes):,} votes over {args.models} models in {time.perf_counter() - start:.1f} s")

    fit, point_times, full_times = time_ours(votes, args.rounds, args.repeats)
    ours_wall, ours_cpu = np.median(full_times, axis=0)
    print(
        f"ours: point fit (Fisher intervals) median {np.median(point_times[:, 0]):.3f} s wall "
        f"/ {np.median(point_times[:, 1]):.3f} s CPU; point + {args.rounds} bootstrap rounds median "
        f"{ours_wall:.3f} s wall / {ours_cpu:.3f} s CPU (wall of each run: "
        f"{', '.join(f'{t:.3f}' for t in full_times[:, 0])})"
    )
    truth = pd.Series(1000 + ELO_PER_NAT * (theta - theta.mean()), index=[f"model_{i}" for i in range(args.models)])
    print(compare("ours vs simulated truth", fit["score"], truth))

    choix_result = time_choix(votes, args.rounds)
    if choix_result is None:
        print("choix: skipped (not installed; pip install -e .[bench])")
    else:
        scores, (point_wall, point_cpu), (total_wall, total_cpu), (lower, upper) = choix_result
        print(
            f"choix.ilsr_pairwise_dense: point {point_wall:.3f} s wall / {point_cpu:.3f} s CPU; "
            f"point + {args.rounds} rounds {total_wall:.3f} s wall / {total_cpu:.3f} s CPU"
        )
        print(compare("ours vs choix", fit["score"], scores))
        width_ratio = np.median((fit["upper"] - fit["lower"]) / (upper - lower))
        print(
            f"ratio choix / ours, point + {args.rounds} rounds: {total_wall / ours_wall:.2f}x wall, "
            f"{total_cpu / ours_cpu:.2f}x CPU; median interval width ours / choix: {width_ratio:.3f}"
        )

    result, why = time_fastchat(votes, args.fschat_rounds)
    if result is None:
        print(f"fastchat: {why}")
    else:
        per_round = result["boot_s"] / result["rounds"]
        per_round_cpu = result["boot_cpu"] / result["rounds"]
        total = result["point_s"] + per_round * args.rounds
        total_cpu = result["point_cpu"] + per_round_cpu * args.rounds
        print(
            f"fastchat compute_elo_mle_with_tie: point {result['point_s']:.1f} s wall "
            f"/ {result['point_cpu']:.1f} s CPU; "
            f"bootstrap {per_round:.1f} s/round wall ({result['rounds']} rounds run) -> point + {args.rounds} rounds "
            f"~ {total:.0f} s wall / {total_cpu:.0f} s CPU (scaled from the rounds run)"
        )
        print(compare("ours vs fastchat", fit["score"], pd.Series(result["point"])))
        print(f"ratio fastchat / ours: {total / ours_wall:.0f}x wall, {total_cpu / ours_cpu:.0f}x CPU")
        if result["rounds"] >= 20:
            fc_width = pd.Series(result["upper"]) - pd.Series(result["lower"])
            width_ratio = np.median((fit["upper"] - fit["lower"]) / fc_width.reindex(fit.index))
            print(f"median interval width ours / fastchat ({result['rounds']} rounds): {width_ratio:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    target = "met" if ours_wall <= 1.0 else "NOT met"
    print(f"target point fit + {args.rounds} rounds <= 1 s wall: {target} ({ours_wall:.3f} s)")


if __name__ == "__main__":
    main()
