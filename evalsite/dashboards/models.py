"""Automated metrics stored per comparison run and model, shown beside the human scores."""

from __future__ import annotations

from django.conf import settings as conf
from django.db import models

from evalsite.catalog.models import ImageModel
from evalsite.runs.models import ComparisonRun


class MetricResult(models.Model):
    """One automated metric of one model's images in one run (recomputed in place, never duplicated)."""

    class Metric(models.TextChoices):
        CLIP_SCORE = "clip_score", "CLIP score"
        FID_CLIP = "fid_clip", "FID (CLIP features)"
        FID_INCEPTION = "fid_inception", "FID (Inception features)"
        # Typography metrics that read (analysis.typography): OCR of the images of prompts that ask for text.
        OCR_CER = "ocr_cer", "OCR character error rate"
        OCR_WORD_MATCH = "ocr_word_match", "OCR exact-word match"

    # For the Spearman correlation with human scores: is a larger value better?
    HIGHER_IS_BETTER = {
        Metric.CLIP_SCORE: True,
        Metric.FID_CLIP: False,
        Metric.FID_INCEPTION: False,
        Metric.OCR_CER: False,
        Metric.OCR_WORD_MATCH: True,
    }
    # Metrics of the typography criterion: compared with the human typography scores.
    TYPOGRAPHY = (Metric.OCR_CER, Metric.OCR_WORD_MATCH)

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


def snapshot_upload_to(instance: ResultSnapshot, filename: str) -> str:
    return f"snapshots/campaign-{instance.campaign_id}/{instance.content_hash[:16]}-{filename}"


class ResultSnapshot(models.Model):
    """A campaign's results frozen at one moment, with everything needed to recompute them exactly: the votes
    (a Parquet file of the votes export), the fit settings and the software that computed the numbers.
    `content_hash` is the sha256 of the votes file and the settings together (evalsite.dashboards.snapshots).
    One daily snapshot per campaign and day (the beat task), and any number taken on demand."""

    class Kind(models.TextChoices):
        DAILY = "daily", "daily"
        ON_DEMAND = "on_demand", "on demand"

    campaign = models.ForeignKey("rating.Campaign", on_delete=models.CASCADE, related_name="snapshots")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    taken_at = models.DateTimeField(db_index=True)
    day = models.DateField(help_text="taken_at's date (UTC); a campaign has one daily snapshot per day")
    votes_file = models.FileField(upload_to=snapshot_upload_to, max_length=300)
    votes_sha256 = models.CharField(max_length=64)
    n_votes = models.PositiveIntegerField()
    settings = models.JSONField(help_text="fit settings: criteria, ties, intervals, rounds, seed, alpha, ...")
    software = models.JSONField(help_text="versions of the software that computed the numbers")
    content_hash = models.CharField(max_length=64, db_index=True)
    results = models.JSONField(help_text="per criterion: leaderboard with intervals and the decisions")
    taken_by = models.ForeignKey(conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["campaign", "taken_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "day"], condition=models.Q(kind="daily"), name="one_daily_snapshot_per_day"
            )
        ]

    def __str__(self) -> str:
        return f"snapshot {self.pk} of {self.campaign} at {self.taken_at:%Y-%m-%d %H:%M}"
