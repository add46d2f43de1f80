"""Faults while raters vote: does anybody see an error, is anything acknowledged lost, how long until voting
flows again?

    .venv/bin/python bench/faults.py [--users 200] [--seconds 45] [--at 15] [--only pg-restart,web-kill]

Each scenario is a fresh bench/vote_load.py run (its own PostgreSQL database, gunicorn 3 workers x 4 threads
in the production settings shape, --users simulated raters voting through the HTTP API with no think time)
with one fault injected --at seconds into the voting:

  baseline     no fault (the reference row)
  pg-restart   PostgreSQL fast restart (pg_ctlcluster ... restart -m fast: about a second down)
  pg-down-10s  PostgreSQL stopped for 10 s, then started again; no site process is restarted
  redis-restart  the site's shared cache (rate limits) on Redis, which is shut down and started again
  web-kill     SIGKILL of one gunicorn worker while it serves requests (gunicorn starts a new one)

The raters behave like the rater page (evalsite/static/evalsite/rater.js): an answer 502/503/504 or a
dropped connection is waited out (Retry-After) and the same request sent again with the same idempotency
key, for up to two minutes. The table counts:
  requests      HTTP requests the raters sent
  5xx           5xx answers other than 'briefly away' (a bug, or a fault that leaked through)
  503 retried   'briefly away' answers the raters waited out; connection errors (dropped mid-request) too
  acked/stored  vote submissions the server acknowledged / found in the database afterwards (must be equal)
  longest gap   the longest time in the run with no vote acknowledged: how long the fault stopped voting
                (the baseline row shows the gap with no fault)

This stops and starts the machine's PostgreSQL (and Redis for redis-restart): run it on a development
machine, not beside anything else that needs them. Nothing here needs a GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import vote_load  # noqa: E402
from bench.servers import redis_up  # noqa: E402

REDIS_CACHE = "redis://127.0.0.1:6379/6"


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    subprocess.run(command + (["-m", "fast"] if action in ("restart", "stop") else []), check=True)


def restart_redis() -> None:
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], capture_output=True)
    for _ in range(50):
        if not redis_up():
            break
        time.sleep(0.1)
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly",
         "no"],
        check=True, capture_output=True,
    )  # fmt: skip
    while not redis_up():
        time.sleep(0.1)


def kill_a_web_worker(server) -> None:
    children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(children[0]), signal.SIGKILL)


def fault(name: str, at: float):
    """The function bench/vote_load.run calls in a thread while the raters vote."""

    def inject(context) -> dict:
        time.sleep(at)
        started = time.time()
        if name == "pg-restart":
            pg_ctl("restart")
        elif name == "pg-down-10s":
            pg_ctl("stop")
            time.sleep(10)
            pg_ctl("start")
        elif name == "redis-restart":
            restart_redis()
        elif name == "web-kill":
            kill_a_web_worker(context["server"])
        return {"started": started, "ended": time.time()}

    return inject


SCENARIOS = ("baseline", "pg-restart", "pg-down-10s", "redis-restart", "web-kill")


def main() -> None:
    parser = vote_load.parser()
    parser.description = __doc__
    parser.set_defaults(seconds=45, baseline_seconds=3)
    parser.add_argument("--at", type=float, default=15, help="seconds into the voting when the fault strikes")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args()
    rows = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        print(f"\n=== {name} ===", flush=True)
        if name == "redis-restart":
            os.environ["CACHE_URL"] = REDIS_CACHE  # the site's shared cache on Redis, as in production
        try:
            outcome = vote_load.run(args, fault=None if name == "baseline" else fault(name, args.at))
        finally:
            os.environ.pop("CACHE_URL", None)
        rows.append((name, outcome))
        print(summary_line(name, outcome), flush=True)
    print()
    print(f"{args.users} raters, {args.seconds} s of voting per scenario, fault at {args.at:.0f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(
        "| scenario | raters voting | requests | 5xx | 503 retried | connection errors | acked = stored | "
        "longest gap | site tracebacks |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, outcome in rows:
        print(table_row(name, outcome))


def figures(outcome: dict) -> dict:
    votes = outcome["results"]["votes"]
    acked = set(votes["acknowledged"])
    rows = sum(votes["acknowledged"].values())
    times = sorted(votes["ack_times"])
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("nan"))
    return {
        "raters": votes["joined"],
        "requests": votes["requests"],
        "5xx": votes["status_5xx"],
        "503": votes["status_503"],
        "errors": votes["errors"],
        "acked": len(acked),
        "stored": len(outcome["stored_ids"]),
        "equal": acked == outcome["stored_ids"] and rows == outcome["stored_rows"] and outcome["most"] <= 1,
        "gap": gap,
        "tracebacks": outcome["tracebacks"],
        "fault_seconds": outcome["fault"].get("ended", 0) - outcome["fault"].get("started", 0),
    }


def summary_line(name: str, outcome: dict) -> str:
    f = figures(outcome)
    return (
        f"{name}: {f['raters']} raters voting, {f['requests']} requests, {f['5xx']} 5xx, {f['503']} 503 retried, "
        f"{f['errors']} connection "
        f"errors, acked {f['acked']} stored {f['stored']} (equal: {f['equal']}), longest gap {f['gap']:.1f} s, "
        f"fault took {f['fault_seconds']:.1f} s, {f['tracebacks']} tracebacks in {outcome['log']}"
    )


def table_row(name: str, outcome: dict) -> str:
    f = figures(outcome)
    equal = "yes" if f["equal"] else "**NO**"
    return (
        f"| {name} | {f['raters']} | {f['requests']:,} | {f['5xx']} | {f['503']} | {f['errors']} | "
        f"{f['acked']:,} = {f['stored']:,} "
        f"{equal} | {f['gap']:.1f} s | {f['tracebacks']} |"
    )


if __name__ == "__main__":
    main()
