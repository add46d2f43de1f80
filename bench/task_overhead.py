"""Platform overhead of the generation service: images per second through the task path vs calling the backend.

    .venv/bin/python bench/task_overhead.py [--images 64] [--batch 32] [--repeats 2] [--checkpoint DIR --kind K]
        [--device cuda] [--pipeline sd15|sd3 [--tiny]] [--options '{"precision": "fp16", "compile": "default"}']

Both paths use the same model on the same device (on the CPU one torch thread each), the same prompts, seeds,
settings, runtime options and batch size, in the same run (alternating, so load changes on a shared machine hit
both). `--pipeline` saves a diffusers pipeline of bench/diffusers_throughput.py (random weights, real size, or
small with --tiny) and benchmarks it: a GPU's image rate, where the task's own overhead is no longer hidden
behind seconds of CPU generation.

  direct   backend.generate(prompts, seeds, settings) batch after batch in this process (model loaded before)
  task     services.create_run -> on-commit send of generation.generate_batch jobs -> a real Celery worker
           (tests/support.py's WorkerProcess: `bin/process worker` on the gpu queue, concurrency 1, prefetch 1,
           prefork; model already in its cache from a warm-up job) -> PNG files in storage and rows marked done;
           timed from before create_run to the finished_at of the last image row (the database clock of the commit)

Embedded defaults: a fresh SQLite database, the filesystem broker and a media folder in a temporary
directory; `--production`: PostgreSQL and Redis, as a deployment runs. The model is the first in-house
checkpoint in demo_models/, else demo_models/unet-baseline, else a tiny random in-house checkpoint (printed).
Target: task / direct >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation import contract  # noqa: E402 (torch-free; importable once ROOT is on the path)

PRODUCTION_DB = "postgres://postgres@127.0.0.1:5432/evalsite_bench_task_overhead"
PRODUCTION_BROKER = "redis://127.0.0.1:6379/7"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64, help="images per measurement")
    p.add_argument("--batch", type=int, default=32, help="images per job = per backend call")
    p.add_argument("--repeats", type=int, default=3, help="measurements per path (alternating)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--checkpoint", help="model directory (default: see above)")
    p.add_argument("--kind", choices=contract.GENERATING_KINDS)
    p.add_argument("--pipeline", choices=("sd15", "sd3"), help="a diffusers pipeline built and saved here")
    p.add_argument(
        "--tiny", action="store_true", help="with --pipeline: its tiny version (16 px images at hundreds a second)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--options", default="{}", help="the model's runtime options, JSON")
    p.add_argument(
        "--production",
        action="store_true",
        help=f"PostgreSQL ({PRODUCTION_DB}, recreated and dropped) and Redis ({PRODUCTION_BROKER}) instead of "
        "SQLite and the filesystem broker",
    )
    return p.parse_args()


def pick_model(args, workdir: Path) -> tuple[str, str, str, int]:
    """(kind, source, what it is, image side in pixels) of the model to benchmark."""
    if args.pipeline:
        from bench.diffusers_throughput import build

        pipe, side = build(args.pipeline, "cpu", tiny=args.tiny)
        path = workdir / f"pipeline-{args.pipeline}"
        pipe.save_pretrained(path)
        return contract.DIFFUSERS, str(path), f"{args.pipeline} pipeline, random weights", side
    if args.checkpoint:
        if not args.kind:
            sys.exit("--checkpoint needs --kind")
        return args.kind, str(Path(args.checkpoint).resolve()), "given checkpoint", args.size
    demo = ROOT / "demo_models"
    for path in sorted(demo.iterdir()) if demo.is_dir() else []:
        try:
            meta = json.loads((path / contract.CONFIG_FILE).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("format") == contract.MMDIT_FORMAT:
            return contract.INHOUSE, str(path), f"demo in-house MM-DiT {path.name}", args.size
    if (demo / "unet-baseline" / contract.CONFIG_FILE).is_file():
        return (
            contract.UNET_BASELINE,
            str(demo / "unet-baseline"),
            "demo UNet baseline (no in-house demo model yet)",
            args.size,
        )
    from tests.support import tiny_inhouse_checkpoint

    path = tiny_inhouse_checkpoint(workdir / "tiny-inhouse")
    return contract.INHOUSE, str(path), "tiny random in-house checkpoint, 16x16 (no demo model found)", 16


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="task-overhead-"))
    if args.production:
        from bench.databases import recreate_database

        recreate_database(PRODUCTION_DB)
        import redis

        redis.Redis.from_url(PRODUCTION_BROKER).flushdb()  # no message of an earlier run's jobs
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "EVALSITE_VAR_DIR": str(workdir),
            "DATABASE_URL": PRODUCTION_DB if args.production else f"sqlite:///{workdir / 'bench.sqlite3'}",
            "CELERY_BROKER_URL": PRODUCTION_BROKER if args.production else "filesystem://",
            "EVALSITE_MEDIA_ROOT": str(workdir / "media"),
            "EVALSITE_DEVICE": args.device,
            "HF_HUB_OFFLINE": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    import torch
    from django.core.management import call_command
    from django.db.models import Max
    from django.utils import timezone

    from evalsite.catalog.models import ImageModel, Prompt, PromptSet
    from evalsite.runs import services
    from evalsite.runs.models import Image
    from generation.backends import generate_in_batches, load_backend, resolve_device
    from generation.demo_domain import demo_prompt_rows
    from tests.support import WorkerProcess, wait_for

    device = resolve_device(args.device)
    options = json.loads(args.options)
    if device == "cpu":
        torch.set_num_threads(1)  # the worker runs with EVALSITE_TORCH_THREADS=1 too
    call_command("migrate", verbosity=0)
    kind, source, what, size = pick_model(args, workdir)
    rows = demo_prompt_rows()
    prompt_set = PromptSet.objects.create(name="bench prompts")
    Prompt.objects.bulk_create(
        Prompt(prompt_set=prompt_set, position=i, text=rows[i % len(rows)]["text"]) for i in range(args.images)
    )
    prompts = list(prompt_set.prompts.order_by("position"))
    settings = {"steps": args.steps, "guidance_scale": 4.0, "height": size, "width": size}
    model = ImageModel(name="bench-model", kind=kind, source=source, sampler_settings=settings, runtime_options=options)
    model.full_clean()  # runtime options this kind does not take stop here, with the reason
    model.save()
    sampler = services.effective_settings(model, {})

    print(f"model: {what} ({kind}, {source})")
    where = "CPU, 1 thread" if device == "cpu" else torch.cuda.get_device_name(torch.device(device))
    print(
        f"{args.images} images per measurement, batch {args.batch}, {args.steps} steps, {size}x{size}, {where}, "
        f"runtime options {json.dumps(options)}, {args.repeats} repeats per path, alternating"
    )
    backend = load_backend(kind, source, device, options=options)
    # warm-up, both paths: one batch of the measured size (a compiled denoiser compiles once per shape)
    warm_up = min(args.batch, args.images)
    backend.generate([prompts[0].text] * warm_up, [0] * warm_up, sampler)

    worker_env = {}
    if device != "cpu":  # the harness's worker runs on the CPU with one thread unless told otherwise
        worker_env = {
            "EVALSITE_DEVICE": device,
            "OMP_NUM_THREADS": str(os.cpu_count() or 1),
            "EVALSITE_TORCH_THREADS": "0",
        }
    worker = WorkerProcess(
        workdir, workdir / "media", workdir / "worker.log", queues=contract.GPU_QUEUE, extra_env=worker_env
    ).start()
    try:
        warm = services.create_run(
            name="warm-up",
            prompt_set=prompt_set,
            image_models=[model],
            seeds=[999_999],
            prompts=prompts[:warm_up],
            batch_size=warm_up,
        ).run
        wait_for(
            lambda: Image.objects.filter(run=warm, status="done").count() == warm_up,
            timeout=1800,
            what="the warm-up job",
            worker=worker,
        )

        direct, task, worker_generation = [], [], []
        for rep in range(args.repeats):
            seeds = [1000 * (rep + 1)]  # new images every repeat: nothing is reused
            texts = [p.text for p in prompts]
            t0 = time.perf_counter()
            for _ in generate_in_batches(backend, texts, seeds * len(texts), sampler, args.batch):
                pass
            direct.append(args.images / (time.perf_counter() - t0))

            started = timezone.now()
            run = services.create_run(
                name=f"bench {rep}", prompt_set=prompt_set, image_models=[model], seeds=seeds, batch_size=args.batch
            ).run
            # Poll slowly (polling must not steal the worker's CPU); the end is the last row's finished_at.
            wait_for(
                lambda run=run: Image.objects.filter(run=run, status="done").count() == args.images,
                timeout=3600,
                interval=0.5,
                what=f"run {run.pk}",
                worker=worker,
            )
            last = Image.objects.filter(run=run).aggregate(last=Max("finished_at"))["last"]
            elapsed = (last - started).total_seconds()
            task.append(args.images / elapsed)
            generation = sum(Image.objects.filter(run=run).values_list("generation_seconds", flat=True))
            worker_generation.append(generation / elapsed)
            print(
                f"  repeat {rep}: direct {direct[-1]:.3f} img/s, task {task[-1]:.3f} img/s "
                f"(ratio {task[-1] / direct[-1]:.3f}; worker generating {100 * worker_generation[-1]:.1f}% "
                f"of the task wall time)"
            )
    finally:
        worker.stop()
    d, t = statistics.median(direct), statistics.median(task)
    paired = statistics.median(tk / dr for tk, dr in zip(task, direct, strict=True))
    print(f"direct backend: {d:.3f} images/s (median)")
    print(f"task path:      {t:.3f} images/s (median)")
    print(f"ratio task/direct: {t / d:.3f} of the medians, {paired:.3f} median of the paired repeats (target >= 0.9)")
    print(
        f"time the worker spent outside the model (dispatch, broker, PNG, storage, database): "
        f"{100 * (1 - statistics.median(worker_generation)):.1f}% of the task wall time (median)"
    )
    print(f"work dir (media, worker log{'' if args.production else ', database'}): {workdir}")
    if args.production:
        from bench.databases import release_database

        release_database(PRODUCTION_DB)


if __name__ == "__main__":
    main()
