"""Celery tasks of the dashboards app (default queue). Thin: they load rows and call tested functions."""

from __future__ import annotations

from celery import shared_task

from evalsite.catalog.models import ImageModel
from evalsite.dashboards import snapshots
from evalsite.dashboards.run_metrics import timed_run_metrics
from evalsite.runs.models import ComparisonRun


@shared_task(name="dashboards.compute_run_metrics", acks_late=True, reject_on_worker_lost=True)
def compute_run_metrics(run_id: int, reference_model_id: int | None = None) -> dict:
    """CLIP score and FID of every model of a run, stored as MetricResult rows.

    Idempotent (update_or_create on run + model + metric), so a redelivered task just recomputes."""
    run = ComparisonRun.objects.get(pk=run_id)
    reference = ImageModel.objects.get(pk=reference_model_id) if reference_model_id else None
    return timed_run_metrics(run, reference_model=reference)


@shared_task(name="dashboards.take_daily_snapshots")
def take_daily_snapshots() -> list[int]:
    """Today's results snapshot of every campaign with votes (idempotent: one daily snapshot per day)."""
    return snapshots.take_daily_snapshots()
