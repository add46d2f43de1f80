"""Snapshots of a campaign's results: kept each day and on demand, refitted to the same numbers.

A snapshot stores the campaign's votes (the votes export, as Parquet), the fit settings and the versions of
the software that computed its numbers, and the numbers themselves: per criterion, the Bradley-Terry
leaderboard with its intervals and the anytime-valid decisions. `snapshot_numbers(votes, settings)` is the one
function that computes them, from the votes table alone, so `refit(snapshot)` (read the stored votes back,
compute again) gives identical numbers on the same software; `content_hash` (sha256 of the votes file's
hash and the canonical JSON of the settings) names what was fitted.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import platform
from datetime import UTC, datetime
from importlib import metadata

import pandas as pd
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from analysis.confidence_sequences import DEFAULT_ALPHA
from analysis.decisions import TOP_EVIDENCE_LOOK_EVERY
from analysis.leaderboard import fit_bradley_terry
from analysis.votes import count_pairs
from evalsite.dashboards.data import counted_votes, votes_frame
from evalsite.dashboards.held_out import reviews_of
from evalsite.dashboards.models import ResultSnapshot
from evalsite.dashboards.results import CAMPAIGN_TOP_RULE, decisions_of, rater_table_of, records
from evalsite.rating.models import Campaign, RaterReview

FIT_SETTINGS = {"ties": "half", "intervals": "bootstrap", "rounds": 100, "seed": 0, "confidence": 0.95}
SOFTWARE = ("numpy", "pandas", "scipy", "pyarrow", "django", "t2i-arena")
SNAPSHOT_TABLES = ("votes", "results")
LEADERBOARD_FIELDS = ("model", "score", "lower", "upper", "rank", "votes", "win_rate")


def snapshot_settings(campaign: Campaign, *, exclude_flagged: bool = True, alpha: float = DEFAULT_ALPHA) -> dict:
    return {
        **FIT_SETTINGS,
        "criteria": list(campaign.criteria),
        "exclude_flagged": exclude_flagged,
        "min_gold_accuracy": campaign.min_gold_accuracy,
        "alpha": alpha,
        "min_votes_per_pair": campaign.min_votes_per_model_pair,
        # the top model's rule and its look points (snapshots taken before this setting existed used the
        # stateless Bonferroni rule and are refitted with it)
        "top_rule": CAMPAIGN_TOP_RULE,
        "top_evidence_look_every": TOP_EVIDENCE_LOOK_EVERY,
        # raters held or rejected in review when the snapshot was taken: left out like flagged raters
        "held_out_raters": held_out_raters(campaign) if exclude_flagged else [],
    }


def held_out_raters(campaign: Campaign) -> list[str]:
    reviews = reviews_of(campaign)
    held = reviews["review"].isin([RaterReview.State.HELD, RaterReview.State.REJECTED])
    return sorted(reviews.loc[held, "rater"])


def software_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def snapshot_numbers(votes: pd.DataFrame, settings: dict) -> dict:
    """criterion -> {votes, excluded_raters, leaderboard, decision}: the snapshot's numbers from its votes."""
    raters = rater_table_of(votes, min_gold_accuracy=settings["min_gold_accuracy"])
    flagged = set(raters.loc[raters["flagged"], "rater"]) if len(raters) else set()
    excluded = sorted(flagged | set(settings.get("held_out_raters", []))) if settings["exclude_flagged"] else []
    criteria = list(settings["criteria"]) + sorted(set(votes["criterion"]) - set(settings["criteria"]))
    out = {}
    for criterion in criteria:
        counted = counted_votes(votes[votes["criterion"] == criterion], exclude_raters=excluded)
        leaderboard: list[dict] = []
        decision = None
        if len(counted) and count_pairs(counted).n_models >= 2:
            fit = fit_bradley_terry(
                counted,
                ties=settings["ties"],
                intervals=settings["intervals"],
                rounds=settings["rounds"],
                seed=settings["seed"],
                confidence=settings["confidence"],
            )
            leaderboard = [{f: row[f] for f in LEADERBOARD_FIELDS} for row in records(fit.reset_index())]
            top_rule = settings.get("top_rule", "bonferroni")
            found = decisions_of(
                counted,
                settings["alpha"],
                min_votes_per_pair=settings["min_votes_per_pair"],
                top_rule=top_rule,
                look_every=settings.get("top_evidence_look_every", TOP_EVIDENCE_LOOK_EVERY),
            )
            if found is not None:
                top = found["top_model"]
                decision = {
                    "top_model": top["model_name"],
                    "certified": bool(top["certified"]),
                    "confidence": top["confidence"],
                    "order": found["models_in_order"],
                    "settled": [
                        {"higher": n["higher_name"], "lower": n["lower_name"], "settled": bool(n["settled"])}
                        for n in found["neighbours"]
                    ],
                }
                if "top_rule" in settings:  # (absent from older snapshots, whose stored numbers lack these)
                    decision["top_rule"] = top_rule
                    decision["bonferroni"] = {
                        "certified": top["bonferroni"]["certified"],
                        "confidence": top["bonferroni"]["confidence"],
                    }
        out[criterion] = {
            "votes": len(counted),
            "excluded_raters": excluded,
            "leaderboard": leaderboard,
            "decision": decision,
        }
    return json.loads(json.dumps(finite(out), allow_nan=False))  # exactly what JSONField stores and gives back


def finite(value):
    """JSON has no infinities or NaN (PostgreSQL refuses them): those become None, everywhere in `value`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def votes_parquet(votes: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    votes.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def content_hash(votes_sha256: str, settings: dict) -> str:
    canonical = json.dumps({"votes_sha256": votes_sha256, "settings": settings}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def take_snapshot(
    campaign: Campaign, *, kind: str = ResultSnapshot.Kind.ON_DEMAND, user=None, now: datetime | None = None
) -> ResultSnapshot:
    """Freeze the campaign's results now. A daily snapshot already taken today is returned unchanged."""
    now = now or timezone.now()
    day = now.astimezone(UTC).date()
    if kind == ResultSnapshot.Kind.DAILY:
        existing = ResultSnapshot.objects.filter(campaign=campaign, kind=kind, day=day).first()
        if existing is not None:
            return existing
    votes = votes_frame(campaign)
    settings = snapshot_settings(campaign)
    data = votes_parquet(votes)
    votes_sha256 = hashlib.sha256(data).hexdigest()
    snapshot = ResultSnapshot(
        campaign=campaign,
        kind=kind,
        taken_at=now,
        day=day,
        votes_sha256=votes_sha256,
        n_votes=len(votes),
        settings=settings,
        software=software_versions(),
        content_hash=content_hash(votes_sha256, settings),
        results=snapshot_numbers(votes, settings),
        taken_by=user if user is not None and user.is_authenticated else None,
    )
    snapshot.votes_file.save("votes.parquet", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            snapshot.save()
    except IntegrityError:  # another process took today's daily snapshot at the same moment
        snapshot.votes_file.delete(save=False)
        return ResultSnapshot.objects.get(campaign=campaign, kind=kind, day=day)
    return snapshot


def snapshot_votes(snapshot: ResultSnapshot) -> pd.DataFrame:
    """The votes the snapshot was fitted on, after checking the stored file is the one it was fitted on."""
    with snapshot.votes_file.open("rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != snapshot.votes_sha256:
        raise ValueError(f"snapshot {snapshot.pk}: its votes file has changed since it was taken (sha256 differs)")
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def refit(snapshot: ResultSnapshot) -> dict:
    """Compute the snapshot's numbers again from its stored votes and settings: {identical, results,
    differences (criterion and field of each number that differs), software then and now}."""
    again = snapshot_numbers(snapshot_votes(snapshot), snapshot.settings)
    differences = []
    for criterion in sorted(set(again) | set(snapshot.results)):
        stored, now = snapshot.results.get(criterion), again.get(criterion)
        if stored != now:
            fields = sorted(
                k for k in set(stored or {}) | set(now or {}) if (stored or {}).get(k) != (now or {}).get(k)
            )
            differences.append({"criterion": criterion, "fields": fields})
    return {
        "snapshot": snapshot.pk,
        "content_hash": snapshot.content_hash,
        "identical": not differences,
        "differences": differences,
        "software_then": snapshot.software,
        "software_now": software_versions(),
        "results": again,
    }


def snapshot_export(snapshot: ResultSnapshot, table: str) -> pd.DataFrame:
    """A snapshot's votes or results as an export table; every row carries the snapshot id and content hash."""
    if table == "votes":
        frame = snapshot_votes(snapshot)
    elif table == "results":
        rows = [
            {"criterion": criterion, **entry}
            for criterion, block in snapshot.results.items()
            for entry in block["leaderboard"]
        ]
        frame = pd.DataFrame(rows, columns=["criterion", *LEADERBOARD_FIELDS])
    else:
        raise ValueError(f"a snapshot exports votes or results, not {table!r}")
    frame.insert(0, "snapshot_id", snapshot.pk)
    frame.insert(1, "content_hash", snapshot.content_hash)
    return frame


def history(campaign: Campaign, criterion: str) -> list[dict]:
    """One point per snapshot and model on one criterion, oldest first: taken_at, model, score, lower, upper."""
    points = []
    for snapshot in ResultSnapshot.objects.filter(campaign=campaign).order_by("taken_at", "id"):
        block = snapshot.results.get(criterion) or {}
        for entry in block.get("leaderboard", []):
            points.append(
                {
                    "snapshot": snapshot.pk,
                    "kind": snapshot.kind,
                    "taken_at": snapshot.taken_at,
                    **{f: entry[f] for f in ("model", "score", "lower", "upper", "rank")},
                }
            )
    return points


def take_daily_snapshots(now: datetime | None = None) -> list[int]:
    """Today's daily snapshot of every campaign that has votes (the beat task; idempotent within a day)."""
    taken = []
    for campaign in Campaign.objects.filter(votes__isnull=False).distinct().order_by("pk"):
        taken.append(take_snapshot(campaign, kind=ResultSnapshot.Kind.DAILY, now=now).pk)
    return taken
