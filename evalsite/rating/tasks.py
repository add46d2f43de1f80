"""Celery tasks of the rating app (default queue). Thin: they load rows and call tested functions."""

from __future__ import annotations

from celery import shared_task

from evalsite.rating import engine, quality
from evalsite.rating.models import Campaign, RaterReview


@shared_task(name="rating.update_rater_quality")
def update_rater_quality(campaign_id: int | None = None) -> dict[str, int]:
    """Recompute rater quality (gold accuracy, speed, left share, flags) and run the suspicion checks for one
    campaign or all open ones; "held" counts the raters whose votes wait for a researcher's review."""
    campaigns = Campaign.objects.filter(pk=campaign_id) if campaign_id else Campaign.objects.filter(is_open=True)
    raters = flagged = held = 0
    for campaign in campaigns:
        stats = quality.update_rater_quality(campaign)
        raters += len(stats)
        flagged += sum(s.flagged for s in stats)
        held += len(quality.held_out_rater_ids(campaign, states=(RaterReview.State.HELD,)))
    return {"raters": raters, "flagged": flagged, "held": held}


@shared_task(name="rating.expire_assignments")
def expire_assignments() -> int:
    """Give the slots of assignments past their expiry back to their image pairs."""
    return engine.expire_assignments()


@shared_task(name="rating.prepare_campaign")
def prepare_campaign(campaign_id: int) -> dict[str, int]:
    """Pair the run's finished images and top up the campaign's gold checks."""
    return engine.prepare_campaign(Campaign.objects.get(pk=campaign_id))


@shared_task(name="rating.recount_wins")
def recount_wins(campaign_id: int) -> float:
    """Count a campaign's wins matrix from all its votes (the full recount /next asks for every 10 minutes) and
    leave it in the shared cache for every web process; returns the number of comparisons counted."""
    return float(engine.recount_wins(Campaign.objects.get(pk=campaign_id)).wins.sum())
