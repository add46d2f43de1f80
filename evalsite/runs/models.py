"""Comparison runs, the images they produce, the generation jobs that produce them, and checkpoint schedules.

An image is identified by (model, prompt, seed, sampler settings): the database holds at most one, whichever
run asked for it first. A later run that needs the same image reuses it (`ComparisonRun.reused_images`), so
`Image.objects.in_run(run)` / `run.all_images()` is the full set of a run's images; `run.images` only those
it generated itself.

An external model's images are imported (evalsite.runs.imports): done rows with no job, empty sampler settings,
the sha256 of the file they were imported from and its provenance. Everything downstream (progress, campaigns,
dashboards, exports) reads them like generated images.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from functools import cached_property

from django.conf import settings
from django.db import models
from django.db.models import Q

from evalsite.catalog.models import GENERATING_KIND_CHOICES, ImageModel, Prompt, PromptSet
from generation import contract


def settings_hash(sampler_settings: dict) -> str:
    """Stable digest of sampler settings: part of an image's identity."""
    canonical = json.dumps(sampler_settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_image_token() -> str:
    # 128 random bits: the file name and URL of an image reveal nothing and cannot be guessed.
    return secrets.token_urlsafe(16)


def image_upload_to(instance: Image, filename: str) -> str:
    return f"images/{instance.token[:2]}/{instance.token}.png"


def asset_upload_to(instance: Image, filename: str) -> str:
    """A text-to-3D image's asset file, under the same unguessable token (never served to raters)."""
    return f"assets/{instance.token[:2]}/{instance.token}.safetensors"


# How a run shows an image of another aspect ratio as a square (evalsite.runs.display), and the sides it may
# choose: one list for the model field, the forms, the import command and the importer's checks.
IMAGE_FITS = [("crop", "Centre crop"), ("letterbox", "Letterbox on grey")]
IMAGE_SIZE_RANGE = (8, 4096)


class ComparisonRun(models.Model):
    """Models × prompts × seeds with one set of sampler settings, generated on the GPU workers."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    name = models.CharField(max_length=200)
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="runs")
    # Empty means every prompt of the set.
    prompts = models.ManyToManyField(Prompt, blank=True, related_name="runs")
    image_models = models.ManyToManyField(ImageModel, related_name="runs")
    seeds = models.JSONField(default=list, help_text="Seeds used for every prompt, e.g. [0, 1, 2, 3].")
    # Overrides applied on top of each model's own sampler settings (steps, guidance_scale, resolution...).
    sampler_overrides = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Images this run needs that an earlier run already generated (same model, prompt, seed and settings).
    reused_images = models.ManyToManyField("Image", blank=True, related_name="reused_by_runs")
    # How raters see the run's images (evalsite.runs.display): squares of image_size pixels (blank: the width
    # most of its images have), other aspect ratios cropped to the centre or letterboxed.
    image_size = models.PositiveIntegerField(
        null=True, blank=True, help_text="Side in pixels of the square images are shown at; blank: the common width."
    )
    image_fit = models.CharField(
        max_length=10,
        choices=IMAGE_FITS,
        default="crop",
        help_text="How an image of another aspect ratio becomes a square.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def selected_prompts(self):
        chosen = self.prompts.all()
        return chosen if chosen.exists() else self.prompt_set.prompts.all()

    @cached_property
    def is_3d(self) -> bool:
        """Whether the run compares text-to-3D models (its images are turntables; create_run never mixes kinds)."""
        return self.image_models.filter(kind=contract.TEXT_TO_3D).exists()

    @staticmethod
    def is_3d_of(run_id_field: str) -> models.Exists:
        """`is_3d` as an expression on the run that `run_id_field` names, for a query that loads the run anyway
        (set the result on run.is_3d and the property asks nothing more)."""
        through = ComparisonRun.image_models.through.objects
        return models.Exists(
            through.filter(comparisonrun_id=models.OuterRef(run_id_field), imagemodel__kind=contract.TEXT_TO_3D)
        )

    def all_images(self):
        """Every image of the run: generated by it or reused from an earlier run."""
        return Image.objects.in_run(self)

    def progress(self) -> dict[str, int]:
        counts = dict(self.all_images().order_by().values_list("status").annotate(n=models.Count("id")))
        counts["total"] = sum(counts.values())
        return counts

    def refresh_status(self) -> str:
        """Derive the run's status from its jobs and images: running while work is open, then done or failed."""
        from django.utils import timezone

        jobs = set(self.jobs.values_list("status", flat=True).distinct())
        images = set(self.all_images().order_by().values_list("status", flat=True).distinct())
        open_states = {GenerationJob.Status.PENDING, GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING}
        if jobs & open_states or images & {Image.Status.PENDING, Image.Status.RUNNING}:
            started = jobs - {GenerationJob.Status.PENDING, GenerationJob.Status.QUEUED} or Image.Status.DONE in images
            status = self.Status.RUNNING if started else self.Status.PENDING
        elif GenerationJob.Status.FAILED in jobs or Image.Status.FAILED in images:
            status = self.Status.FAILED
        else:
            status = self.Status.DONE
        finished_at = timezone.now() if status in (self.Status.DONE, self.Status.FAILED) else None
        ComparisonRun.objects.filter(pk=self.pk).update(status=status, finished_at=finished_at)
        self.status, self.finished_at = status, finished_at
        return status


class ImageQuerySet(models.QuerySet):
    def in_run(self, run: ComparisonRun | int):
        """Images a run generated itself plus those it reuses from earlier runs."""
        run_id = run.pk if isinstance(run, ComparisonRun) else run
        return self.filter(
            Q(run_id=run_id)
            | Q(pk__in=ComparisonRun.reused_images.through.objects.filter(comparisonrun_id=run_id).values("image_id"))
        )


class Image(models.Model):
    """One generated or imported image: one row per model / prompt / seed / sampler settings."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(ComparisonRun, on_delete=models.CASCADE, related_name="images")
    # The generation job (one model, one batch) that makes this image; null for images made elsewhere.
    job = models.ForeignKey("GenerationJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="images")
    model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="images")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="images")
    seed = models.BigIntegerField()
    sampler_settings = models.JSONField()
    settings_hash = models.CharField(max_length=64)
    token = models.CharField(max_length=32, unique=True, default=new_image_token, editable=False)
    file = models.FileField(upload_to=image_upload_to, blank=True)
    # A text-to-3D model's image is a turntable (contract.TURNTABLE_VIEWS views in one PNG); this is the asset it
    # shows (generation.threed.save_asset's file: the field's weights, settings, prompt and seed).
    asset = models.FileField(upload_to=asset_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    generation_seconds = models.FloatField(null=True, blank=True)
    software_versions = models.JSONField(default=dict, blank=True)
    # Imported images only: the sha256 of the file as it was given (a re-import of the same file is recognised)
    # and where it came from, in the importer's words (e.g. "API, 2026-11, quality=hd").
    original_sha256 = models.CharField(max_length=64, blank=True)
    provenance = models.CharField(max_length=500, blank=True)
    # Style covariates measured from the stored pixels (evalsite.runs.style_covariates), cached here so the
    # dashboards decode each image once: {"version": N, "brightness": ..., ...}; null until first measured.
    style_covariates = models.JSONField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model", "prompt", "seed", "settings_hash"], name="unique_image_per_model_prompt_seed"
            ),
        ]
        indexes = [models.Index(fields=["run", "status"]), models.Index(fields=["prompt", "seed"])]

    def save(self, *args, **kwargs):
        self.settings_hash = settings_hash(self.sampler_settings)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"image {self.token}"


class WorkerHeartbeat(models.Model):
    """Written by the `evalsite.ping` task: shows that a worker consumed the broker and reached the DB."""

    payload = models.CharField(max_length=200)
    hostname = models.CharField(max_length=200, blank=True)
    seen_at = models.DateTimeField(auto_now_add=True)


class GenerationJob(models.Model):
    """One batch of one model's images in a run: the unit a `generation.generate_batch` task works on.

    pending -> queued (a task was sent: task_id, dispatched_at) -> running (a worker claimed it and holds a
    lease, renewed after every batch) -> done | failed (error says why). A queued or running job whose lease
    ran out was lost (broker lost the message, worker killed): the sweeper sends it again."""

    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(ComparisonRun, on_delete=models.CASCADE, related_name="jobs")
    model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="generation_jobs")
    batch_index = models.PositiveIntegerField()
    sampler_settings = models.JSONField(help_text="Effective settings of every image in the job.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker started this job.")
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="Id of the last task sent for this job.")
    worker = models.CharField(max_length=200, blank=True)
    batch_size = models.PositiveIntegerField(null=True, blank=True, help_text="Images per batch the worker used.")
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "model", "batch_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "model", "batch_index"], name="unique_job_per_run_model_batch"),
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.model} batch {self.batch_index})"


class CheckpointSchedule(models.Model):
    """ "Evaluate the newest checkpoint in DIRECTORY against BASELINE on PROMPT SET", run by Celery beat.

    The beat entry is a django_celery_beat PeriodicTask (crontab stored in the database) calling
    `runs.check_checkpoint_schedules` with this schedule's id."""

    name = models.CharField(max_length=100, unique=True)
    directory = models.CharField(max_length=500, help_text="Folder whose sub-folders are checkpoints.")
    checkpoint_kind = models.CharField(max_length=20, choices=GENERATING_KIND_CHOICES, default=ImageModel.Kind.INHOUSE)
    baseline_model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="+")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="+")
    seeds = models.JSONField(default=list)
    sampler_overrides = models.JSONField(default=dict, blank=True)
    crontab = models.CharField(
        max_length=100, default="0 3 * * *", help_text="minute hour day-of-month month day-of-week (UTC)"
    )
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ScheduledCheckpoint(models.Model):
    """A checkpoint a schedule has taken up; the unique constraint means it never gets a second run."""

    schedule = models.ForeignKey(CheckpointSchedule, on_delete=models.CASCADE, related_name="checkpoints")
    checkpoint_path = models.CharField(max_length=500)
    image_model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey(ComparisonRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "checkpoint_path"], name="one_run_per_scheduled_checkpoint"),
        ]
