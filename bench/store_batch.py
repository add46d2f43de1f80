"""What a gpu worker does with a generated batch besides the model: PNG encoding, file writes and the rows.

    .venv/bin/python bench/store_batch.py [--sizes 512,1024] [--batch 16] [--repeats 5] [--threads N]
        [--database postgres://postgres@127.0.0.1:5432/evalsite_bench_store]

At a GPU's image rate this work is no longer small beside the model: one batch of 16 SD-size images is
generated in seconds on an H100, and its PNG encoding alone took most of a second on one thread here. The
bench times evalsite.runs.gpu_tasks.store_batch, the worker's own code, for one job's batch: serially (the
worker before: one image after the other) and with the worker's thread pool (EVALSITE_STORE_THREADS threads,
PNG encodings and file writes side by side), alternating in the same run, on fresh pending rows each time.

The images are photo-like (smooth colour fields with fine noise; PNG compresses them about as it does
generated images), different for every image. Embedded default: a fresh SQLite database and a media folder in
a temporary directory; `--database` names a PostgreSQL database to create and drop.
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


def photo_like(side: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    a, b, c = rng.uniform(2, 8, 3)
    base = np.stack([np.sin(a * x + 3 * y), np.cos(b * y), np.sin(c * x * y)], -1) * 100 + 128
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024", help="image sides in pixels, comma-separated")
    p.add_argument("--batch", type=int, default=16, help="images per batch (EVALSITE_GENERATION_BATCH_SIZE)")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per way and size")
    p.add_argument("--threads", type=int, default=0, help="the pool's threads (0: EVALSITE_STORE_THREADS)")
    p.add_argument("--database", help="a PostgreSQL URL to create and drop (default: SQLite in a temporary folder)")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="store-batch-"))
    if args.database:
        from bench.databases import recreate_database

        recreate_database(args.database)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "EVALSITE_VAR_DIR": str(workdir),
            "DATABASE_URL": args.database or f"sqlite:///{workdir / 'bench.sqlite3'}",
            "EVALSITE_MEDIA_ROOT": str(workdir / "media"),
            "LOG_LEVEL": "WARNING",
        }
    )
    if args.threads:
        os.environ["EVALSITE_STORE_THREADS"] = str(args.threads)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from evalsite.catalog.models import ImageModel, Prompt, PromptSet
    from evalsite.runs import services
    from evalsite.runs.gpu_tasks import store_batch, store_pool
    from generation.backends import software_versions

    call_command("migrate", verbosity=0)
    prompt_set = PromptSet.objects.create(name="bench prompts")
    Prompt.objects.bulk_create(Prompt(prompt_set=prompt_set, position=i, text=f"prompt {i}") for i in range(args.batch))
    # create_run never loads a model: the rows of a batch are all the bench needs of it
    model = ImageModel.objects.create(name="bench-model", kind="inhouse", source="/not/loaded")
    versions = software_versions("cpu")
    pool = store_pool()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{args.batch} images per batch, {args.repeats} batches per way and size, alternating; pool: "
        f"{settings.EVALSITE_STORE_THREADS} threads on {os.cpu_count()} CPUs; database "
        f"{'PostgreSQL' if args.database else 'SQLite'}"
    )
    seed = 0
    results: dict = {}
    for side in sizes:
        times: dict[str, list[float]] = {"serial": [], "pool": []}
        for rep in range(args.repeats):
            for way in ("serial", "pool") if rep % 2 == 0 else ("pool", "serial"):
                seed += 1
                run = services.create_run(
                    name=f"{side}-{way}-{rep}",
                    prompt_set=prompt_set,
                    image_models=[model],
                    seeds=[seed],
                    batch_size=args.batch,
                    dispatch=False,
                ).run
                job = services.claim_job(run.jobs.get().pk, task_id=f"bench-{seed}", worker="bench")
                todo = services.images_to_make(job)
                images = [photo_like(side, seed * 1000 + i) for i in range(len(todo))]
                t0 = time.perf_counter()
                made = store_batch(job, todo, range(len(todo)), images, 1.0, versions, pool if way == "pool" else None)
                times[way].append(time.perf_counter() - t0)
                assert made == len(todo), f"stored {made} of {len(todo)}"
        serial, pooled = statistics.median(times["serial"]), statistics.median(times["pool"])
        results[side] = {"serial": serial, "pool": pooled}
        print(
            f"{side}x{side}: serial {serial:.3f} s per batch ({1000 * serial / args.batch:.1f} ms per image), "
            f"pool {pooled:.3f} s ({1000 * pooled / args.batch:.1f} ms per image); ratio {serial / pooled:.2f}x "
            f"(medians; each way: {' '.join(f'{t:.3f}' for t in times['serial'])} | "
            f"{' '.join(f'{t:.3f}' for t in times['pool'])})"
        )
    if args.database:
        from bench.databases import release_database

        release_database(args.database)
    return results


if __name__ == "__main__":
    main()
