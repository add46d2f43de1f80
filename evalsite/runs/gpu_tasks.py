"""Celery tasks of the gpu queue: the site side's bridge to the model code in generation/.

`generation.generate_batch(job_id)` makes the images of one GenerationJob (one model, one batch of prompts,
one seed per image). Its name (generation.contract.GENERATE_TASK) is what the web process sends and what
CELERY_TASK_ROUTES sends to the gpu queue; the web process never imports this module (nor torch). The task is
thin: the database rules are in evalsite.runs.services (claim, store, fail), the model work in
generation.backends (load, generate in batches, PNG bytes), called as a library.

Reliability: acks_late + reject_on_worker_lost (a worker killed mid-task leaves the message to be delivered
again where the broker can, e.g. Redis after its visibility timeout), hard and soft time limits, and
idempotency by construction (a job that is done, or running under a live lease elsewhere, is skipped; an
image that is done is never made again). A broken model fails its own jobs with a readable reason.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, ThreadPoolExecutor

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings
from django.db import DatabaseError

from evalsite.runs import services
from generation import contract
from generation.backends import (
    BackendCache,
    ModelLoadError,
    OutOfMemory,
    RuntimeOptions,
    batch_size_for,
    generate_in_batches,
    png_bytes,
    resolve_device,
    software_versions,
)

log = logging.getLogger(__name__)
_cache: BackendCache | None = None
_store_pool: ThreadPoolExecutor | None = None


def backend_cache() -> BackendCache:
    """The worker process's models, at most EVALSITE_MODEL_CACHE_SIZE of them."""
    global _cache
    if _cache is None:
        _cache = BackendCache(max_size=settings.EVALSITE_MODEL_CACHE_SIZE)
    return _cache


def store_pool() -> ThreadPoolExecutor:
    """The worker process's EVALSITE_STORE_THREADS threads that encode and write images (made in the process
    that uses them: a prefork child never inherits its parent's threads)."""
    global _store_pool
    if _store_pool is None:
        _store_pool = ThreadPoolExecutor(settings.EVALSITE_STORE_THREADS, thread_name_prefix="store")
    return _store_pool


def store_batch(
    job, todo: list, indices: range, images: list, seconds: float, versions: dict, pool: Executor | None
) -> int:
    """PNG-encode one generated batch and store it (files, then rows); with a pool the PNGs are encoded and the
    files written side by side in its threads. Returns how many images were marked done."""
    pngs = services.map_settled(pool, png_bytes, images)
    results = [
        services.Generated(todo[i], png, img.width, img.height, seconds, asset=img.info.get(contract.ASSET_INFO_KEY))
        for i, img, png in zip(indices, images, pngs, strict=True)
    ]
    return services.store_images(job, results, versions, pool=pool)


@worker_process_init.connect
def _limit_threads(**_kwargs) -> None:
    """EVALSITE_TORCH_THREADS caps torch's CPU threads in each worker process (0 = torch's default)."""
    threads = settings.EVALSITE_TORCH_THREADS
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@shared_task(
    name=contract.GENERATE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
)
def generate_batch(self, job_id: int) -> dict:
    return run_job(job_id, task_id=self.request.id or "", worker=self.request.hostname or "")


def run_job(job_id: int, task_id: str, worker: str = "", cache: BackendCache | None = None) -> dict:
    """Claim the job, load its model (cached), generate what is missing batch by batch, store each batch."""
    job = services.claim_job(job_id, task_id, worker)
    if job is None:
        return {"job": job_id, "skipped": True}
    todo = services.images_to_make(job)
    if not todo:  # everything was made by an earlier delivery
        services.finish_job(job)
        return {"job": job_id, "made": 0}
    model, device = job.model, resolve_device(settings.EVALSITE_DEVICE)
    try:
        backend = (cache if cache is not None else backend_cache()).get(
            model.kind, model.source, device, options=model.runtime_options
        )
        runtime = RuntimeOptions.of(model.kind, model.runtime_options)  # checked by the load above
    except ModelLoadError as e:
        log.warning("job %s: %s", job_id, e)
        # A model's source is a path on the machine that runs the job: with GPU workers on several machines, the
        # reason names the worker, so a checkpoint missing on one machine is told from a broken one.
        on = f" (on worker {worker})" if worker else ""
        services.mark_job_failed(job.pk, f"model {model.name}: {e}{on}")
        return {"job": job_id, "failed": str(e)}
    versions = {**software_versions(device), "runtime": runtime.record(model.kind, device)}
    made = 0
    try:
        batches = generate_in_batches(
            backend,
            [i.prompt.text for i in todo],
            [i.seed for i in todo],
            job.sampler_settings,
            # a 3D asset takes minutes: each is stored (and the job's lease renewed) as soon as it is made
            batch_size=1 if model.is_3d else batch_size_for(backend, runtime, job.sampler_settings, device, len(todo)),
        )
        for indices, images, seconds in batches:
            made += store_batch(job, todo, indices, images, seconds, versions, store_pool())
    except SoftTimeLimitExceeded:
        reason = (
            f"time limit of {settings.CELERY_TASK_SOFT_TIME_LIMIT} s exceeded after {made} images; "
            f"finished images are kept, retry to make the rest"
        )
        services.mark_job_failed(job.pk, reason)
        return {"job": job_id, "failed": reason, "made": made}
    except DatabaseError:
        raise  # the job keeps its lease; the sweeper sends it again once the lease ends
    except OutOfMemory as e:
        services.mark_job_failed(job.pk, f"model {model.name}: {e}")
        return {"job": job_id, "failed": str(e), "made": made}
    except Exception as e:
        problem = services.storage_problem(e)
        if problem is not None:
            # Not the model's fault (a full disk, an object store away): keep what is stored (a half-written file
            # is never served: its row is not done, and the next try replaces it) and try again once the sweeper
            # finds the job's lease over.
            reason = (
                f"{problem} after {made} images; the job is sent again in "
                f"{settings.EVALSITE_STORAGE_FULL_RETRY_SECONDS} s"
            )
            log.error("job %s: %s", job_id, reason)
            services.defer_job(job.pk, reason, settings.EVALSITE_STORAGE_FULL_RETRY_SECONDS)
            return {"job": job_id, "deferred": reason, "made": made}
        if isinstance(e, OSError):
            raise  # the machine's trouble, not the model's: the job keeps its lease and the sweeper sends it again
        # the model or its settings failed: say so on the job, keep the worker going
        log.exception("job %s failed", job_id)
        reason = f"model {model.name}: {type(e).__name__}: {e}"
        services.mark_job_failed(job.pk, reason)
        return {"job": job_id, "failed": reason, "made": made}
    services.finish_job(job, batch_size=batches.batch_size)
    return {"job": job_id, "made": made, "batch_size": batches.batch_size}
