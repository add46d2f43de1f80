"""Platform overhead of the generation service: images per second through the task path vs calling the backend.

    .venv/bin/python bench/task_overhead.py [--images 64] [--batch 32] [--repeats 2] [--checkpoint DIR --kind K]

Both paths use the same model on the CPU, one torch thread each, the same prompts, seeds, settings and batch
size, in the same run (alternating, so load changes on a shared machine hit both):

  direct   backend.generate(prompts, seeds, settings) batch after batch in this process (model loaded before)
  task     services.create_run -> on-commit send of generation.generate_batch jobs -> a real Celery worker
           (tests/support.py's WorkerProcess: `bin/process worker` on the gpu queue, concurrency 1, prefetch 1,
           prefork; model already in its cache from a warm-up job) -> PNG files in storage and rows marked done;
           timed from before create_run to the finished_at of the last image row (the database clock of the commit)

Embedded defaults: a fresh SQLite database, the filesystem broker and a media folder in a temporary
directory. The model is the first in-house checkpoint in demo_models/, else demo_models/unet-baseline, else a
tiny random in-house checkpoint (printed). Target: task / direct >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generation import contract  # noqa: E402 (torch-free; importable once ROOT is on the path)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64, help="images per measurement")
    p.add_argument("--batch", type=int, default=32, help="images per job = per backend call")
    p.add_argument("--repeats", type=int, default=3, help="measurements per path (alternating)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--checkpoint", help="model directory (default: see above)")
    p.add_argument("--kind", choices=contract.GENERATING_KINDS)
    return p.parse_args()


def pick_model(args, workdir: Path) -> tuple[str, str, str, int]:
    """(kind, source, what it is, image side in pixels) of the model to benchmark."""
    import json

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
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "EVALSITE_VAR_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "CELERY_BROKER_URL": "filesystem://",
            "EVALSITE_MEDIA_ROOT": str(workdir / "media"),
            "EVALSITE_DEVICE": "cpu",
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
    from generation.backends import generate_in_batches, load_backend
    from generation.demo_domain import demo_prompt_rows
    from tests.support import WorkerProcess, wait_for

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
    model = ImageModel.objects.create(name="bench-model", kind=kind, source=source, sampler_settings=settings)
    sampler = services.effective_settings(model, {})

    print(f"model: {what} ({kind}, {source})")
    print(
        f"{args.images} images per measurement, batch {args.batch}, {args.steps} steps, {size}x{size}, CPU, "
        f"1 thread, {args.repeats} repeats per path, alternating"
    )
    backend = load_backend(kind, source, "cpu")
    backend.generate([prompts[0].text], [0], sampler)  # warm-up

    worker = WorkerProcess(workdir, workdir / "media", workdir / "worker.log", queues=contract.GPU_QUEUE).start()
    try:
        warm = services.create_run(
            name="warm-up", prompt_set=prompt_set, image_models=[model], seeds=[999_999], prompts=prompts[:1]
        ).run
        wait_for(
            lambda: Image.objects.filter(run=warm, status="done").exists(),
            timeout=300,
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
    print(f"work dir (database, media, worker log): {workdir}")


if __name__ == "__main__":
    main()
