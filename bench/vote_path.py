"""What one rated pair costs the web process: the vote path in one process, without HTTP or a load generator.

    .venv/bin/python bench/vote_path.py [--raters 20] [--pairs 300] [--rounds 3] [--profile [--profile-sort tottime]]

Creates its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_vote_path, dropped at the
end), seeds what bench/vote_load.py seeds (10 models x 300 prompts x 2 seeds, a campaign with 3 votes per pair and
10% gold), and has --raters raters join by the invite link through Django's test client in the production settings
shape (DJANGO_DEBUG=0, persistent connections). Then, in alternating rounds: GET /healthz --pairs times (the
cheapest request: the same middleware and one SELECT 1), --pairs rated pairs in two requests (GET
/api/assignments/next, POST the answer: the rater page's protocol before) and --pairs rated pairs as the page rates
them now (one request: POST the answer with ?next=1&exclude=<preloaded>, whose answer brings the pair after the
preloaded one), the raters taking turns. Prints per round the milliseconds per /healthz and per pair and their
ratio, the statements per /next and per vote (BEGIN and COMMIT included), and, over one more round, the database
time of each statement per pair as the page rates (time in execute: the server's work and the wait for it, as the
web process sees it). --profile adds a cProfile listing of one round of the page's pairs (cumulative time).

bench/vote_load.py measures the same path under gunicorn with 200 concurrent raters; this one says where a single
pair's time goes, and its ratio is the upper bound of what the server can do for a pair against a /healthz.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_vote_path"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=300, help="rated pairs (and /healthz requests) per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--profile", action="store_true", help="print a cProfile listing of one more round")
    parser.add_argument("--profile-sort", default="cumulative", help="the listing's order (pstats: tottime, ...)")
    return parser


def main() -> None:
    args = parser().parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.databases import drop_database, recreate_database
    from bench.servers import server_env

    recreate_database(args.database_url)
    try:
        with tempfile.TemporaryDirectory(prefix="vote-path-") as var_dir:
            os.environ.update(server_env(args.database_url, var_dir))
            os.environ["DJANGO_SETTINGS_MODULE"] = "evalsite.settings"
            measure(args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(args.database_url)


def measure(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.next_assignment import seed
    from bench.vote_load import N_MODELS, N_SEEDS
    from evalsite.rating import engine

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    campaign, _ = seed(N_MODELS, args.prompts, N_SEEDS, n_raters=0)
    engine.prepare_campaign(campaign)
    clients, page_clients = [], []  # raters of the two protocols apart: each holds its own open pairs
    for _ in range(2 * args.raters):
        client = Client(HTTP_X_FORWARDED_PROTO="https")
        client.get(f"/join/{campaign.invite_token}", secure=True)
        response = client.post(f"/join/{campaign.invite_token}", secure=True)
        assert response.status_code == 302, response.status_code
        (clients if len(clients) < args.raters else page_clients).append(client)

    def healthz(client) -> None:
        assert client.get("/healthz", secure=True).status_code == 200

    import contextlib

    def counting(count: bool):
        """The statements of a request when counting; nothing when timing (capturing forces Django's debug cursor,
        which times and records every statement: a cost no server pays)."""
        return CaptureQueriesContext(connection) if count else contextlib.nullcontext([])

    def rated_pair(client, count: bool = False) -> tuple[int, int]:
        """One pair asked for and answered; (statements of /next, of the vote) when queries are being captured."""
        with counting(count) as asked:
            response = client.get(f"/api/assignments/next?campaign={campaign.pk}", secure=True)
        shown = response.json()["assignment"]
        assert shown is not None, "the campaign ran out of pairs: use fewer --pairs or more --prompts"
        body = {"idempotency_key": str(uuid.uuid4()), "choices": {c["key"]: "left" for c in shown["criteria"]}}
        with counting(count) as voted:
            response = client.post(shown["votes_url"], json.dumps(body), content_type="application/json", secure=True)
        assert response.status_code == 201, response.content
        return len(asked), len(voted)

    held: dict[int, tuple[dict, dict | None]] = {}  # the page's (shown, preloaded) per client

    def page_pair(i: int, count: bool = False) -> int:
        """One pair as the page rates it: the answer brings the pair after the preloaded one. (statements)"""
        client = page_clients[i % len(page_clients)]
        if i % len(page_clients) not in held:
            first = client.get(f"/api/assignments/next?campaign={campaign.pk}", secure=True).json()["assignment"]
            url = f"/api/assignments/next?campaign={campaign.pk}&exclude={first['id']}"
            held[i % len(page_clients)] = (first, client.get(url, secure=True).json()["assignment"])
        shown, preloaded = held[i % len(page_clients)]
        body = {"idempotency_key": str(uuid.uuid4()), "choices": {c["key"]: "left" for c in shown["criteria"]}}
        url = f"{shown['votes_url']}?next=1&exclude={preloaded['id']}"
        with counting(count) as voted:
            response = client.post(url, json.dumps(body), content_type="application/json", secure=True)
        assert response.status_code == 201, response.content
        after = response.json()["next"]["assignment"]
        assert after is not None, "the campaign ran out of pairs: use fewer --pairs or more --prompts"
        held[i % len(page_clients)] = (preloaded, after)
        return len(voted)

    for client in clients:  # warm-up: every rater once, the engine's caches filled, statements prepared
        for _ in range(6):
            rated_pair(client)
    for i in range(6 * len(clients)):
        page_pair(i)
    statements = collections.Counter(rated_pair(clients[i % len(clients)], True) for i in range(len(clients)))
    page_statements = collections.Counter(page_pair(i, True) for i in range(len(clients)))

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.raters} raters; PostgreSQL")
    print(
        "round  /healthz ms | two requests: pair ms  / healthz  pairs/s | page (one request): pair ms  / healthz"
        "  pairs/s"
    )
    for r in range(args.rounds):
        started = time.perf_counter()
        for i in range(args.pairs):
            healthz(clients[i % len(clients)])
        health_ms = (time.perf_counter() - started) * 1000 / args.pairs
        started = time.perf_counter()
        for i in range(args.pairs):
            rated_pair(clients[i % len(clients)])
        pair_ms = (time.perf_counter() - started) * 1000 / args.pairs
        started = time.perf_counter()
        for i in range(args.pairs):
            page_pair(i)
        page_ms = (time.perf_counter() - started) * 1000 / args.pairs
        print(
            f"{r + 1:5d}  {health_ms:11.2f} | {pair_ms:21.2f}  {pair_ms / health_ms:7.1f}x  {1000 / pair_ms:7.1f} | "
            f"{page_ms:27.2f}  {page_ms / health_ms:7.1f}x  {1000 / page_ms:7.1f}"
        )
    shapes = ", ".join(f"/next {n} + vote {v} ({count} pairs)" for (n, v), count in statements.most_common())
    print(f"statements per pair, BEGIN and COMMIT included: {shapes}")
    shapes = ", ".join(f"{n} ({count} pairs)" for n, count in page_statements.most_common())
    print(f"statements per pair as the page rates (vote?next=1): {shapes}")

    spent: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            entry = spent[" ".join(sql.split())[:110]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    with connection.execute_wrapper(timed):
        for i in range(args.pairs):
            page_pair(i)
    total = sum(seconds for _, seconds in spent.values())
    print(
        f"database time per pair as the page rates {total * 1000 / args.pairs:.2f} ms (BEGIN/COMMIT not included), "
        "by statement:"
    )
    for sql, (n, seconds) in sorted(spent.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  {seconds * 1000 / args.pairs:6.2f} ms  x{n / args.pairs:4.2f}  {sql}")

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for i in range(args.pairs):
            page_pair(i)
        profile.disable()
        if os.environ.get("VOTE_PATH_PROFILE_OUT"):
            profile.dump_stats(os.environ["VOTE_PATH_PROFILE_OUT"])
        pstats.Stats(profile).sort_stats(args.profile_sort).print_stats(40)


if __name__ == "__main__":
    main()
