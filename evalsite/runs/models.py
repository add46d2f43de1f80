"""Comparison runs and the images they produce."""
from __future__ import annotations

import hashlib
import json
import secrets

from django.conf import settings
from django.db import models

from evalsite.catalog.models import ImageModel, Prompt, PromptSet


def settings_hash(sampler_settings: dict) -> str:
    """Stable digest of sampler settings: part of an image's identity."""
    canonical = json.dumps(sampler_settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_image_token() -> str:
    # 128 random bits: the file name and URL of an image reveal nothing and cannot be guessed.
    return secrets.token_urlsafe(16)


def image_upload_to(instance: Image, filename: str) -> str:
    return f"images/{instance.token[:2]}/{instance.token}.png"


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

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def selected_prompts(self):
        chosen = self.prompts.all()
        return chosen if chosen.exists() else self.prompt_set.prompts.all()

    def progress(self) -> dict[str, int]:
        counts = dict(self.images.values_list("status").annotate(n=models.Count("id")))
        counts["total"] = sum(counts.values())
        return counts


class Image(models.Model):
    """One generated image: one row per model / prompt / seed / sampler settings."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(ComparisonRun, on_delete=models.CASCADE, related_name="images")
    model = models.ForeignKey(ImageModel, on_delete=models.PROTECT, related_name="images")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="images")
    seed = models.BigIntegerField()
    sampler_settings = models.JSONField()
    settings_hash = models.CharField(max_length=64)
    token = models.CharField(max_length=32, unique=True, default=new_image_token, editable=False)
    file = models.FileField(upload_to=image_upload_to, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    generation_seconds = models.FloatField(null=True, blank=True)
    software_versions = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

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
