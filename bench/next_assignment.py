"""Next-assignment latency with images for 10 models x 1,000 prompts x 4 seeds (40,000 images, 180,000 pairs).

    .venv/bin/python bench/next_assignment.py [--requests 1500] [--raters 50] [--database-url postgres://...]

Creates its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_bench_next, dropped
at the end unless --keep), migrates it, seeds the run with bulk_create (Image rows only, no files: the
endpoint never opens an image) and a campaign (3 votes per image pair, 10% gold), builds the image pairs
(timed), then measures, each figure against a baseline doing comparable work in the same run:

  /next endpoint   GET /api/assignments/next through Django's test client (session auth, throttle, engine,
                   serialisation) in the production settings shape (DJANGO_DEBUG=0); after every call the
                   rater answers, so every call hands out a new assignment (resumes are cheaper).
  hand-out         engine.hand_out() as a function, against the plainest possible hand-out: pick a random
                   prompt, seed and two models, read their two images, create the Assignment (no rater
                   history, no balance, no target, no policy, no locking).
  candidate query  the engine's pick of the concrete image pair (locked ImagePair row, index scan), against
                   the same constraints computed on the fly without the ImagePair table: one SQL query that
                   self-joins the images, counts each pair's assignments, excludes the rater's pairs and takes
                   the least assigned.

Prints p50 / p99 / mean in ms and the ratios.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import drop_database, recreate_database  # noqa: E402 (needs ROOT on the path)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_bench_next"
N_MODELS, N_PROMPTS, N_SEEDS = 10, 1000, 4


def configure_django(url: str) -> None:
    os.environ.update(
        {
            "DATABASE_URL": url,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "DJANGO_ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
            "EVALSITE_RATER_RATE": "1000000/min",  # the bench measures the engine, not the throttle
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collected static here
    django.setup()


def seed(n_models: int, n_prompts: int, n_seeds: int, n_raters: int):
    """Models, prompts, a finished run of Image rows, a campaign and its raters; returns (campaign, raters)."""
    from evalsite.catalog.models import ImageModel, Prompt, PromptSet
    from evalsite.rating.models import Campaign
    from evalsite.runs.models import ComparisonRun, Image, new_image_token, settings_hash

    models = ImageModel.objects.bulk_create(
        [
            ImageModel(name=f"bench-model-{i}", kind=ImageModel.Kind.INHOUSE, source=f"/ckpt/{i}")
            for i in range(n_models)
        ]
    )
    prompt_set = PromptSet.objects.create(name="bench prompts")
    prompts = Prompt.objects.bulk_create(
        [
            Prompt(
                prompt_set=prompt_set,
                position=i,
                text=f"bench prompt {i}" + (' with "TEXT"' if i % 10 == 0 else ""),
                detected_needs_text=i % 10 == 0,
            )
            for i in range(n_prompts)
        ]
    )
    run = ComparisonRun.objects.create(
        name="bench run", prompt_set=prompt_set, seeds=list(range(n_seeds)), status=ComparisonRun.Status.DONE
    )
    run.image_models.set(models)
    sampler = {"steps": 28}
    digest = settings_hash(sampler)
    images = [
        Image(
            run=run,
            model=m,
            prompt=p,
            seed=s,
            sampler_settings=sampler,
            settings_hash=digest,
            token=new_image_token(),
            file=f"images/bench/{m.pk}-{p.pk}-{s}.png",
            width=32,
            height=32,
            status=Image.Status.DONE,
        )
        for m in models
        for p in prompts
        for s in range(n_seeds)
    ]
    Image.objects.bulk_create(images, batch_size=5000)
    campaign = Campaign.objects.create(name="bench campaign", run=run, votes_per_pair=3, gold_rate=0.1)
    return campaign, make_raters(campaign, n_raters, "bench-rater")


def make_raters(campaign, n: int, prefix: str) -> list:
    """n new raters (users prefix-0, prefix-1, ...) who joined the campaign."""
    from django.contrib.auth import get_user_model

    from evalsite.rating.models import Rater

    user_model = get_user_model()
    users = user_model.objects.bulk_create([user_model(username=f"{prefix}-{i}") for i in range(n)])
    raters = Rater.objects.bulk_create([Rater(user=u) for u in users])
    campaign.raters.add(*raters)
    return raters


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, ms: list[float]) -> dict:
    row = {
        "name": name,
        "n": len(ms),
        "p50": percentile(ms, 0.5),
        "p99": percentile(ms, 0.99),
        "mean": statistics.fmean(ms),
    }
    print(
        f"{name:<11} n={row['n']:>5}  p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  mean {row['mean']:7.2f} ms",
        flush=True,
    )
    return row


def time_endpoint(campaign, raters, n_requests: int) -> list[float]:
    from django.test import Client

    from evalsite.rating.models import Assignment
    from evalsite.rating.voting import VoteSubmission, record_votes

    clients = []
    for rater in raters:
        client = Client()
        client.force_login(rater.user)
        clients.append(client)
    url = f"/api/assignments/next?campaign={campaign.pk}"
    before = Assignment.objects.filter(campaign=campaign).count()
    timings = []
    for i in range(n_requests):
        rater, client = raters[i % len(raters)], clients[i % len(clients)]
        start = time.perf_counter()
        response = client.get(url, secure=True)
        timings.append((time.perf_counter() - start) * 1000)
        body = response.json()
        if response.status_code != 200 or body["assignment"] is None:
            raise SystemExit(f"next failed: {response.status_code} {body}")
        a = body["assignment"]
        choices = {c["key"]: secrets.choice(["left", "right", "tie", "both_bad"]) for c in a["criteria"]}
        record_votes(a["id"], rater, VoteSubmission(f"bench-{a['id']}", choices, 1000))
    assert Assignment.objects.filter(campaign=campaign).count() == before + n_requests
    return timings


def time_hand_out(campaign, raters, n_requests: int) -> list[float]:
    from evalsite.rating import engine
    from evalsite.rating.voting import VoteSubmission, record_votes

    timings = []
    for i in range(n_requests):
        rater = raters[i % len(raters)]
        start = time.perf_counter()
        a = engine.hand_out(rater, campaign).assignment
        timings.append((time.perf_counter() - start) * 1000)
        choices = {c: secrets.choice(["left", "right", "tie", "both_bad"]) for c in campaign.criteria_for(a.prompt)}
        record_votes(a.id, rater, VoteSubmission(f"bench-{a.id}", choices, 1000))
    return timings


def time_candidate_query(campaign, raters, n_requests: int) -> list[float]:
    import random

    from django.db import transaction

    from evalsite.rating import engine

    model_ids = sorted(campaign.run.image_models.values_list("id", flat=True))
    timings = []
    for i in range(n_requests):
        model_a, model_b = sorted(random.sample(model_ids, 2))
        start = time.perf_counter()
        with transaction.atomic():
            assert engine._lock_image_pair(raters[i % len(raters)], campaign, model_a, model_b, []) is not None
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def time_baseline(campaign, raters, n_requests: int) -> list[float]:
    """Random prompt, seed and two models; read the two images; create the assignment."""
    import random
    from datetime import timedelta

    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from evalsite.rating.models import Assignment
    from evalsite.runs.models import Image

    prompt_ids = list(campaign.run.prompt_set.prompts.values_list("id", flat=True))
    model_ids = list(campaign.run.image_models.values_list("id", flat=True))
    timings = []
    for i in range(n_requests):
        start = time.perf_counter()
        try:
            with transaction.atomic():
                model_a, model_b = random.sample(model_ids, 2)
                left, right = Image.objects.filter(
                    run=campaign.run,
                    prompt_id=random.choice(prompt_ids),
                    seed=random.randrange(N_SEEDS),
                    model_id__in=(model_a, model_b),
                    status=Image.Status.DONE,
                )[:2]
                Assignment.objects.create(
                    campaign=campaign,
                    rater=raters[i % len(raters)],
                    prompt_id=left.prompt_id,
                    image_left=left,
                    image_right=right,
                    expires_at=timezone.now() + timedelta(seconds=600),
                )
        except IntegrityError:  # a random pair this rater already had: the baseline has no such check
            pass
        timings.append((time.perf_counter() - start) * 1000)
    return timings


ON_THE_FLY_SQL = """
SELECT a.id, b.id FROM runs_image a
JOIN runs_image b ON b.run_id = a.run_id AND b.prompt_id = a.prompt_id AND b.seed = a.seed AND a.model_id < b.model_id
LEFT JOIN (SELECT pair_key, count(*) AS n FROM rating_assignment
           WHERE campaign_id = %(campaign)s AND status <> 'expired' GROUP BY pair_key) c
       ON c.pair_key = LEAST(a.id, b.id) || '-' || GREATEST(a.id, b.id)
WHERE a.run_id = %(run)s AND a.status = 'done' AND b.status = 'done'
  AND a.model_id = %(model_a)s AND b.model_id = %(model_b)s AND COALESCE(c.n, 0) < %(target)s
  AND LEAST(a.id, b.id) || '-' || GREATEST(a.id, b.id) NOT IN
      (SELECT pair_key FROM rating_assignment WHERE rater_id = %(rater)s)
ORDER BY COALESCE(c.n, 0), random() LIMIT 1
"""


def time_on_the_fly(campaign, raters, n_requests: int) -> list[float]:
    import random

    from django.db import connection

    model_ids = sorted(campaign.run.image_models.values_list("id", flat=True))
    timings = []
    for i in range(n_requests):
        model_a, model_b = sorted(random.sample(model_ids, 2))
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                ON_THE_FLY_SQL,
                {
                    "campaign": campaign.pk,
                    "run": campaign.run_id,
                    "model_a": model_a,
                    "model_b": model_b,
                    "target": campaign.votes_per_pair,
                    "rater": raters[i % len(raters)].pk,
                },
            )
            assert cursor.fetchone() is not None
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument(
        "--requests", type=int, default=1500, help="timed /next calls, and as many hand_out calls (default %(default)s)"
    )
    parser.add_argument("--baseline-requests", type=int, default=1500)
    parser.add_argument("--on-the-fly-requests", type=int, default=100)
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()

    recreate_database(args.database_url)
    try:
        configure_django(args.database_url)
        from django.core.management import call_command
        from django.db import connection

        from evalsite.rating import engine
        from evalsite.rating.models import ImagePair

        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        campaign, raters = seed(N_MODELS, N_PROMPTS, N_SEEDS, args.raters)
        print(
            f"seeded {N_MODELS} models x {N_PROMPTS} prompts x {N_SEEDS} seeds = "
            f"{N_MODELS * N_PROMPTS * N_SEEDS} images in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        start = time.perf_counter()
        made = engine.prepare_campaign(campaign)
        print(
            f"prepare_campaign: {made['new_pairs']} image pairs, {made['new_gold_checks']} gold checks in "
            f"{time.perf_counter() - start:.1f} s",
            flush=True,
        )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        assert ImagePair.objects.filter(campaign=campaign).count() == made["new_pairs"]

        print(
            f"PostgreSQL {connection.cursor().connection.info.server_version}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        time_endpoint(campaign, raters, min(100, args.requests))  # warm caches and connections
        endpoint = summary("/next", time_endpoint(campaign, raters, args.requests))
        hand_out = summary("hand_out", time_hand_out(campaign, raters, args.requests))
        naive = summary("naive", time_baseline(campaign, raters, args.baseline_requests))
        candidate = summary("candidate", time_candidate_query(campaign, raters, args.on_the_fly_requests))
        on_the_fly = summary("on-the-fly", time_on_the_fly(campaign, raters, args.on_the_fly_requests))
        print(
            f"/next endpoint: p50 {endpoint['p50']:.1f} ms, p99 {endpoint['p99']:.1f} ms "
            f"({N_MODELS} models x {N_PROMPTS} prompts x {N_SEEDS} seeds)"
        )
        print(
            f"ratio hand_out / naive hand-out: p50 {hand_out['p50'] / naive['p50']:.1f}x, "
            f"p99 {hand_out['p99'] / naive['p99']:.1f}x"
        )
        print(
            f"ratio on-the-fly / ImagePair candidate query: p50 {on_the_fly['p50'] / candidate['p50']:.1f}x, "
            f"p99 {on_the_fly['p99'] / candidate['p99']:.1f}x"
        )
        connection.close()
    finally:
        if not args.keep:
            drop_database(args.database_url)


if __name__ == "__main__":
    main()
