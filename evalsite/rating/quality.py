"""Rater quality control: gold accuracy, speed and left/right bias per rater, and flagging.

`update_rater_quality(campaign)` recomputes a RaterStats row per rater of the campaign:
  - gold accuracy: share of gold checks answered correctly (on the gold's criterion, prompt following);
  - median seconds per pair: the page's time from showing a pair to submitting it;
  - left share: among decisive answers (left or right) to real pairs, the share that chose left;
    0.5 means no position bias (the engine balances which model is shown on which side).
A rater with at least campaign.min_gold_answers gold answers and an accuracy below
campaign.min_gold_accuracy is flagged: RaterStats.flagged for this campaign, and Rater.flagged with a
reason starting with AUTO_FLAG_PREFIX. Automatic flags are lifted when no campaign flags the rater any
more; a flag a researcher set by hand (any other reason) is never touched.

`detect_suspicious_raters(campaign)` (run by update_rater_quality) applies analysis.suspicion to the
campaign's votes and joins: bursts of joins through one link, identical answer streams, one model favoured
far beyond the crowd on the same pairs. A rater it finds gets a RaterReview in state "held": their votes
are left out of every count until a researcher accepts (counted again, never held again in this campaign)
or rejects them. The simulation link's joins are not checked for bursts (a simulated crowd joins at once).

`votes_for_analysis(campaign)` is what every analysis should read: no gold votes, and no votes of
flagged raters or raters held or rejected in review (exclude_flagged=False keeps them all, e.g. to show
what excluding them changes).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import pandas as pd
from django.db import transaction
from django.db.models import QuerySet

from analysis.suspicion import suspicious_raters
from evalsite.rating.models import (
    SIMULATION_LINK,
    Assignment,
    Campaign,
    CampaignJoin,
    Choice,
    Rater,
    RaterReview,
    RaterStats,
    Vote,
)

AUTO_FLAG_PREFIX = "quality control:"


def votes_for_analysis(campaign: Campaign, *, exclude_flagged: bool = True) -> QuerySet:
    """The campaign's votes on real pairs, without flagged raters' votes unless exclude_flagged=False."""
    votes = Vote.objects.filter(campaign=campaign, is_gold=False)
    if exclude_flagged:
        votes = votes.exclude(rater__flagged=True).exclude(rater_id__in=held_out_rater_ids(campaign))
    return votes


HELD_OUT_STATES = (RaterReview.State.HELD, RaterReview.State.REJECTED)
WINNER_OF_CHOICE = {Choice.LEFT: "model_a", Choice.RIGHT: "model_b", Choice.TIE: "tie", Choice.BOTH_BAD: "both_bad"}


def held_out_rater_ids(campaign: Campaign, states=HELD_OUT_STATES) -> set[int]:
    """Raters whose votes in this campaign wait for a researcher's review, or were rejected in it."""
    return set(RaterReview.objects.filter(campaign=campaign, state__in=states).values_list("rater_id", flat=True))


def suspicion_frames(campaign: Campaign) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(votes, joins) of the campaign in analysis.suspicion's columns; raters by user name, models by name.

    Flagged raters' votes (gold accuracy, or a researcher) are left out: they count nowhere already, and a crowd
    baseline without random clickers does not make a careful rater look far better than the crowd."""
    rows = Vote.objects.filter(campaign=campaign, is_gold=False, rater__flagged=False).values_list(
        "rater__user__username", "assignment__pair_key", "criterion", "model_left__name", "model_right__name", "choice"
    )
    votes = pd.DataFrame.from_records(
        [
            (rater, f"{pair}:{criterion}", criterion, left, right, WINNER_OF_CHOICE[choice])
            for rater, pair, criterion, left, right, choice in rows
        ],
        columns=["rater", "item", "criterion", "model_a", "model_b", "winner"],
    )
    joins = pd.DataFrame.from_records(
        list(
            CampaignJoin.objects.filter(campaign=campaign)
            .exclude(link=SIMULATION_LINK)
            .values_list("rater__user__username", "link", "joined_at")
        ),
        columns=["rater", "link", "joined_at"],
    )
    return votes, joins


def detect_suspicious_raters(campaign: Campaign) -> list[RaterReview]:
    """Hold the votes of raters the suspicion checks pick out (new RaterReview rows in state held); a rater
    already reviewed keeps the researcher's verdict, a rater still held gets today's reasons. Returns the
    reviews that are held now."""
    votes, joins = suspicion_frames(campaign)
    found = suspicious_raters(votes, joins)
    ids = dict(Rater.objects.filter(user__username__in=list(found["rater"])).values_list("user__username", "pk"))
    with transaction.atomic():
        for row in found.itertuples():
            review, created = RaterReview.objects.select_for_update().get_or_create(
                campaign=campaign, rater_id=ids[row.rater], defaults={"reasons": row.reasons[:2000]}
            )
            if not created and review.state == RaterReview.State.HELD:
                review.reasons = row.reasons[:2000]
                review.save(update_fields=["reasons"])
    return list(RaterReview.objects.filter(campaign=campaign, state=RaterReview.State.HELD))


def rater_figures(campaign: Campaign) -> dict[int, dict]:
    """rater id -> figures, from the campaign's answered assignments and votes."""
    figures: dict[int, dict] = defaultdict(
        lambda: {"pairs_answered": 0, "gold_answered": 0, "gold_correct": 0, "seconds": [], "left": 0, "right": 0}
    )
    for rater_id in campaign.raters.values_list("id", flat=True):
        figures[rater_id]  # every rater of the campaign gets a row, voted or not
    for rater_id in Assignment.objects.filter(campaign=campaign, status=Assignment.Status.ANSWERED).values_list(
        "rater_id", flat=True
    ):
        figures[rater_id]["pairs_answered"] += 1
    seconds_seen = set()
    for rater_id, assignment_id, choice, is_gold, gold_correct, time_ms in Vote.objects.filter(
        campaign=campaign
    ).values_list("rater_id", "assignment_id", "choice", "is_gold", "gold_correct", "time_taken_ms"):
        row = figures[rater_id]
        if is_gold and gold_correct is not None:
            row["gold_answered"] += 1
            row["gold_correct"] += int(gold_correct)
        if not is_gold and choice in (Choice.LEFT, Choice.RIGHT):
            row[choice] += 1
        if time_ms is not None and assignment_id not in seconds_seen:  # one time per pair, not per criterion
            seconds_seen.add(assignment_id)
            row["seconds"].append(time_ms / 1000.0)
    return figures


def update_rater_quality(campaign: Campaign) -> list[RaterStats]:
    """Recompute every rater's figures for this campaign, flag or unflag them; returns the stats rows."""
    figures = rater_figures(campaign)
    stats = []
    with transaction.atomic():
        for rater_id, row in figures.items():
            accuracy = row["gold_correct"] / row["gold_answered"] if row["gold_answered"] else None
            decisive = row["left"] + row["right"]
            flagged = (
                accuracy is not None
                and row["gold_answered"] >= campaign.min_gold_answers
                and accuracy < campaign.min_gold_accuracy
            )
            stat, _ = RaterStats.objects.update_or_create(
                campaign=campaign,
                rater_id=rater_id,
                defaults={
                    "pairs_answered": row["pairs_answered"],
                    "gold_answered": row["gold_answered"],
                    "gold_correct": row["gold_correct"],
                    "gold_accuracy": accuracy,
                    "median_seconds_per_pair": statistics.median(row["seconds"]) if row["seconds"] else None,
                    "left_share": row["left"] / decisive if decisive else None,
                    "flagged": flagged,
                },
            )
            stats.append(stat)
        for rater in Rater.objects.filter(pk__in=list(figures)).select_for_update():
            _apply_flag(rater)
    detect_suspicious_raters(campaign)
    return stats


def _apply_flag(rater: Rater) -> None:
    """Rater.flagged follows the campaigns' automatic flags, unless a researcher flagged the rater by hand."""
    if rater.flagged and not rater.flagged_reason.startswith(AUTO_FLAG_PREFIX):
        return
    flagging = list(RaterStats.objects.filter(rater=rater, flagged=True).select_related("campaign"))
    if flagging:
        reason = "; ".join(
            f"gold accuracy {s.gold_correct}/{s.gold_answered} ({s.gold_accuracy:.0%}) below "
            f"{s.campaign.min_gold_accuracy:.0%} in campaign {s.campaign_id}"
            for s in flagging
        )
        rater.flagged, rater.flagged_reason = True, f"{AUTO_FLAG_PREFIX} {reason}"[:300]
    else:
        rater.flagged, rater.flagged_reason = False, ""
    rater.save(update_fields=["flagged", "flagged_reason"])
