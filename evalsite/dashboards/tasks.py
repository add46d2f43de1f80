"""Celery tasks of the dashboards app (default queue). Thin: they load rows and call tested functions."""

from __future__ import annotations

from celery import shared_task

from evalsite.catalog.models import ImageModel
from evalsite.dashboards import results, snapshots
from evalsite.dashboards.run_metrics import timed_run_metrics
from evalsite.dashboards.style import FRAGILITY_REFRESH_TASK, refresh_marker_done
from evalsite.rating.models import Campaign
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


@shared_task(name=FRAGILITY_REFRESH_TASK, soft_time_limit=300, time_limit=360)
def refresh_fragility(campaign_id: int, criterion: str, alpha: float, exclude_flagged: bool = True) -> int | None:
    """The fragility of one criterion's decisions on the votes counted now, "certified best" replayed by the site's
    rule (~4 s at 21k votes), left in the shared cache where the next dashboard or API request shows it. Asked for
    by a request that found its answer stale (evalsite.dashboards.style.fragility_in_request), at most one at a
    time per criterion; returns the number of decisions (None without 2 models)."""
    try:
        found = results.refresh_fragility(Campaign.objects.get(pk=campaign_id), criterion, alpha, exclude_flagged)
    finally:
        refresh_marker_done(campaign_id, criterion, alpha, exclude_flagged)
    return None if found is None else len(found)
