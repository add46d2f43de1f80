"""Vote submission under load: 200 concurrent simulated raters for 60 s against gunicorn + PostgreSQL.

    .venv/bin/python bench/vote_load.py [--users 200] [--seconds 60] [--workers 3] [--threads 4] [--think-seconds 3]

What it does, in one command:
  1. creates its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_bench; dropped at
     the end unless --keep), migrates it and seeds a finished run of 10 models x 300 prompts (--prompts) x 2 seeds
     (Image rows only: raters here never fetch image files) and a campaign (3 votes per pair, 10% gold);
  2. collects static files (manifest storage, as in production) and starts the site under gunicorn (gthread
     workers) in the production settings shape (DJANGO_DEBUG=0, secure cookies, requests marked HTTPS by
     X-Forwarded-Proto as a TLS proxy would), the per-rater throttle raised out of the way
     (EVALSITE_RATER_RATE), persistent DB connections (DATABASE_CONN_MAX_AGE=60);
  3. runs locust (library mode, FastHttpUser) with --users simulated raters, who vote as fast as the site answers
     or, with --think-seconds, wait that long between pairs as people do (the /healthz baseline never waits).
     Each joins through the campaign's invite link (GET and POST /join/<token>: a new account and session, CSRF
     token from the cookie), then rates pairs as the rater page does (--protocol page): GET /api/assignments/next
     for the first pair and again (?exclude=) for the preloaded one, then one request per pair, POST
     /api/assignments/<id>/votes?next=1&exclude=<preloaded> with an answer per criterion and an idempotency key,
     whose answer brings the pair after the preloaded one. --protocol two-requests is the page before it: GET next,
     then POST the vote, for every pair. 5% of the votes are sent a second time (a double click), which must be
     answered 200 "replayed" and stored once. After --seconds no new pair is started; requests in flight finish;
  4. compares what the server acknowledged (201, or 200 replayed) with the rows in the database.

Prints votes/s (acknowledged pair submissions per second of the run; each stores one row per criterion),
p50/p99 latency of the vote POST and of /next, the count of 5xx and of connection errors, and
"acknowledged == stored". The baseline, timed in the same run, is GET /healthz (one SELECT 1 through the same
gunicorn and database): the ratio says what the vote path costs over the cheapest request the stack can serve.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_bench"
N_MODELS, N_PROMPTS, N_SEEDS = 10, 300, 2
DOUBLE_SUBMIT_SHARE = 0.05
BRIEFLY_AWAY = (502, 503, 504)  # answered "try again shortly": a simulated rater waits and sends the same again
PATIENCE_SECONDS = 120  # as long as the rater page keeps trying (evalsite/static/evalsite/rater.js)


# --------------------------------------------------------------------------------------------------
# Orchestration (plain process: no Django, no gevent)
# --------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def stored_votes(database_url: str, campaign_id: int) -> tuple[set[str], int, int]:
    """(assignment ids with votes, vote rows, largest number of rows for one assignment and criterion)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        ids = {
            str(r[0])
            for r in conn.execute(
                "SELECT DISTINCT assignment_id FROM rating_vote WHERE campaign_id = %s", [campaign_id]
            )
        }
        rows = conn.execute("SELECT count(*) FROM rating_vote WHERE campaign_id = %s", [campaign_id]).fetchone()[0]
        dup = conn.execute(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM rating_vote "
            "WHERE campaign_id = %s GROUP BY assignment_id, criterion) t",
            [campaign_id],
        ).fetchone()[0]
    return ids, rows, dup


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--baseline-seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--think-seconds", type=float, default=0.0, help="a rater's pause between pairs")
    parser.add_argument(
        "--prompts", type=int, default=N_PROMPTS, help=f"prompts of the seeded run ({N_MODELS} models, {N_SEEDS} seeds)"
    )
    parser.add_argument(
        "--cache-url",
        default="",
        help="CACHE_URL of the served site, e.g. redis://127.0.0.1:6379/9 as in docker/compose.yaml (default: none, "
        "the embedded default: per-process memory for sessions, files under var/ for rate limits)",
    )
    parser.add_argument(
        "--protocol",
        choices=("page", "two-requests"),
        default="page",
        help="page: each answer brings the next pair (votes?next=1), as the rater page does; two-requests: GET next "
        "then POST the vote for every pair (the page's protocol before)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    return parser


def main() -> None:
    args = parser().parse_args()
    outcome = run(args)
    report(outcome["results"], outcome["stored_ids"], outcome["stored_rows"], outcome["most"], args)
    if outcome["tracebacks"]:
        print(f"gunicorn log has {outcome['tracebacks']} tracebacks: {outcome['log']}")


def run(args, fault=None) -> dict:
    """Seed, serve, swarm (baseline, then votes) and count what was stored. `fault`, if given, is called in a
    thread while the votes swarm runs (bench/faults.py: restart PostgreSQL, kill a worker, ...) and returns
    what it wants reported."""
    import threading

    sys.path.insert(0, str(ROOT))
    from bench.databases import drop_database, recreate_database
    from bench.servers import django_step, log_tracebacks, prepare_site, server_env, start_gunicorn, stop_server

    recreate_database(args.database_url)
    var_dir = tempfile.mkdtemp(prefix="vote-load-")
    env = server_env(args.database_url, var_dir, **({"CACHE_URL": args.cache_url} if args.cache_url else {}))
    server = None
    try:
        prepare_site(env)
        seeded = django_step(__file__, env, "_seed", str(args.prompts))
        print(
            f"seeded {seeded['images']} images, {seeded['pairs']} image pairs; campaign {seeded['campaign']}",
            flush=True,
        )
        server, host = start_gunicorn(env, args.workers, args.threads, Path(var_dir) / "gunicorn.log")
        print(
            f"gunicorn: {args.workers} workers x {args.threads} threads on {host}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )

        results, fault_report = {}, {}
        for mode, seconds in (("baseline", args.baseline_seconds), ("votes", args.seconds)):
            out = Path(var_dir) / f"{mode}.json"
            command = [
                PYTHON, __file__, "_swarm", "--host", host, "--mode", mode, "--users", str(args.users),
                "--seconds", str(seconds), "--invite", seeded["invite"], "--campaign", str(seeded["campaign"]),
                "--out", str(out), "--think", str(args.think_seconds if mode == "votes" else 0),
                "--protocol", getattr(args, "protocol", "page"),
            ]  # fmt: skip
            injector = None
            if mode == "votes" and fault is not None:
                context = {"server": server, "host": host, "env": env, "var_dir": var_dir}
                injector = threading.Thread(target=lambda c=context: fault_report.update(fault(c) or {}))
                injector.start()
            subprocess.run(command, cwd=ROOT, env=env, check=True)
            if injector is not None:
                injector.join()
            results[mode] = json.loads(out.read_text())

        ids, rows, most = stored_votes(args.database_url, seeded["campaign"])
        log = Path(var_dir) / "gunicorn.log"
        return {
            "results": results,
            "stored_ids": ids,
            "stored_rows": rows,
            "most": most,
            "tracebacks": log_tracebacks(log),
            "log": str(log),
            "fault": fault_report,
        }
    finally:
        stop_server(server)
        if not args.keep:
            drop_database(args.database_url)


def report(results: dict, stored_ids: set[str], stored_rows: int, most: int, args) -> None:
    votes, base = results["votes"], results["baseline"]
    acked = set(votes["acknowledged"])
    expected_rows = sum(votes["acknowledged"].values())
    vote_ms, next_ms, health_ms = votes["latency"]["vote"], votes["latency"]["next"], base["latency"]["healthz"]
    print()
    print(
        f"{args.users} simulated raters (locust FastHttpUser), {votes['seconds']:.0f} s of voting, "
        f"{args.think_seconds:g} s between pairs, protocol {getattr(args, 'protocol', 'page')}"
    )
    print(f"raters joined        {votes['joined']} ({votes['join_refused']} refused at the invite link)")
    print(
        f"votes acknowledged   {len(acked)} pair submissions ({expected_rows} criterion rows), "
        f"{votes['replayed']} double submissions answered 'replayed'"
    )
    print(
        f"votes stored         {len(stored_ids)} pair submissions ({stored_rows} criterion rows); "
        f"at most {most} row per assignment and criterion"
    )
    print(f"acknowledged == stored: {acked == stored_ids and expected_rows == stored_rows}")
    for sample in votes["samples_4xx"]:
        print(f"  4xx sample: {sample}")
    print(
        f"5xx responses        {votes['status_5xx']} (baseline {base['status_5xx']}), "
        f"{votes['status_503']} 'briefly away' answers retried; "
        f"connection errors {votes['errors']}; other 4xx {votes['status_4xx']}"
    )
    print(
        f"votes/s              {len(acked) / votes['seconds']:.1f} pairs/s ({expected_rows / votes['seconds']:.1f} "
        f"rows/s)"
    )
    print(
        f"vote POST latency    p50 {percentile(vote_ms, 0.5):.0f} ms, p99 {percentile(vote_ms, 0.99):.0f} ms "
        f"(n={len(vote_ms)})"
    )
    print(
        f"next GET latency     p50 {percentile(next_ms, 0.5):.0f} ms, p99 {percentile(next_ms, 0.99):.0f} ms "
        f"(n={len(next_ms)})"
    )
    print(
        f"baseline /healthz    p50 {percentile(health_ms, 0.5):.0f} ms, p99 {percentile(health_ms, 0.99):.0f} ms, "
        f"{len(health_ms) / base['seconds']:.0f} req/s with the same {args.users} users"
    )
    pairs_per_second, health_per_second = len(acked) / votes["seconds"], len(health_ms) / base["seconds"]
    print(
        f"a pair costs         {health_per_second / max(pairs_per_second, 1e-9):.1f} /healthz requests "
        f"({health_per_second:.0f} /healthz per s over {pairs_per_second:.1f} pairs per s)"
    )
    print(
        f"ratio vote / healthz p50 {percentile(vote_ms, 0.5) / percentile(health_ms, 0.5):.1f}x, "
        f"p99 {percentile(vote_ms, 0.99) / percentile(health_ms, 0.99):.1f}x"
    )


# --------------------------------------------------------------------------------------------------
# Seeding (a Django process)
# --------------------------------------------------------------------------------------------------


def seed_for_load(n_prompts: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    django.setup()
    from bench.next_assignment import seed
    from evalsite.rating import engine

    campaign, _ = seed(N_MODELS, n_prompts, N_SEEDS, n_raters=0)
    made = engine.prepare_campaign(campaign)
    print(
        json.dumps(
            {
                "campaign": campaign.pk,
                "invite": campaign.invite_token,
                "images": made["images"],
                "pairs": made["new_pairs"],
            }
        )
    )


# --------------------------------------------------------------------------------------------------
# The swarm (a gevent process: locust monkey-patches on import)
# --------------------------------------------------------------------------------------------------


def swarm(argv: list[str]) -> None:
    import gevent
    from locust import FastHttpUser, constant, events, task
    from locust.env import Environment
    from locust.exception import StopUser

    parser = argparse.ArgumentParser()
    for name in ("--host", "--mode", "--invite", "--out"):
        parser.add_argument(name, required=True)
    for name in ("--users", "--seconds", "--campaign"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--think", type=float, default=0.0)
    parser.add_argument("--protocol", default="page")
    args = parser.parse_args(argv)

    state = {
        "stop": False,
        "in_flight": 0,
        "acknowledged": {},
        "replayed": 0,
        "status_5xx": 0,
        "status_503": 0,
        "ack_times": [],
        "requests": 0,
        "joined": 0,
        "join_refused": 0,
        "status_4xx": 0,
        "errors": 0,
        "samples_4xx": [],
        "latency": {"vote": [], "next": [], "healthz": [], "join": []},
        "latency_at": {},  # name -> wall-clock time of each latency above (bench/soak.py plots them over time)
    }
    origin = args.host.replace("http://", "https://")

    def on_request(request_type, name, response_time, response_length, response=None, exception=None, **kw):
        state["requests"] += 1
        if exception is not None and getattr(response, "status_code", 0) == 0:
            state["errors"] += 1
            return
        code = response.status_code
        if code in BRIEFLY_AWAY:
            state["status_503"] += 1  # the site's "briefly away, try again" (or the proxy's), not a failure
        elif code >= 500:
            state["status_5xx"] += 1
        elif code >= 400:
            state["status_4xx"] += 1
            if len(state["samples_4xx"]) < 5:
                text = response.text or ""
                state["samples_4xx"].append(f"{name} {code} {text[:160]}")
        if state["measuring"]:
            state["latency"].setdefault(name, []).append(response_time)
            state["latency_at"].setdefault(name, []).append(time.time())

    events.request.add_listener(on_request)
    state["measuring"] = True

    class SimulatedRater(FastHttpUser):
        host = args.host
        wait_time = constant(args.think)

        # The session and CSRF cookies are Secure (production settings). geventhttpclient's cookie jar sends
        # Secure cookies only over https, and this client talks plain HTTP to gunicorn as a TLS proxy would,
        # so the rater keeps its cookies itself.
        cookies: dict

        def remember(self, response):
            for raw in response.headers.getlist("set-cookie") if response.headers else []:
                parsed = SimpleCookie()
                parsed.load(raw)
                self.cookies.update({name: morsel.value for name, morsel in parsed.items()})

        def headers(self, **extra):
            cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            return {
                "X-Forwarded-Proto": "https",
                "Origin": origin,
                "Accept": "application/json",
                "Cookie": cookie,
                **extra,
            }

        def csrf(self) -> str:
            return self.cookies["csrftoken"]

        def on_start(self):
            self.cookies = {}
            if args.mode == "baseline":
                return
            url = f"/join/{args.invite}"
            self.remember(self.client.get(url, headers=self.headers(), name="join"))
            joined = self.client.post(
                url,
                data={"csrfmiddlewaretoken": self.csrf()},
                headers=self.headers(),
                allow_redirects=False,
                name="join",
            )
            self.remember(joined)
            if joined.status_code != 302:  # refused (a join limit): this rater never votes; say so in the report
                state["join_refused"] += 1
                raise StopUser()
            state["joined"] += 1

        @task
        def rate_one(self):
            if state["stop"]:
                raise StopUser()
            if args.mode == "baseline":
                self.client.get("/healthz", headers=self.headers(), name="healthz")
                return
            state["in_flight"] += 1
            try:
                self.vote_once()
            finally:
                state["in_flight"] -= 1

        def patiently(self, send):
            """Send until the answer is not 'briefly away' (what the rater page does: wait Retry-After, send the
            same request again), for at most PATIENCE_SECONDS."""
            give_up = time.monotonic() + PATIENCE_SECONDS
            while True:
                response = send()
                if response.status_code not in BRIEFLY_AWAY and response.status_code != 0:
                    return response
                if time.monotonic() > give_up:
                    return response
                gevent.sleep(float(response.headers.get("Retry-After", 1) if response.headers else 1))

        shown = None  # page protocol: the pair on screen and the one preloaded behind it
        preloaded = None

        def ask_next(self, exclude: str | None = None):
            """GET next (with ?exclude=): the assignment, None when nothing is left, False when refused."""
            url = f"/api/assignments/next?campaign={args.campaign}" + (f"&exclude={exclude}" if exclude else "")
            response = self.patiently(lambda: self.client.get(url, headers=self.headers(), name="next"))
            return response.json()["assignment"] if response.status_code == 200 else False

        def vote_once(self):
            page = args.protocol == "page"
            if not page or self.shown is None:
                self.shown = self.ask_next()
                if self.shown is False:
                    self.shown = None
                    return
                if self.shown is None:
                    raise StopUser()
                self.preloaded = (self.ask_next(self.shown["id"]) or None) if page else None
            assignment, self.shown = self.shown, None
            url = assignment["votes_url"]
            if page:
                url += "?next=1" + (f"&exclude={self.preloaded['id']}" if self.preloaded else "")
            body = json.dumps(
                {
                    "idempotency_key": secrets.token_hex(12),
                    "choices": {
                        c["key"]: secrets.choice(["left", "right", "tie", "both_bad"]) for c in assignment["criteria"]
                    },
                    "time_taken_ms": 1500,
                }
            )
            sends = 2 if secrets.randbelow(10_000) < DOUBLE_SUBMIT_SHARE * 10_000 else 1
            answered = None
            for attempt in range(sends):
                response = self.patiently(
                    lambda: self.client.post(
                        url,
                        data=body,
                        name="vote",
                        headers=self.headers(**{"Content-Type": "application/json", "X-CSRFToken": self.csrf()}),
                    )
                )
                if response.status_code in (200, 201):
                    answered = response.json()
                    state["acknowledged"][assignment["id"]] = len(answered["choices"])
                    state["ack_times"].append(time.time())
                    state["replayed"] += int(attempt > 0 and answered["replayed"])
            if page and answered is not None and "assignment" in answered.get("next", {}):
                after = answered["next"]["assignment"]
                self.shown, self.preloaded = (self.preloaded, after) if self.preloaded else (after, None)
                if self.shown is None:
                    raise StopUser()  # nothing left for this rater
            # Otherwise (a refused vote or hand-out) the next pair is asked for again, as the page does.

    environment = Environment(user_classes=[SimulatedRater], events=events)
    runner = environment.create_local_runner()
    runner.start(args.users, spawn_rate=max(1, args.users / 5))
    state["started_at"] = time.time()
    start = time.monotonic()
    gevent.sleep(args.seconds)
    state["stop"] = True  # no new pair from now on; submissions in flight finish
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 30
    while state["in_flight"] and time.monotonic() < deadline:
        gevent.sleep(0.1)
    state["measuring"] = False
    runner.quit()
    Path(args.out).write_text(
        json.dumps(
            {
                "seconds": elapsed,
                "acknowledged": state["acknowledged"],
                "replayed": state["replayed"],
                "status_5xx": state["status_5xx"],
                "status_503": state["status_503"],
                "ack_times": state["ack_times"],
                "requests": state["requests"],
                "joined": state["joined"],
                "join_refused": state["join_refused"],
                "status_4xx": state["status_4xx"],
                "errors": state["errors"],
                "latency": state["latency"],
                "latency_at": state["latency_at"],
                "started_at": state["started_at"],
                "unfinished": state["in_flight"],
                "samples_4xx": state["samples_4xx"],
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        seed_for_load(int(sys.argv[2]) if len(sys.argv) > 2 else N_PROMPTS)
    elif len(sys.argv) > 1 and sys.argv[1] == "_swarm":
        swarm(sys.argv[2:])
    else:
        main()
