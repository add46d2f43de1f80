"""Suspicious-rater checks (analysis/suspicion.py) on a large synthetic crowd: what they find and what it costs.

    .venv/bin/python bench/suspicion.py

The crowd is the one tests/analysis/test_suspicion.py builds: 80 careful raters (Bradley-Terry on the true
strengths), 10 random clickers, 5 who always pick the truly better model, three who push one model each
(the best, a middle and a weak one) and two accounts that copy a random clicker and a careful rater; 20,000
items, 3 raters each. Prints the time of suspicious_raters and every rater it finds, with the reasons.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "analysis"))

from test_suspicion import crowd  # noqa: E402

from analysis.suspicion import suspicious_raters  # noqa: E402


def main() -> None:
    kinds = (
        {f"c{i}": "careful" for i in range(80)}
        | {f"r{i}": "random" for i in range(10)}
        | {f"perfect{i}": "perfect" for i in range(5)}
        | {"push-best": "favours-best", "push-mid": "favours-middle", "push-weak": "favours-weak"}
        | {"twin": "copy-r0", "twin2": "copy-c0"}
    )
    votes = crowd(kinds, items=20_000, seed=1)
    start = time.perf_counter()
    table = suspicious_raters(votes)
    seconds = time.perf_counter() - start
    print(f"load average {os.getloadavg()[0]:.1f}; {len(votes):,} votes, {len(kinds)} raters")
    print(f"suspicious_raters: {seconds:.2f} s, {len(table)} raters found")
    print(table.to_string(index=False))
    expected = {"push-mid", "push-weak", "twin", "r0", "twin2", "c0"}
    print("found exactly the pushers (not of the best model) and the copies:", set(table["rater"]) == expected)


if __name__ == "__main__":
    main()
