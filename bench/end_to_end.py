"""End-to-end proof: does the platform name the truly better model, from real images and HTTP votes?

    .venv/bin/python bench/end_to_end.py [--campaigns 20] [--raters 50] [--bad-share 0.2] [--seeds 4]

One command, in this order:
  1. its own PostgreSQL database (default postgres://postgres@127.0.0.1:5432/evalsite_e2e, dropped at the end
     unless --keep), migrated; the demo models (every image checkpoint in demo_models/, or --models) registered;
     a prompt set of held-out demo prompts (never seen in training: every held-out shape prompt, and a seeded
     sample of held-out position and word prompts); a comparison run of every model x prompt x --seeds, its
     jobs run by the gpu task's own code (evalsite.runs.gpu_tasks.run_job), images stored as PNG files;
  2. the truth, from the same image files: `generation.demo_judge` scores every image on each question
     (prompt following, aesthetics, typography); a model's truth per question is its mean score, the truly
     best model the one with the highest mean; and CLIP score / FID per model (the platform's metrics task
     with the project's own CLIP-style model, demo_models/clip-demo);
  3. gunicorn in the production settings shape (DJANGO_DEBUG=0, behind a "TLS proxy": X-Forwarded-Proto);
  4. per campaign (--campaigns of them per crowd, crowd seeds 0..N-1): a fresh campaign on the run with the
     real assignment engine (active pair choice, gold checks), and a simulated crowd of --raters raters
     (evalsite.crowd: they join through the simulation invite link and vote only through the HTTP API).
     The bench reads the platform's verdict through the staff decisions API every --poll seconds, with
     quality control on (flagged raters left out) and off, and records for each question when the top model
     was first certified, which model, and after how many counted votes. A campaign ends when every question
     is certified both ways, when its image pairs are used up, or after --max-minutes;
  5. a table per crowd ("clean": honest raters only; "bad": --bad-share random, always-left and too-fast
     raters) and per question: campaigns that certified, the share of those whose certified model is the
     truly best (the bar is >= 98%), the median counted votes it took, the Spearman correlation of the final
     Bradley-Terry order with the truth order, and the truth itself; then CLIP score and FID against the truth.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/evalsite_e2e"
QUESTIONS = ("prompt_following", "aesthetics", "typography")
HELDOUT_SAMPLE = {"position": 20, "word": 20}  # held-out prompts of these kinds (all 14 held-out shape prompts)


# --------------------------------------------------------------------------------------------------
# Orchestration (plain process)
# --------------------------------------------------------------------------------------------------


def django_step(env: dict, step: str, *args: str) -> dict:
    """Run one step of this script in a Django process; its last stdout line is JSON."""
    from bench.servers import django_step as run_step

    return run_step(__file__, env, step, *args)


def spearman(order: list[str], truth: dict[str, float]) -> float:
    from scipy.stats import spearmanr

    models = [m for m in order if m in truth]
    if len(models) < 2:
        return float("nan")
    rank_platform = {m: i for i, m in enumerate(models)}
    rank_truth = {m: i for i, m in enumerate(sorted(models, key=lambda m: -truth[m]))}
    return float(spearmanr([rank_platform[m] for m in models], [rank_truth[m] for m in models])[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--models", help="comma-separated checkpoint directories (default: demo_models/*)")
    parser.add_argument("--seeds", type=int, default=4, help="images per model and prompt")
    parser.add_argument("--campaigns", type=int, default=20, help="campaigns per crowd")
    parser.add_argument("--raters", type=int, default=50)
    parser.add_argument("--bad-share", type=float, default=0.2, help="share of bad raters in the 'bad' crowd")
    parser.add_argument("--crowds", default="clean,bad", help="which crowds to run: clean, bad or both")
    parser.add_argument("--votes-per-pair", type=int, default=5)
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between reads of the decisions")
    parser.add_argument("--max-minutes", type=float, default=6.0, help="per campaign")
    parser.add_argument("--think-scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--out", help="write every campaign's record here as JSON lines")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    crowds = [c for c in args.crowds.split(",") if c]
    if set(crowds) - {"clean", "bad"}:
        parser.error("--crowds takes clean, bad or clean,bad")

    from bench.databases import drop_database, recreate_database
    from bench.servers import log_tracebacks, prepare_site, server_env, start_gunicorn, stop_server

    recreate_database(args.database_url)
    var_dir = tempfile.mkdtemp(prefix="e2e-")
    env = server_env(args.database_url, var_dir, EVALSITE_TORCH_THREADS="1", HF_HUB_OFFLINE="1",
                     TRANSFORMERS_OFFLINE="1")  # fmt: skip
    server = None
    try:
        prepare_site(env)
        started = time.monotonic()
        seeded = django_step(env, "_seed", "--seeds", str(args.seeds), "--models", args.models or "")
        print(
            f"run: {len(seeded['models'])} models x {seeded['prompts']} held-out prompts x {args.seeds} seeds = "
            f"{seeded['images']} images, generated in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        print_truth(seeded["truth"], seeded["metrics"])
        server, host = start_gunicorn(env, args.workers, args.threads, Path(var_dir) / "gunicorn.log", timeout=120)
        records = []
        for crowd in crowds:
            for seed in range(args.campaigns):
                campaign = django_step(env, "_campaign", "--name", f"e2e {crowd} {seed}",
                                       "--votes-per-pair", str(args.votes_per_pair))  # fmt: skip
                record = run_campaign(host, campaign, seeded, crowd, seed, args)
                records.append(record)
                print(campaign_line(record, seeded["truth"]), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(record) + "\n")
        print_table(records, seeded["truth"], crowds)
        tracebacks = log_tracebacks(Path(var_dir) / "gunicorn.log")
        print(f"\ngunicorn log: {tracebacks} tracebacks ({var_dir}/gunicorn.log)")
    finally:
        stop_server(server)
        if not args.keep:
            drop_database(args.database_url)


# --------------------------------------------------------------------------------------------------
# One campaign: a crowd votes, the bench reads the platform's decisions
# --------------------------------------------------------------------------------------------------


def staff_session(host: str, username: str, password: str):
    """A logged-in staff session (the researcher reading the dashboards' API)."""
    import re

    import requests

    from evalsite.crowd.client import behind_tls_proxy

    session = behind_tls_proxy(requests.Session(), host)
    page = session.get(f"{host}/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = session.post(
        f"{host}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{host}/accounts/login/".replace("http://", "https://")},
    )
    if done.status_code != 200 or "/accounts/login/" in done.url:
        raise SystemExit(f"staff login failed ({done.status_code} at {done.url})")
    return session


def run_campaign(host: str, campaign: dict, seeded: dict, crowd: str, seed: int, args) -> dict:
    from evalsite.crowd.crowd import Crowd, crowd_mix

    mix = crowd_mix(bad_share=args.bad_share if crowd == "bad" else 0.0)
    staff = staff_session(host, seeded["staff"]["username"], seeded["staff"]["password"])
    invite = f"{host}/join/{campaign['simulation_token']}"
    people = Crowd(invite, args.raters, mix, seed=1000 * (crowd == "bad") + seed,
                   think_scale=args.think_scale, behind_tls_proxy=True)  # fmt: skip
    modes = ("exclude", "include") if crowd == "bad" else ("exclude",)
    first = {mode: {} for mode in modes}  # mode -> question -> {model, votes, seconds}
    last: dict[str, dict] = {}
    started = time.monotonic()
    people.start(args.max_minutes)
    try:
        while True:
            time.sleep(args.poll)
            exhausted = False
            for mode in modes:
                answer = staff.get(
                    f"{host}/dashboards/api/campaigns/{campaign['id']}/decisions", params={"flagged": mode}
                )
                answer.raise_for_status()
                body = answer.json()
                last[mode] = body
                exhausted = body["progress"]["image_pairs_answered"] >= body["progress"]["image_pair_votes_target"]
                for row in body["by_criterion"]:
                    decision = row["decision"]
                    if decision and decision["top_model"]["certified"] and row["criterion"] not in first[mode]:
                        first[mode][row["criterion"]] = {
                            "model": decision["top_model"]["model_name"],
                            "votes": decision["votes"],
                            "seconds": round(time.monotonic() - started, 1),
                        }
            asked = {row["criterion"] for row in last[modes[0]]["by_criterion"] if row["decision"]}
            everything = all(asked and asked <= set(first[mode]) for mode in modes)
            if everything or exhausted or time.monotonic() - started > args.max_minutes * 60:
                break
    finally:
        people.stop()
        summary = people.join()
    final = {
        mode: {
            row["criterion"]: {"order": row["decision"]["models_in_order"], "votes": row["decision"]["votes"]}
            for row in last[mode]["by_criterion"]
            if row["decision"]
        }
        for mode in modes
    }
    flagged = flag_counts(last[modes[0]]["raters"])
    return {
        "crowd": crowd,
        "seed": seed,
        "campaign": campaign["id"],
        "pairs": summary.pairs,
        "seconds": round(time.monotonic() - started, 1),
        "server_errors": sum(r.server_errors for r in summary.reports),
        "certified": first,
        "final": final,
        "raters_flagged": flagged,
    }


def flag_counts(raters: list[dict]) -> dict:
    """Quality control's flags by the kind each simulated rater was given (its participant id: sim-<kind>-<n>)."""
    from evalsite.crowd.behaviour import BAD_KINDS

    kinds = [(str(r["participant"]).split("-")[1], bool(r["flagged"])) for r in raters]
    bad = [flagged for kind, flagged in kinds if kind in BAD_KINDS]
    honest = [flagged for kind, flagged in kinds if kind not in BAD_KINDS]
    return {
        "raters": len(kinds),
        "flagged": sum(f for _, f in kinds),
        "bad": len(bad),
        "bad_flagged": sum(bad),
        "honest": len(honest),
        "honest_flagged": sum(honest),
    }


def campaign_line(record: dict, truth: dict) -> str:
    parts = []
    for question, cert in record["certified"]["exclude"].items():
        best = max(truth[question], key=truth[question].get)
        mark = "ok" if cert["model"] == best else "WRONG"
        parts.append(f"{question}: {cert['model']} at {cert['votes']:.0f} votes ({mark})")
    flags = record["raters_flagged"]
    return (
        f"{record['crowd']:>5} seed {record['seed']:>2}: {record['pairs']} pairs in {record['seconds']:.0f} s; "
        + ("; ".join(parts) or "nothing certified")
        + f"; flagged {flags['flagged']}/{flags['raters']} (bad {flags['bad_flagged']}/{flags['bad']}, "
        f"honest {flags['honest_flagged']}/{flags['honest']}); 5xx {record['server_errors']}"
    )


def print_truth(truth: dict, metrics: dict) -> None:
    print("\ntruth from the checker (mean graded score per model; share of images fully right in brackets):")
    models = sorted(truth["prompt_following"], key=lambda m: -truth["prompt_following"][m])
    print(f"  {'model':<28}" + "".join(f"{q:>20}" for q in QUESTIONS) + f"{'CLIP score':>12}{'FID (CLIP)':>12}")
    for m in models:
        cells = []
        for q in QUESTIONS:
            value = truth[q].get(m)
            cells.append(f"{value:>20.3f}" if value is not None else f"{'-':>20}")
        clip, fid = metrics.get("clip_score", {}).get(m), metrics.get("fid_clip", {}).get(m)
        print(f"  {m:<28}" + "".join(cells) + (f"{clip:>12.2f}" if clip is not None else f"{'-':>12}")
              + (f"{fid:>12.2f}" if fid is not None else f"{'-':>12}"))  # fmt: skip
    print(f"  fully right: {json.dumps(truth['all_correct'])}")
    print("  automated metrics against the truth (Spearman of the metric's order with each question's truth order):")
    for metric, higher_is_better in (("clip_score", True), ("fid_clip", False)):
        values = metrics.get(metric, {})
        if len(values) < 2:
            print(f"    {metric}: not computed")
            continue
        order = sorted(values, key=lambda m: -values[m] if higher_is_better else values[m])
        cells = ", ".join(f"{q} {spearman(order, truth[q]):+.2f}" for q in QUESTIONS if truth.get(q))
        print(f"    {metric} order {' > '.join(order)}: {cells}")


def pairs_in_order(order: list[str], truth: dict[str, float]) -> tuple[int, int]:
    """(model pairs the platform's order puts as the truth does, model pairs compared); truth ties are skipped."""
    models = [m for m in order if m in truth]
    agree = total = 0
    for i, a in enumerate(models):
        for b in models[i + 1 :]:  # the platform ranks a above b
            if truth[a] != truth[b]:
                total += 1
                agree += truth[a] > truth[b]
    return agree, total


def print_table(records: list[dict], truth: dict, crowds: list[str]) -> None:
    import numpy as np

    print("\nverdict against the truth, per crowd, question and quality control")
    print("  certified: campaigns whose top model the platform certified (alpha 0.05, anytime-valid); right: of")
    print("  those, how many named the truly best; pairs in order: model pairs the final Bradley-Terry order puts")
    print("  as the truth does, over all campaigns; margin: the truly best model's lead in mean score")
    print(f"  {'crowd':<6}{'QC':<5}{'question':<18}{'certified':>10}{'right':>10}{'median votes':>14}"
          f"{'Spearman':>10}{'pairs in order':>16}{'margin':>8}")  # fmt: skip
    for crowd in crowds:
        rows = [r for r in records if r["crowd"] == crowd]
        for mode in ("exclude", "include") if crowd == "bad" else ("exclude",):
            for question in QUESTIONS:
                if question not in truth or not truth[question]:
                    continue
                ranked = sorted(truth[question].values(), reverse=True)
                best = max(truth[question], key=truth[question].get)
                certs = [r["certified"][mode][question] for r in rows if question in r["certified"][mode]]
                right = sum(c["model"] == best for c in certs)
                votes = [c["votes"] for c in certs]
                finals = [r["final"][mode][question]["order"] for r in rows if question in r["final"][mode]]
                rhos = [spearman(order, truth[question]) for order in finals]
                agree = [pairs_in_order(order, truth[question]) for order in finals]
                in_order = f"{sum(a for a, _ in agree)}/{sum(t for _, t in agree)}"
                print(
                    f"  {crowd:<6}{'on' if mode == 'exclude' else 'off':<5}{question:<18}"
                    f"{len(certs):>6}/{len(rows):<3}"
                    f"{(f'{right}/{len(certs)}' if certs else '-'):>10}"
                    f"{(f'{np.median(votes):.0f}' if votes else '-'):>14}"
                    f"{np.nanmean(rhos) if rhos else float('nan'):>10.2f}"
                    f"{in_order:>16}{ranked[0] - ranked[1] if len(ranked) > 1 else float('nan'):>8.3f}"
                )
        flags = {
            k: sum(r["raters_flagged"][k] for r in rows) for k in ("bad", "bad_flagged", "honest", "honest_flagged")
        }
        print(
            f"  {crowd}: quality control flagged {flags['bad_flagged']} of {flags['bad']} bad raters and "
            f"{flags['honest_flagged']} of {flags['honest']} honest ones; {sum(r['pairs'] for r in rows)} pairs "
            f"answered, {sum(r['server_errors'] for r in rows)} 5xx seen"
        )


# --------------------------------------------------------------------------------------------------
# Django steps (each its own process)
# --------------------------------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    django.setup()


def seed_run(argv: list[str]) -> None:
    """Models, held-out prompts, the run and its images, the truth, CLIP score / FID, a staff account."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, required=True)
    parser.add_argument("--models", default="")
    args = parser.parse_args(argv)
    _django()
    import random

    from django.contrib.auth import get_user_model

    from evalsite.catalog.models import ImageModel
    from evalsite.catalog.prompt_files import PromptRow
    from evalsite.catalog.services import create_prompt_set
    from evalsite.demo.management.commands.seed_demo import demo_checkpoints, sampler_settings_from
    from evalsite.runs import services
    from evalsite.runs.gpu_tasks import run_job
    from evalsite.runs.models import GenerationJob, Image
    from generation import demo_domain
    from generation.demo_judge import judge_image

    if args.models:
        found = []
        for path in args.models.split(","):
            found += [c for c in demo_checkpoints(Path(path).resolve().parent) if c[2] == Path(path).resolve()]
    else:
        found = demo_checkpoints(ROOT / "demo_models")
    models = [
        ImageModel.objects.create(name=name, kind=kind, source=str(path), sampler_settings=sampler_settings_from(meta))
        for name, kind, path, meta in found
    ]
    rng = random.Random(0)
    specs = list(demo_domain.all_specs("heldout", ["shape"]))
    for kind, n in HELDOUT_SAMPLE.items():
        specs += rng.sample(demo_domain.all_specs("heldout", [kind]), n)
    rows = [
        PromptRow(line=i + 1, text=s.caption, category=demo_domain.CATEGORY[s.kind],
                  challenge=demo_domain.CHALLENGE[s.kind], note="held-out combination", needs_text=s.kind == "word",
                  rendered_text=getattr(s, "word", ""))
        for i, s in enumerate(specs)
    ]  # fmt: skip
    prompt_set = create_prompt_set("e2e held-out", rows, source_file="generation.demo_domain")
    run = services.create_run(
        name="e2e", prompt_set=prompt_set, image_models=models, seeds=list(range(args.seeds)), dispatch=False
    ).run
    for job in GenerationJob.objects.filter(run=run).order_by("pk"):
        run_job(job.pk, task_id=f"e2e-{job.pk}")
    images = list(Image.objects.in_run(run.pk).filter(status=Image.Status.DONE).select_related("model", "prompt"))
    scores: dict[str, dict[str, list[float]]] = {q: {} for q in (*QUESTIONS, "all_correct")}
    for image in images:
        with image.file.open("rb") as f:
            from PIL import Image as PILImage

            judged = judge_image(PILImage.open(f).convert("RGB"), image.prompt.text)
        for q in QUESTIONS:
            value = judged.get(q)
            if value is not None:
                scores[q].setdefault(image.model.name, []).append(value)
        scores["all_correct"].setdefault(image.model.name, []).append(float(judged.correct))
    truth = {q: {m: round(sum(v) / len(v), 4) for m, v in by_model.items()} for q, by_model in scores.items()}
    metrics = compute_metrics(run)
    password = secrets.token_urlsafe(12)
    get_user_model().objects.create_superuser("bench-admin", password=password)
    print(
        json.dumps(
            {
                "run": run.pk,
                "models": [m.name for m in models],
                "prompts": len(specs),
                "images": len(images),
                "truth": truth,
                "metrics": metrics,
                "staff": {"username": "bench-admin", "password": password},
            }
        )
    )


def compute_metrics(run) -> dict:
    """CLIP score and FID per model, by the platform's own metrics code (the run page's "compute metrics")."""
    from evalsite.dashboards.models import MetricResult
    from evalsite.dashboards.run_metrics import compute_run_metrics

    compute_run_metrics(run)
    out: dict[str, dict[str, float]] = {}
    for row in MetricResult.objects.filter(run=run).select_related("model"):
        out.setdefault(row.metric, {})[row.model.name] = row.value
    return out


def new_campaign(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--votes-per-pair", type=int, required=True)
    args = parser.parse_args(argv)
    _django()
    from evalsite.rating import engine
    from evalsite.rating.models import Campaign
    from evalsite.runs.models import ComparisonRun

    campaign = Campaign.objects.create(
        name=args.name, run=ComparisonRun.objects.get(name="e2e"), votes_per_pair=args.votes_per_pair
    )
    engine.prepare_campaign(campaign)
    print(json.dumps({"id": campaign.pk, "simulation_token": campaign.simulation_token}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        seed_run(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_campaign":
        new_campaign(sys.argv[2:])
    else:
        main()
