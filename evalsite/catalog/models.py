"""What is compared (registered image models) and on what (prompt sets and prompts)."""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.db import models

from generation import contract


def default_sampler_settings() -> dict:
    """A fresh copy of generation.contract.DEFAULT_SAMPLER_SETTINGS (a JSONField default must be a callable)."""
    return dict(contract.DEFAULT_SAMPLER_SETTINGS)


def validate_sampler_settings(value: dict) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Sampler settings must be a JSON object.")
    numeric = {
        "steps": int,
        "guidance_scale": (int, float),
        "shift": (int, float),
        "height": int,
        "width": int,
        "view_size": int,
    }
    for key, kind in numeric.items():
        if key in value and (not isinstance(value[key], kind) or isinstance(value[key], bool)):
            raise ValidationError(f"Sampler setting {key!r} must be a number, got {value[key]!r}.")
    if value.get("steps", 1) < 1:
        raise ValidationError("steps must be at least 1.")
    for key in ("height", "width", "view_size"):
        if key in value and value[key] < 8:
            raise ValidationError(f"{key} must be at least 8 pixels.")


def new_public_id() -> str:
    return secrets.token_hex(8)


class ImageModel(models.Model):
    """A text-to-image model registered for comparison, with the sampler settings it is run with."""

    class Kind(models.TextChoices):  # the values are generation.contract's model kinds
        INHOUSE = contract.INHOUSE, "In-house MM-DiT checkpoint"
        DIFFUSERS = contract.DIFFUSERS, "Diffusers pipeline"
        UNET_BASELINE = contract.UNET_BASELINE, "UNet eps-prediction baseline"
        TEXT_TO_3D = contract.TEXT_TO_3D, "Text to 3D (score distillation from a checkpoint)"
        EXTERNAL = contract.EXTERNAL, "External model (imported images, never generates)"

    name = models.CharField(max_length=120, unique=True)
    # Opaque id for internal references in exports; never shown to raters either.
    public_id = models.CharField(max_length=16, unique=True, default=new_public_id, editable=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Checkpoint directory (inhouse, unet_baseline), local directory / hub id (diffusers), or for an external
    # model the manifest its images were first imported from.
    source = models.CharField(max_length=500)
    sampler_settings = models.JSONField(default=default_sampler_settings, validators=[validate_sampler_settings])
    # How a gpu worker runs it (generation.contract.DEFAULT_RUNTIME_OPTIONS): precision, compile, channels_last,
    # fullgraph, batch_size. Speed, not what the model is asked: they are not part of an image's settings hash.
    # Checked in clean(), against the model's kind, by the one check the worker runs too.
    runtime_options = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"precision": "bf16", "compile": "max-autotune", "channels_last": true, "batch_size": "auto"}',
    )
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        try:
            contract.check_runtime_options(self.kind, self.runtime_options)
        except ValueError as e:
            raise ValidationError({"runtime_options": str(e)}) from e

    def save(self, *args, **kwargs):
        # A text-to-3D model left at the image models' default settings gets the 3D defaults instead (the image
        # settings, height, width and shift, mean nothing to it and would be refused when a run is planned).
        if self.kind == contract.TEXT_TO_3D and self.sampler_settings == default_sampler_settings():
            self.sampler_settings = contract.default_settings(contract.TEXT_TO_3D)
        super().save(*args, **kwargs)

    @property
    def is_3d(self) -> bool:
        """Whether the model makes 3D assets, shown to raters as turntables."""
        return self.kind == contract.TEXT_TO_3D

    @property
    def generates(self) -> bool:
        """Whether gpu workers make this model's images (an external model's images are imported instead)."""
        return self.kind != contract.EXTERNAL


# The kinds a gpu worker can load, for choices where an external model makes no sense (checkpoint schedules).
GENERATING_KIND_CHOICES = [(value, label) for value, label in ImageModel.Kind.choices if value != contract.EXTERNAL]


class PromptSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    source_file = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    position = models.PositiveIntegerField(help_text="Order in the imported file (0-based).")
    text = models.TextField()
    category = models.CharField(max_length=100, blank=True, db_index=True)
    challenge = models.CharField(max_length=100, blank=True, db_index=True)
    note = models.TextField(blank=True)
    # Detected at import (quoted strings, "Writing & Symbols"); a researcher may override it.
    detected_needs_text = models.BooleanField(default=False)
    needs_text_override = models.BooleanField(null=True, blank=True)
    rendered_text = models.CharField(max_length=300, blank=True, help_text="The text the image should show.")

    class Meta:
        ordering = ["prompt_set", "position"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "position"], name="unique_prompt_position"),
        ]

    @property
    def needs_text(self) -> bool:
        """Whether raters are asked the typography question for this prompt."""
        if self.needs_text_override is not None:
            return self.needs_text_override
        return self.detected_needs_text

    def __str__(self) -> str:
        return self.text[:80]
