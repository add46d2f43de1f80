"""Many simulated raters at once: one thread each (they spend their time waiting on the network and thinking).

crowd = Crowd(invite_url, n_raters=20, mix={"careful": 0.8, "random": 0.2}, seed=0)
summary = crowd.run(minutes=5)          # or crowd.start(...) / crowd.stop() / crowd.join()
print(summary.table())
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from evalsite.crowd.behaviour import BAD_KINDS, assign_kinds, draw_profile, parse_mix
from evalsite.crowd.client import RaterReport, SimulatedRater

DEFAULT_MIX = {"careful": 0.7, "casual": 0.3}


def crowd_mix(mix: str | None = None, bad_share: float | None = None) -> dict[str, float]:
    """The kinds' shares: `mix` as written ('careful=0.7,random=0.3'), or the default honest mix with
    `bad_share` split evenly over the bad kinds (random clickers, always-left, too fast)."""
    if mix and bad_share is not None:
        raise ValueError("give a mix or a share of bad raters, not both")
    if mix:
        return parse_mix(mix)
    share = bad_share or 0.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share of bad raters must be between 0 and 1, got {share}")
    honest = {kind: value * (1.0 - share) for kind, value in DEFAULT_MIX.items()}
    return honest | {kind: share / len(BAD_KINDS) for kind in BAD_KINDS if share > 0}


@dataclass
class CrowdSummary:
    """What the crowd did, per rater kind."""

    reports: list[RaterReport] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return sum(r.pairs_answered for r in self.reports)

    @property
    def refused(self) -> list[str]:
        return sorted({r.refused for r in self.reports if r.refused})

    @property
    def stopped(self) -> list[str]:
        return sorted({r.stopped for r in self.reports if r.stopped})

    def table(self) -> str:
        by_kind: dict[str, list[RaterReport]] = defaultdict(list)
        for report in self.reports:
            by_kind[report.kind].append(report)
        lines = [f"{'kind':<12} {'raters':>6} {'pairs':>6} {'moved on':>8} {'retries':>7} {'5xx':>4} {'s/pair':>6}"]
        for kind, reports in by_kind.items():
            seconds = [s for r in reports for s in r.seconds_per_pair]
            median = f"{np.median(seconds):.1f}" if seconds else "-"
            lines.append(
                f"{kind:<12} {len(reports):>6} {sum(r.pairs_answered for r in reports):>6} "
                f"{sum(r.moved_on for r in reports):>8} {sum(r.retries for r in reports):>7} "
                f"{sum(r.server_errors for r in reports):>4} {median:>6}"
            )
        return "\n".join(lines)


class Crowd:
    """`n_raters` simulated raters with kinds in the proportions of `mix`, each seeded from `seed`."""

    def __init__(
        self,
        invite_url: str,
        n_raters: int,
        mix: dict[str, float] | None = None,
        seed: int = 0,
        think_scale: float = 1.0,
        max_pairs_per_rater: int | None = None,
        behind_tls_proxy: bool = False,
    ):
        if n_raters < 1:
            raise ValueError(f"a crowd needs at least one rater, got {n_raters}")
        rng = np.random.default_rng(seed)
        kinds = assign_kinds(n_raters, mix or DEFAULT_MIX)
        rng.shuffle(kinds)
        self.stop_event = threading.Event()
        self.max_pairs = max_pairs_per_rater
        self.raters = [
            SimulatedRater(
                invite_url,
                draw_profile(kind, rng),
                seed=int(rng.integers(2**31)),
                think_scale=think_scale,
                stop=self.stop_event,
                participant=f"sim-{kind}-{i}",
                proxied=behind_tls_proxy,
            )
            for i, kind in enumerate(kinds)
        ]
        self.threads: list[threading.Thread] = []

    @property
    def kinds(self) -> Counter:
        return Counter(r.profile.kind for r in self.raters)

    def start(self, minutes: float) -> None:
        deadline = time.monotonic() + minutes * 60
        self.threads = [
            threading.Thread(target=r.run, args=(deadline, self.max_pairs), name=f"rater-{i}", daemon=True)
            for i, r in enumerate(self.raters)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self) -> CrowdSummary:
        for thread in self.threads:
            thread.join()
        return CrowdSummary([r.report for r in self.raters])

    def run(self, minutes: float) -> CrowdSummary:
        self.start(minutes)
        try:
            return self.join()
        except KeyboardInterrupt:
            self.stop()
            return self.join()

    def pairs_answered(self) -> int:
        return sum(r.report.pairs_answered for r in self.raters)
