"""Does a dashboard request still pay for the replayed "certified best" fragility when a vote has just arrived?

    .venv/bin/python bench/fragility_request.py [--votes 21000] [--rounds 3] [--database-url ...]

Creates its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_bench_fragility, dropped
at the end unless --keep), seeds a finished run of 6 models x N prompts (Image rows only) and a campaign with
--votes stored votes on two criteria (7 raters; each model's strength fixed, ties 8%; left and right alternate),
then times the campaign dashboard page (dashboards:campaign through Django's test client, staff
session, DJANGO_DEBUG=0) in rounds, each after one new vote, so that the fragility cached for the votes is stale:

  request, stale   this branch: the page shows the latest answer and asks dashboards.refresh_fragility for one
  task             the task body for each criterion, in this process (what the worker spends)
  request, current this branch, after the task: the answer for these votes
  main, stale      the baseline timed in the same run: the page as main serves it, the replay computed in the
                   request (fragility_in_request replaced by main's synchronous fragility_for)

The figure to read: "request, stale" against "main, stale".
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.databases import recreate_database, release_database  # noqa: E402 (needs ROOT on the path)
from bench.next_assignment import configure_django, seed  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_bench_fragility"
N_MODELS, N_RATERS = 6, 7
CRITERIA = ("prompt_following", "aesthetics")
STRENGTHS = np.array([0.0, 0.05, 0.3, 0.35, 0.6, 0.62])  # two close leaders: a top decision worth replaying


def add_votes(campaign, raters, images_by_prompt, pairs, rng) -> None:
    """One Assignment per (rater, image pair) and one Vote per criterion on it, in bulk."""
    from django.utils import timezone

    from evalsite.rating.models import Assignment, Choice, Vote

    now = timezone.now()
    assignments, choices = [], []
    for n, (rater, prompt_id, a, b) in enumerate(pairs):
        left, right = (a, b) if n % 2 else (b, a)
        img_l, img_r = images_by_prompt[prompt_id][left], images_by_prompt[prompt_id][right]
        assignments.append(
            Assignment(
                campaign=campaign,
                rater=rater,
                prompt_id=prompt_id,
                image_left=img_l,
                image_right=img_r,
                pair_key=Assignment.make_pair_key(img_l.pk, img_r.pk),
                status=Assignment.Status.ANSWERED,
                expires_at=now + timedelta(minutes=10),
                answered_at=now,
            )
        )
        p_left = 1 / (1 + np.exp(-(STRENGTHS[left] - STRENGTHS[right])))
        choices.append(
            [
                Choice.TIE if rng.random() < 0.08 else (Choice.LEFT if rng.random() < p_left else Choice.RIGHT)
                for _ in CRITERIA
            ]
        )
    Assignment.objects.bulk_create(assignments, batch_size=2000)
    votes = [
        Vote(
            assignment=a,
            campaign=campaign,
            rater=a.rater,
            criterion=criterion,
            choice=choice,
            model_left=a.image_left.model,
            model_right=a.image_right.model,
            time_taken_ms=3000,
            idempotency_key=f"{a.pk}-{criterion}",
        )
        for a, per_criterion in zip(assignments, choices, strict=True)
        for criterion, choice in zip(CRITERIA, per_criterion, strict=True)
    ]
    Vote.objects.bulk_create(votes, batch_size=5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--votes", type=int, default=21000, help="stored votes (two criteria per rated pair)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.votes < 200 or args.rounds < 1:
        parser.error("--votes must be at least 200 and --rounds at least 1")
    os.environ.setdefault("EVALSITE_VAR_DIR", tempfile.mkdtemp(prefix="bench-fragility-"))  # its broker folder

    n_pairs = args.votes // len(CRITERIA)
    per_prompt = N_MODELS * (N_MODELS - 1) // 2
    n_prompts = -(-n_pairs // (per_prompt * N_RATERS)) + args.rounds * 2 + 1  # spare pairs for the new votes

    recreate_database(args.database_url)
    try:
        configure_django(args.database_url)
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client
        from django.urls import reverse

        from evalsite.dashboards import results, style, tasks
        from evalsite.rating.models import Vote
        from evalsite.runs.models import Image

        call_command("migrate", verbosity=0)
        from django.conf import settings
        from django.test import override_settings

        plain_static = {
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        override_settings(STORAGES=plain_static).enable()  # no collectstatic manifest here
        campaign, raters = seed(N_MODELS, n_prompts, 1, n_raters=N_RATERS)
        campaign.criteria = list(CRITERIA)
        campaign.save()
        images_by_prompt: dict[int, dict[int, Image]] = {}
        model_index = {m: i for i, m in enumerate(sorted(campaign.run.image_models.values_list("pk", flat=True)))}
        for image in Image.objects.filter(run=campaign.run).select_related("model"):
            images_by_prompt.setdefault(image.prompt_id, {})[model_index[image.model_id]] = image
        everything = [
            (rater, prompt_id, a, b)
            for prompt_id in sorted(images_by_prompt)
            for rater in raters
            for a, b in itertools.combinations(range(N_MODELS), 2)
        ]
        rng = np.random.default_rng(0)
        add_votes(campaign, raters, images_by_prompt, everything[:n_pairs], rng)
        spare = iter(everything[n_pairs:])
        print(f"{Vote.objects.filter(campaign=campaign).count():,} votes stored, 6 models, 2 criteria", flush=True)

        staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
        client = Client()
        client.force_login(staff)
        url = reverse("dashboards:campaign", args=[campaign.pk])

        def page() -> float:
            started = time.perf_counter()
            response = client.get(url, secure=True)
            seconds = time.perf_counter() - started
            assert response.status_code == 200, response.status_code
            return seconds

        def one_vote() -> None:
            add_votes(campaign, raters, images_by_prompt, [next(spare)], rng)

        this_branch = results.fragility_in_request

        def mains(counted, alpha, top_rule, **_):  # main's request: the replay computed here, cached by the votes
            return style.fragility_for(counted, alpha, top_rule), None

        page()  # warm up imports and the decisions card's own replay cache
        timings: dict[str, list[float]] = {k: [] for k in ("request, stale", "task", "request, current", "main, stale")}
        for _ in range(args.rounds):
            one_vote()
            timings["request, stale"].append(page())
            started = time.perf_counter()
            for criterion in CRITERIA:
                tasks.refresh_fragility(campaign.pk, criterion, 0.05, True)
            timings["task"].append(time.perf_counter() - started)
            timings["request, current"].append(page())
            one_vote()
            results.fragility_in_request = mains
            try:
                timings["main, stale"].append(page())
            finally:
                results.fragility_in_request = this_branch
        base = statistics.median(timings["main, stale"])
        print(f"\n{'':<18} {'median s':>9} {'min s':>7} {'max s':>7}   vs main, stale   (rounds={args.rounds})")
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"{name:<18} {median:9.2f} {min(values):7.2f} {max(values):7.2f}   {median / base:6.2f}x")
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        release_database(args.database_url, args.keep)


if __name__ == "__main__":
    main()
