"""A soak: 200 raters who think 3 s between pairs vote for 30 minutes; does anything grow?

    .venv/bin/python bench/soak.py [--users 200] [--minutes 30] [--think-seconds 3] [--autovacuum on]

One bench/vote_load.py run (its own PostgreSQL database, gunicorn 3 workers x 4 threads in the production
settings shape, locust raters joining through the invite link and voting through the HTTP API) held for
--minutes, on a campaign seeded with enough image pairs for --minutes at --pairs-per-second (prompts_for), while
a sampler reads, every --sample-seconds, the resident memory (VmRSS from /proc) of the gunicorn master and each
gunicorn worker, and the private memory (RssAnon) of all PostgreSQL server processes on the machine together
(their VmRSS would count the shared buffers each backend has touched, which rises while the cache warms).
gunicorn recycles no worker here (no --max-requests), so a leak would show.

Prints per interval of the run (tenths by default): pairs acknowledged per second, vote POST and /next p50/p99,
and each process's memory; then the growth from the first to the last interval, and acknowledged == stored.
"Flat" means: memory of every process within --memory-slack of its value after the warm-up tenth, and the last
tenth's p99 within --latency-slack times the second tenth's (the first tenth includes 200 raters joining).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import vote_load  # noqa: E402
from bench.vote_load import percentile  # noqa: E402

PAIRS_PER_SECOND = 70  # what 200 raters who think 3 s answer (66-67 pairs/s measured; docs/rater-app.md, The soak)
VOTES_PER_PAIR = 3  # the seeded campaign's target (bench/next_assignment.py seed)
PAIR_HEADROOM = 1.25  # image pair slots seeded per pair the run is expected to ask for


def prompts_for(seconds: float, pairs_per_second: float) -> int:
    """Prompts to seed so that the campaign does not run out of image pairs before `seconds` of voting at
    `pairs_per_second`: each prompt gives every model pair one image pair per seed, each taking VOTES_PER_PAIR
    raters (gold checks use no image pair slot). 30 minutes at 70 pairs/s: 126,000 pairs, 52,500 image pairs with
    the headroom, 584 prompts (the run that ran out at minute 24 had 300)."""
    model_pairs = vote_load.N_MODELS * (vote_load.N_MODELS - 1) // 2
    image_pairs = pairs_per_second * seconds * PAIR_HEADROOM / VOTES_PER_PAIR
    return max(vote_load.N_PROMPTS, math.ceil(image_pairs / (model_pairs * vote_load.N_SEEDS)))


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """A memory field of /proc/PID/status in KiB: VmRSS (all resident pages, shared ones included) or RssAnon
    (private memory only)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process this user can read."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        found.append((int(entry.name), parent, name))
    return found


def memory_sample(master: int) -> dict[str, int]:
    """KiB: 'gunicorn master', 'worker 1'... (by pid order): VmRSS; 'postgres RssAnon': the private memory of all
    PostgreSQL server processes together (their VmRSS would also count, once per backend, every shared buffer
    that backend has touched, which rises while the cache warms and says nothing about a leak)."""
    table = processes()
    sample = {"gunicorn master": rss_kib(master) or 0}
    workers = sorted(pid for pid, parent, _ in table if parent == master)
    for n, pid in enumerate(workers, start=1):
        sample[f"worker {n}"] = rss_kib(pid) or 0
    sample["postgres RssAnon"] = sum(
        rss_kib(pid, "RssAnon") or 0 for pid, _, name in table if name.startswith("postgres")
    )
    return sample


# What PostgreSQL did besides serving the raters, to explain a slow interval: which maintenance ran (autovacuum and
# autoanalyze workers, by table), the checkpoints, and the dead rows of the tables the vote path writes.
_ACTIVITY_SQL = """
SELECT coalesce(string_agg(regexp_replace(query, '^autovacuum: ', ''), '; '), '')
FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query <> ''
"""
_CHECKPOINTS_SQL = """
SELECT checkpoints_timed + checkpoints_req, checkpoint_write_time + checkpoint_sync_time FROM pg_stat_bgwriter
"""
_DEAD_ROWS_SQL = """
SELECT relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables
WHERE relname IN ('rating_vote', 'rating_assignment', 'rating_imagepair', 'rating_ratertally', 'rating_rater')
"""


def database_sample(conn) -> dict:
    """What PostgreSQL is doing now: the autovacuum workers' jobs, the checkpoints so far (count and ms spent) and
    the dead rows of the vote path's tables."""
    (vacuuming,) = conn.execute(_ACTIVITY_SQL).fetchone()
    checkpoints, checkpoint_ms = conn.execute(_CHECKPOINTS_SQL).fetchone()
    dead = {name: (d, live) for name, d, live in conn.execute(_DEAD_ROWS_SQL)}
    return {"autovacuum": vacuuming, "checkpoints": checkpoints, "checkpoint_ms": checkpoint_ms, "dead": dead}


def sampler(seconds: float, every: float, samples: list, activity: list | None = None, tick: float = 1.0) -> object:
    """A vote_load fault hook that only watches: memory every `every` seconds while the raters vote and, when
    `activity` is given, what PostgreSQL is doing every `tick` seconds (database_sample)."""

    def watch(context) -> dict:
        import psycopg

        master = context["server"].pid
        conn = psycopg.connect(context["env"]["DATABASE_URL"], autocommit=True) if activity is not None else None
        start, next_memory = time.monotonic(), 0.0
        try:
            while (now := time.monotonic() - start) < seconds + every / 2:
                if now >= next_memory:
                    samples.append((now, memory_sample(master)))
                    next_memory += every
                if conn is not None:
                    conn.execute("SELECT pg_stat_clear_snapshot()")
                    activity.append((now, database_sample(conn)))
                time.sleep(tick if conn is not None else every)
        finally:
            if conn is not None:
                conn.close()
        return {}

    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/evalsite_soak")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--think-seconds", type=float, default=3.0)
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument("--intervals", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--memory-slack", type=float, default=0.10, help="allowed growth after warm-up (share)")
    parser.add_argument(
        "--pairs-per-second",
        type=float,
        default=PAIRS_PER_SECOND,
        help="the rate to seed image pairs for (raise it with more users or shorter pauses)",
    )
    parser.add_argument("--latency-slack", type=float, default=1.5, help="allowed last/second-tenth p99 ratio")
    parser.add_argument("--protocol", choices=("page", "two-requests"), default="page", help="as bench/vote_load.py")
    parser.add_argument(
        "--autovacuum",
        choices=("server", "on"),
        default="server",
        help="'on' switches the server's autovacuum on for the run (ALTER SYSTEM, reset after) where its "
        "configuration has it off, as this machine's CI cluster does; every deployment has it on",
    )
    args = parser.parse_args()
    with autovacuum_for_run(args.database_url, args.autovacuum == "on") as setting:
        print(f"PostgreSQL autovacuum during the run: {setting}", flush=True)
        run_soak(args)


@contextlib.contextmanager
def autovacuum_for_run(database_url: str, switch_on: bool):
    """Yield the server's autovacuum setting for the run; with switch_on, turn it on first where it is off and
    put the configuration back afterwards. A soak without autovacuum measures dead rows piling up (tens of
    thousands an hour in rating_imagepair and rating_assignment), which no deployment has."""
    import psycopg

    from bench.databases import admin_url

    admin, _ = admin_url(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        (setting,) = conn.execute("SHOW autovacuum").fetchone()
        changed = switch_on and setting != "on"
        if changed:
            conn.execute("ALTER SYSTEM SET autovacuum = on")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(1)
            (setting,) = conn.execute("SHOW autovacuum").fetchone()
    try:
        yield setting
    finally:
        if changed:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM RESET autovacuum")
                conn.execute("SELECT pg_reload_conf()")


def run_soak(args) -> None:
    seconds = int(args.minutes * 60)
    prompts = prompts_for(seconds, args.pairs_per_second)
    print(
        f"seeding {prompts} prompts: image pairs for {args.minutes:g} min at {args.pairs_per_second:g} pairs/s",
        flush=True,
    )
    load_args = vote_load.parser().parse_args(
        [
            "--database-url", args.database_url, "--users", str(args.users), "--seconds", str(seconds),
            "--workers", str(args.workers), "--threads", str(args.threads),
            "--think-seconds", str(args.think_seconds), "--baseline-seconds", "10", "--prompts", str(prompts),
            "--protocol", args.protocol,
        ]
    )  # fmt: skip
    samples: list = []
    activity: list = []
    started = time.time()
    outcome = vote_load.run(load_args, fault=sampler(seconds, args.sample_seconds, samples, activity))
    votes = outcome["results"]["votes"]
    acked = set(votes["acknowledged"])
    expected_rows = sum(votes["acknowledged"].values())
    print(
        f"\n{args.users} raters, {args.think_seconds:g} s between pairs, {args.minutes:g} min of voting "
        f"({time.time() - started:.0f} s with setup); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"acknowledged == stored: {acked == outcome['stored_ids'] and expected_rows == outcome['stored_rows']} "
        f"({len(acked)} pairs acknowledged, {len(outcome['stored_ids'])} stored); 5xx {votes['status_5xx']}; "
        f"connection errors {votes['errors']}; site tracebacks {outcome['tracebacks']}"
    )
    verdict = report(timeline(votes), samples, seconds, args)
    activity_report(activity, seconds, args.intervals)
    print(json.dumps({"flat": verdict}))


def activity_report(activity: list, seconds: int, intervals: int) -> None:
    """Per interval: the seconds in which an autovacuum worker was running (and on what), the checkpoints that
    ended and the time they took, and the dead rows of the vote path's tables at the interval's end."""
    if not activity:
        return
    width = seconds / intervals
    tables = ("rating_imagepair", "rating_assignment", "rating_vote", "rating_ratertally")
    print()
    names = ", ".join(t.removeprefix("rating_") for t in tables)
    print(f"| minutes | s with autovacuum | autovacuum ran on | checkpoints (ms) | dead rows: {names} |")
    print("|---|---|---|---|---|")
    previous = activity[0][1]
    for n in range(intervals):
        inside = [(at, sample) for at, sample in activity if n * width <= at < (n + 1) * width]
        if not inside:
            continue
        tick = (inside[-1][0] - inside[0][0]) / max(1, len(inside) - 1)
        busy = [sample["autovacuum"] for _, sample in inside if sample["autovacuum"]]
        ran_on = sorted({job for jobs in busy for job in jobs.split("; ")})
        last = inside[-1][1]
        checkpoints = last["checkpoints"] - previous["checkpoints"]
        checkpoint_ms = last["checkpoint_ms"] - previous["checkpoint_ms"]
        dead = " / ".join(str(last["dead"].get(t, (0, 0))[0]) for t in tables)
        print(
            f"| {n * width / 60:.1f}-{(n + 1) * width / 60:.1f} | {len(busy) * tick:.0f} | {', '.join(ran_on) or '-'} "
            f"| {checkpoints} ({checkpoint_ms:.0f}) | {dead} |"
        )
        previous = last


def timeline(votes: dict) -> list[tuple[float, str, float]]:
    """(seconds since the raters started, name, ms) of every vote and /next, and (seconds, "acked", 0) of every
    acknowledged pair, from bench/vote_load.py's swarm output."""
    start = votes["started_at"]
    events = [
        (at - start, name, ms)
        for name in ("vote", "next")
        for at, ms in zip(votes["latency_at"].get(name, []), votes["latency"].get(name, []), strict=True)
    ]
    events += [(at - start, "acked", 0.0) for at in votes["ack_times"]]
    return events


def report(events: list, samples: list, seconds: int, args) -> dict:
    """The table per interval and the flatness verdicts."""
    width = seconds / args.intervals
    buckets = [{"vote": [], "next": [], "acked": 0} for _ in range(args.intervals)]
    for at, name, ms in events:
        n = min(args.intervals - 1, max(0, int(at // width)))
        if name in ("vote", "next"):
            buckets[n][name].append(ms)
        elif name == "acked":
            buckets[n]["acked"] += 1
    names = list(samples[-1][1]) if samples else []
    memory = [[] for _ in range(args.intervals)]
    for at, sample in samples:
        memory[min(args.intervals - 1, int(at // width))].append(sample)
    header = "| minutes | pairs/s | vote p50 / p99 ms | next p50 / p99 ms | " + " | ".join(
        f"{name} MiB" for name in names
    )
    print()
    print(header + " |")
    print("|" + "---|" * (4 + len(names)))
    last_memory = {}
    for n, bucket in enumerate(buckets):
        cells = [
            f"{n * width / 60:.1f}-{(n + 1) * width / 60:.1f}",
            f"{bucket['acked'] / width:.1f}",
            f"{percentile(bucket['vote'], 0.5):.0f} / {percentile(bucket['vote'], 0.99):.0f}",
            # The page asks GET next only for a rater's first pair and its preload (then each answer brings the next)
            f"{percentile(bucket['next'], 0.5):.0f} / {percentile(bucket['next'], 0.99):.0f}"
            if bucket["next"]
            else "none asked",
        ]
        if memory[n]:
            last_memory[n] = dict(memory[n][-1])  # the interval's last sample
        cells += [f"{last_memory.get(n, {}).get(name, 0) / 1024:.0f}" for name in names]
        print("| " + " | ".join(cells) + " |")
    first, last = last_memory.get(0, {}), last_memory.get(args.intervals - 1, {})
    growth = {name: (last.get(name, 0) - first.get(name, 0)) / max(1, first.get(name, 0)) for name in names}
    p99_second = percentile(buckets[1]["vote"], 0.99) if args.intervals > 1 else float("nan")
    p99_last = percentile(buckets[-1]["vote"], 0.99)
    print()
    for name, share in growth.items():
        print(f"{name:16s} {first.get(name, 0) / 1024:7.0f} MiB -> {last.get(name, 0) / 1024:7.0f} MiB ({share:+.1%})")
    print(f"vote p99, second interval {p99_second:.0f} ms -> last {p99_last:.0f} ms ({p99_last / p99_second:.2f}x)")
    return {
        "memory": all(share <= args.memory_slack for share in growth.values()),
        "latency": bool(p99_last <= args.latency_slack * p99_second),
    }


if __name__ == "__main__":
    main()
