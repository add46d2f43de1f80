"""Comparison runs and their generation jobs: creating, dispatching, claiming, storing, retrying, sweeping.

The web process and management commands create runs; Celery workers claim jobs and store images through the
functions here, so every database rule lives in one place:

- A run's images are created up front, in the same transaction as the run, one row per (model, prompt, seed,
  settings); the unique constraint makes a second row impossible. An image an earlier run already made is
  reused, not made again.
- Images are grouped into jobs (one model, at most `batch_size` images). Tasks are sent after the commit,
  by name, so the web process never imports torch.
- A job holds a lease: queued jobs for EVALSITE_DISPATCH_LEASE_SECONDS, running jobs for
  EVALSITE_JOB_LEASE_SECONDS renewed after every stored batch. `sweep_lost_jobs` sends again every open job
  whose lease ran out (a lost message, a killed worker); a job started EVALSITE_JOB_MAX_ATTEMPTS times fails.
- A worker writes an image's file under the image's unguessable token, then marks it done in a transaction;
  an image already done is never touched again.

Nothing here imports torch: the only module of generation/ used here is the torch-free generation.contract
(setting keys, task name); the worker side passes PNG bytes in.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.db import connection, transaction
from django.utils import timezone

from evalsite.catalog.models import ImageModel, Prompt, PromptSet, validate_sampler_settings
from evalsite.runs.models import (
    ComparisonRun,
    GenerationJob,
    Image,
    asset_upload_to,
    image_upload_to,
    settings_hash,
)
from generation.contract import GENERATE_TASK, SETTING_KEYS, UNET_SCHEDULERS, default_settings

log = logging.getLogger(__name__)

OPEN_JOB_STATES = (GenerationJob.Status.PENDING, GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING)


class RunError(ValueError):
    """A run cannot be created or changed as asked; the message says why."""


def batch_size_setting() -> int:
    return int(settings.EVALSITE_GENERATION_BATCH_SIZE)


def job_lease() -> timedelta:
    return timedelta(seconds=int(settings.EVALSITE_JOB_LEASE_SECONDS))


def dispatch_lease() -> timedelta:
    return timedelta(seconds=int(settings.EVALSITE_DISPATCH_LEASE_SECONDS))


def max_attempts() -> int:
    return int(settings.EVALSITE_JOB_MAX_ATTEMPTS)


# ------------------------------------------------------------------------------------------------------------
# Creating runs


def effective_settings(model: ImageModel, overrides: dict | None) -> dict:
    """The platform defaults, then the model's own settings, then the run's overrides (None removes a key).

    An external model has none: its images are imported as they are, whatever the run's overrides say."""
    if not model.generates:
        return {}
    merged = {**default_settings(model.kind), **(model.sampler_settings or {}), **(overrides or {})}
    merged = {k: v for k, v in merged.items() if v is not None}
    unknown = set(merged) - SETTING_KEYS[model.kind]
    if unknown:
        raise RunError(f"model {model.name} ({model.kind}) does not take the setting(s) {', '.join(sorted(unknown))}")
    try:
        validate_sampler_settings(merged)
    except ValidationError as e:
        raise RunError(f"model {model.name}: {' '.join(e.messages)}") from None
    if model.kind == ImageModel.Kind.UNET_BASELINE:
        if merged.get("shift", 1.0) != 1.0:
            raise RunError(f"model {model.name}: the UNet baseline has no timestep shift (leave shift at 1)")
        if merged.get("scheduler", UNET_SCHEDULERS[0]) not in UNET_SCHEDULERS:
            names = " or ".join(repr(name) for name in UNET_SCHEDULERS)
            raise RunError(f"model {model.name}: the UNet baseline samples with {names}")
    return merged


def _check_seeds(seeds: Iterable) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise RunError("give at least one seed")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 or s >= 2**63 for s in seeds):
        raise RunError(f"seeds must be non-negative integers, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise RunError(f"seeds repeat: {seeds}")
    return seeds


@dataclass
class PlannedRun:
    run: ComparisonRun
    job_ids: list[int]
    new_images: int
    reused_images: int


def create_run(
    *,
    name: str,
    prompt_set: PromptSet,
    image_models: Sequence[ImageModel],
    seeds: Iterable[int],
    sampler_overrides: dict | None = None,
    prompts: Sequence[Prompt] | None = None,
    created_by=None,
    batch_size: int | None = None,
    dispatch: bool = True,
) -> PlannedRun:
    """Create a run with all its image rows and jobs in one transaction; send the jobs after the commit."""
    name = (name or "").strip()
    if not name:
        raise RunError("a run needs a name")
    image_models = list(dict.fromkeys(image_models))
    if not image_models:
        raise RunError("choose at least one model")
    inactive = [m.name for m in image_models if not m.is_active]
    if inactive:
        raise RunError(f"inactive model(s): {', '.join(inactive)}")
    if len({m.is_3d for m in image_models}) > 1:
        # raters compare like with like: a turntable beside a picture would tell them which is which
        raise RunError("a run compares either image models or text-to-3D models, not both")
    seeds = _check_seeds(seeds)
    batch_size = batch_size or batch_size_setting()
    if batch_size < 1:
        raise RunError("batch size must be at least 1")
    overrides = dict(sampler_overrides or {})
    per_model = {m.pk: effective_settings(m, overrides) for m in image_models}
    chosen = list(prompts) if prompts else []
    if any(p.prompt_set_id != prompt_set.pk for p in chosen):
        raise RunError(f"every chosen prompt must belong to the prompt set {prompt_set.name!r}")
    run_prompts = sorted(chosen, key=lambda p: p.position) if chosen else list(prompt_set.prompts.order_by("position"))
    if not run_prompts:
        raise RunError(f"the prompt set {prompt_set.name!r} has no prompts")

    with transaction.atomic():
        run = ComparisonRun.objects.create(
            name=name, prompt_set=prompt_set, seeds=seeds, sampler_overrides=overrides, created_by=created_by
        )
        run.image_models.set(image_models)
        if chosen:
            run.prompts.set(chosen)
        job_ids, new, reused = _plan_images(run, image_models, per_model, run_prompts, seeds, batch_size)
        run.refresh_status()
        if dispatch and job_ids:
            transaction.on_commit(lambda: dispatch_jobs(job_ids))
    log.info("run %s (%s): %d new images in %d jobs, %d reused", run.pk, run.name, new, len(job_ids), reused)
    return PlannedRun(run=run, job_ids=job_ids, new_images=new, reused_images=reused)


def _plan_images(run, image_models, per_model, run_prompts, seeds, batch_size) -> tuple[list[int], int, int]:
    prompt_ids = [p.pk for p in run_prompts]
    keys = [(pid, s) for pid in prompt_ids for s in seeds]
    job_ids, new_count, reused_ids = [], 0, []
    lease_end = timezone.now() + timedelta(seconds=60)  # the sweeper dispatches it if the on-commit send is lost
    for model in image_models:
        sampler = per_model[model.pk]
        digest = settings_hash(sampler)
        existing = Image.objects.filter(model=model, settings_hash=digest, prompt_id__in=prompt_ids, seed__in=seeds)
        have = {(i.prompt_id, i.seed): i for i in existing.only("id", "prompt_id", "seed", "run_id")}
        # An external model never generates: the run takes whichever of its imported images it needs.
        missing = [k for k in keys if k not in have] if model.generates else []
        for index, start in enumerate(range(0, len(missing), batch_size)):
            job = GenerationJob.objects.create(
                run=run, model=model, batch_index=index, sampler_settings=sampler, lease_expires_at=lease_end
            )
            job_ids.append(job.pk)
            Image.objects.bulk_create(
                [
                    Image(
                        run=run,
                        job=job,
                        model=model,
                        prompt_id=pid,
                        seed=seed,
                        sampler_settings=sampler,
                        settings_hash=digest,
                    )
                    for pid, seed in missing[start : start + batch_size]
                ],
                ignore_conflicts=True,  # a concurrent run made it first: it is reused below
            )
        # Everything this run needs that belongs to another run is reused (including rows a concurrent run
        # created between our read and our insert).
        mine = Image.objects.filter(model=model, settings_hash=digest, prompt_id__in=prompt_ids, seed__in=seeds)
        for image_id, _prompt_id, _seed, owner in mine.values_list("id", "prompt_id", "seed", "run_id"):
            if owner != run.pk:
                reused_ids.append(image_id)
            else:
                new_count += 1
    if reused_ids:
        run.reused_images.add(*reused_ids)
    return job_ids, new_count, len(reused_ids)


# ------------------------------------------------------------------------------------------------------------
# Dispatching


def _send(job_id: int, task_id: str) -> bool:
    from evalsite.celery import app

    try:
        app.send_task(GENERATE_TASK, args=[job_id], task_id=task_id)
    except Exception:  # broker down: the job stays queued and the sweeper sends it when its lease ends
        log.exception("could not send job %s to the broker; the sweeper will retry", job_id)
        return False
    return True


def dispatch_job(job_id: int, *, only_if_lease_before=None) -> str | None:
    """Mark an open job queued under a new task id and send it. Returns the task id, or None if not sent.

    With only_if_lease_before, only a job whose lease ended before that time is taken (the sweeper's guard
    against a worker that renewed its lease a moment ago)."""
    now = timezone.now()
    task_id = str(uuid.uuid4())
    jobs = GenerationJob.objects.filter(pk=job_id, status__in=OPEN_JOB_STATES)
    if only_if_lease_before is not None:
        jobs = jobs.filter(lease_expires_at__lt=only_if_lease_before)
    if not jobs.update(
        status=GenerationJob.Status.QUEUED, task_id=task_id, dispatched_at=now, lease_expires_at=now + dispatch_lease()
    ):
        return None
    return task_id if _send(job_id, task_id) else None


def dispatch_jobs(job_ids: Iterable[int]) -> int:
    return sum(dispatch_job(job_id) is not None for job_id in job_ids)


def sweep_lost_jobs(now=None) -> dict[str, int]:
    """Send again every open job whose lease ran out; fail those already started too often."""
    now = now or timezone.now()
    resent, failed = 0, 0
    lost = GenerationJob.objects.filter(status__in=OPEN_JOB_STATES, lease_expires_at__lt=now)
    for job_id, status, attempts in lost.values_list("id", "status", "attempts"):
        if status == GenerationJob.Status.RUNNING and attempts >= max_attempts():
            mark_job_failed(
                job_id,
                f"gave up after {attempts} attempts: each time the worker was lost or hit "
                f"the time limit before the job finished",
            )
            failed += 1
        elif dispatch_job(job_id, only_if_lease_before=now):
            resent += 1
    if resent or failed:
        log.warning("sweeper: re-sent %d lost job(s), failed %d", resent, failed)
    return {"resent": resent, "failed": failed}


def retry_failed(run: ComparisonRun, job_ids: Iterable[int] | None = None) -> int:
    """Reset the run's failed jobs (or the given ones) and their failed images, and send them again."""
    failed_images = run.all_images().filter(status=Image.Status.FAILED, job__isnull=False)
    candidates = set(failed_images.values_list("job_id", flat=True))
    candidates |= set(run.jobs.filter(status=GenerationJob.Status.FAILED).values_list("id", flat=True))
    if job_ids is not None:
        candidates &= set(job_ids)
    with transaction.atomic():
        jobs = list(
            GenerationJob.objects.select_for_update().filter(pk__in=candidates).exclude(status__in=OPEN_JOB_STATES)
        )
        ids = [j.pk for j in jobs]
        Image.objects.filter(job_id__in=ids, status=Image.Status.FAILED).update(status=Image.Status.PENDING, error="")
        GenerationJob.objects.filter(pk__in=ids).update(
            status=GenerationJob.Status.PENDING,
            error="",
            attempts=0,
            finished_at=None,
            lease_expires_at=timezone.now() + timedelta(seconds=60),
        )
        owners = {owner.pk: owner for owner in ComparisonRun.objects.filter(jobs__in=ids).distinct()}
        owners[run.pk] = run
        for pk in sorted(owners):  # refresh_status locks each run: in id order, so two retries cannot deadlock
            owners[pk].refresh_status()
        if ids:
            transaction.on_commit(lambda: dispatch_jobs(ids))
    return len(ids)


# ------------------------------------------------------------------------------------------------------------
# The worker side (called by evalsite/runs/gpu_tasks.py)


def claim_job(job_id: int, task_id: str, worker: str = "") -> GenerationJob | None:
    """Take a job for this task, or None when it must not run: done, failed, unknown, or running under
    another task whose lease still holds (a duplicate delivery)."""
    now = timezone.now()
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            log.warning("job %s does not exist (its run was deleted?)", job_id)
            return None
        if job.status in (GenerationJob.Status.DONE, GenerationJob.Status.FAILED):
            return None
        live_elsewhere = job.lease_expires_at is not None and job.lease_expires_at > now and job.task_id != task_id
        if job.status == GenerationJob.Status.RUNNING and live_elsewhere:
            return None
        if job.attempts >= max_attempts():
            _fail(
                job,
                f"gave up after {job.attempts} attempts: each time the worker was lost or hit the time "
                f"limit before the job finished",
            )
            refresh = job.run
        else:
            job.status, job.task_id, job.worker = GenerationJob.Status.RUNNING, task_id, worker[:200]
            job.attempts += 1
            job.started_at, job.lease_expires_at = now, now + job_lease()
            job.save(update_fields=["status", "task_id", "worker", "attempts", "started_at", "lease_expires_at"])
            refresh = None
    if refresh is not None:
        refresh.refresh_status()
        return None
    job.run.refresh_status()
    return GenerationJob.objects.select_related("model", "run").get(pk=job.pk)


def images_to_make(job: GenerationJob) -> list[Image]:
    """The job's images that are not done yet, in a fixed order, with their prompts."""
    return list(job.images.exclude(status=Image.Status.DONE).select_related("prompt").order_by("id"))


@dataclass
class Generated:
    image: Image
    png: bytes
    width: int
    height: int
    seconds: float
    asset: bytes | None = None  # a text-to-3D model's asset file, stored beside its turntable


def write_image_file(image: Image, png: bytes, upload_to=image_upload_to) -> str:
    """Write the PNG (or with `upload_to=asset_upload_to`, the asset file) under the image's unguessable token
    name (replacing a file a killed worker left there); returns the storage name. The caller marks the row done."""
    storage = Image._meta.get_field("file").storage
    name = upload_to(image, "image.png")
    if isinstance(storage, FileSystemStorage):
        if storage.exists(name):
            storage.delete(name)
        saved = storage.save(name, ContentFile(png))
    else:
        # An object store (S3): one PUT under the exact key replaces any earlier object whole. Storage.save would
        # first ask whether the key is taken (a round trip per image) and, when a duplicate delivery on another
        # machine had just written the same image, choose another key: a second object, and this job failed.
        saved = storage._save(name, ContentFile(png))
    if saved != name:
        raise RuntimeError(f"storage saved {name} as {saved}; image files must keep their token names")
    return name


def map_settled(pool: Executor | None, fn: Callable, items: Sequence) -> list:
    """[fn(x) for x in items], in `pool`'s threads when given. Every call has ended when this returns or raises
    (the first error, in the items' order): no write is still running when the caller reports a failure."""
    if pool is None:
        return [fn(x) for x in items]
    futures = [pool.submit(fn, x) for x in items]
    wait(futures)
    return [f.result() for f in futures]


def store_images(
    job: GenerationJob, results: Sequence[Generated], software_versions: dict, pool: Executor | None = None
) -> int:
    """Write the files (side by side in `pool`'s threads when given), then mark the images done in one
    transaction and renew the job's lease.

    A file left by a killed worker under the same name is replaced; an image a duplicate delivery finished
    in the meantime is left alone. Returns how many images this call marked done."""
    ids = [r.image.pk for r in results]
    already = set(Image.objects.filter(pk__in=ids, status=Image.Status.DONE).values_list("id", flat=True))
    todo = [r for r in results if r.image.pk not in already]
    names = map_settled(pool, lambda r: write_image_file(r.image, r.png), todo)
    written = {r.image.pk: (r, name) for r, name in zip(todo, names, strict=True)}
    with_asset = [r for r in todo if r.asset is not None]
    asset_names = map_settled(pool, lambda r: write_image_file(r.image, r.asset, asset_upload_to), with_asset)
    assets = {r.image.pk: name for r, name in zip(with_asset, asset_names, strict=True)}
    now = timezone.now()
    with transaction.atomic():
        rows = Image.objects.filter(pk__in=written).exclude(status=Image.Status.DONE)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        rows = list(rows)
        # What a batch's images share (nearly all: size and seconds per image too) in one UPDATE per group, and
        # only the file names row by row: a bulk_update of every field cost ~2 ms per image here, at a GPU's rate
        # a few percent of the worker's time.
        groups: dict[tuple, list[int]] = {}
        for row in rows:
            r, name = written[row.pk]
            row.file.name, row.asset.name = name, assets.get(row.pk, "")
            groups.setdefault((r.width, r.height, r.seconds), []).append(row.pk)
        for (width, height, seconds), pks in groups.items():
            Image.objects.filter(pk__in=pks).update(
                width=width,
                height=height,
                generation_seconds=seconds,
                status=Image.Status.DONE,
                error="",
                finished_at=now,
                software_versions=software_versions,
            )
        Image.objects.bulk_update(rows, ["file", "asset"])
        GenerationJob.objects.filter(pk=job.pk, task_id=job.task_id).update(lease_expires_at=now + job_lease())
    return len(rows)


def finish_job(job: GenerationJob, batch_size: int | None = None) -> bool:
    """Mark the job done when all its images are; returns whether it is done."""
    with transaction.atomic():
        remaining = Image.objects.filter(job_id=job.pk).exclude(status=Image.Status.DONE).count()
        fields = {"batch_size": batch_size} if batch_size else {}
        if remaining == 0:
            fields.update(status=GenerationJob.Status.DONE, error="", finished_at=timezone.now())
        if fields:
            GenerationJob.objects.filter(pk=job.pk).update(**fields)
    job.run.refresh_status()
    return remaining == 0


def _fail(job: GenerationJob, reason: str) -> None:
    reason = reason.strip()[:4000] or "unknown error"
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.FAILED, error=reason, finished_at=timezone.now()
    )
    Image.objects.filter(job_id=job.pk).exclude(status=Image.Status.DONE).update(
        status=Image.Status.FAILED, error=reason
    )


STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What S3-compatible stores answer when they are full or over a quota (MinIO's codes; HTTP 507 anywhere).
S3_FULL_CODES = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded"})


def storage_problem(exc: BaseException) -> str | None:
    """Why storing an image failed, when the fault is the image storage's and not the model's; None otherwise.

    A local disk or quota that is full (ENOSPC, EDQUOT); with S3-compatible storage (EVALSITE_STORAGE=s3) a
    store that is full, cannot be reached (connection refused, timeouts, after botocore's own retries) or
    answers with an error (5xx, a missing bucket, refused credentials): none of that says anything about the
    model, so the job waits and tries again instead of failing its images."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_FULL_ERRNOS:
        return f"the image storage is full ({exc.strerror})"
    try:  # botocore comes with the s3 extra only
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    if isinstance(exc, ClientError):
        error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        code, status = error.get("Code", ""), meta.get("HTTPStatusCode")
        if code in S3_FULL_CODES or status == 507:
            return f"the image storage is full ({code or status})"
        return f"the image storage refused the write ({code or status}: {error.get('Message', '')})"
    if isinstance(exc, BotoCoreError | Boto3Error):
        return f"the image storage cannot be reached ({exc})"
    return None


def defer_job(job_id: int, reason: str, seconds: float) -> None:
    """Put a job that met a passing condition (the media disk full) back in the queue with the reason on it:
    the sweeper sends it again once `seconds` have passed. Its attempts count, so a disk that stays full fails
    the job for good after EVALSITE_JOB_MAX_ATTEMPTS tries; finished images stay."""
    until = timezone.now() + timedelta(seconds=seconds)
    GenerationJob.objects.filter(pk=job_id).exclude(
        status__in=[GenerationJob.Status.DONE, GenerationJob.Status.FAILED]
    ).update(status=GenerationJob.Status.QUEUED, error=reason[:2000], lease_expires_at=until)


def mark_job_failed(job_id: int, reason: str) -> None:
    """The job and its unfinished images fail with a reason a researcher can read; finished images stay."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().select_related("run").filter(pk=job_id).first()
        if job is None or job.status == GenerationJob.Status.DONE:
            return
        _fail(job, reason)
    job.run.refresh_status()
    for other in ComparisonRun.objects.filter(reused_images__job_id=job_id).distinct():
        other.refresh_status()


# ------------------------------------------------------------------------------------------------------------
# Progress


def progress_by_model(run: ComparisonRun) -> list[dict]:
    """Per model: image counts by status, job counts by status and the reasons of failed jobs."""
    from django.db.models import Count

    rows = {
        m.pk: {
            "model_id": m.pk,
            "model": m.name,
            "kind": m.kind,
            "total": 0,
            "done": 0,
            "pending": 0,
            "running": 0,
            "failed": 0,
            "jobs": {},
            "failures": [],
        }
        for m in run.image_models.order_by("name")
    }
    counts = run.all_images().order_by().values("model_id", "status").annotate(n=Count("id"))
    for c in counts:
        row = rows.get(c["model_id"])
        if row is not None:
            row[c["status"]] = row.get(c["status"], 0) + c["n"]
            row["total"] += c["n"]
    for c in run.jobs.order_by().values("model_id", "status").annotate(n=Count("id")):
        rows[c["model_id"]]["jobs"][c["status"]] = c["n"]
    running = run.jobs.filter(status=GenerationJob.Status.RUNNING).values("model_id").annotate(n=Count("id"))
    for c in running:
        rows[c["model_id"]]["running_jobs"] = c["n"]
    failed_jobs = GenerationJob.objects.filter(status=GenerationJob.Status.FAILED).filter(
        pk__in=run.all_images().filter(status=Image.Status.FAILED).values("job_id")
    ) | run.jobs.filter(status=GenerationJob.Status.FAILED)
    for job in failed_jobs.distinct().order_by("model_id", "batch_index"):
        if job.model_id in rows:
            rows[job.model_id]["failures"].append(
                {
                    "job": job.pk,
                    "batch": job.batch_index,
                    "error": job.error,
                    "attempts": job.attempts,
                    "images": job.images.count(),
                }
            )
    for row in rows.values():
        row["percent"] = round(100 * row["done"] / row["total"], 1) if row["total"] else 0.0
    return list(rows.values())
