"""Automated metrics stored per comparison run and model, shown beside the human scores."""

from __future__ import annotations

from django.db import models

from evalsite.catalog.models import ImageModel
from evalsite.runs.models import ComparisonRun


class MetricResult(models.Model):
    """One automated metric of one model's images in one run (recomputed in place, never duplicated)."""

    class Metric(models.TextChoices):
        CLIP_SCORE = "clip_score", "CLIP score"
        FID_CLIP = "fid_clip", "FID (CLIP features)"
        FID_INCEPTION = "fid_inception", "FID (Inception features)"

    # For the Spearman correlation with human scores: is a larger value better?
    HIGHER_IS_BETTER = {Metric.CLIP_SCORE: True, Metric.FID_CLIP: False, Metric.FID_INCEPTION: False}

    run = models.ForeignKey(ComparisonRun, on_delete=models.CASCADE, related_name="metric_results")
    model = models.ForeignKey(ImageModel, on_delete=models.CASCADE, related_name="metric_results")
    metric = models.CharField(max_length=30, choices=Metric.choices)
    value = models.FloatField()
    # Images of this model that went into the value.
    n = models.PositiveIntegerField()
    # How it was computed: feature model, reference images, seconds, reliability notes.
    details = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "metric", "model__name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "model", "metric"], name="one_metric_value_per_run_model"),
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} of {self.model} in {self.run}: {self.value:.3f}"
