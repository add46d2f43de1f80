"""Style control and fragility for the campaign dashboard and the results API (issue 15).

`style_control_for(counted)`: analysis.style_control.fit_style_control on one criterion's counted votes with
the images' cached covariates (evalsite.runs.style_covariates): both leaderboards side by side and each
covariate's effect. `fragility_for(counted, alpha, top_rule)`: analysis.fragility.decision_fragility, the fewest
votes whose removal changes each decision the page shows ("top model certified" by the page's own rule).
Both return JSON-friendly values or None.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

import numpy as np
import pandas as pd
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from analysis.fragility import decision_fragility
from analysis.style_control import COVARIATES, fit_style_control
from analysis.votes import count_pairs, vote_sequence
from evalsite.outages import CACHE_AWAY
from evalsite.runs.style_covariates import covariates_frame

log = logging.getLogger(__name__)

FRAGILITY_CACHE_VERSION = 1  # bump when decision_fragility's answer changes for the same votes
FRAGILITY_REFRESH_TASK = "dashboards.refresh_fragility"  # computes the replayed top-model fragility off the request
FRAGILITY_KEEP_SECONDS = 7 * 24 * 3600  # how long a computed answer (and the latest one per criterion) is kept
FRAGILITY_ASKED_SECONDS = 600  # a refresh asked for and not finished by then is asked for again
FRAGILITY_OVERDUE_SECONDS = 90  # a refresh unanswered this long is shown as such (no worker on the default queue?)

COVARIATE_LABELS = {
    "brightness": "Brightness (mean luma)",
    "saturation": "Saturation (mean HSV S)",
    "colourfulness": "Colourfulness (Hasler–Süsstrunk)",
    "sharpness": "Sharpness (variance of the Laplacian, log)",
    "pixels": "Image size in pixels (log)",
    "text_present": "Text present (glyph heuristic)",
    "generation_seconds": "Generation time (log seconds)",
}


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (NaN -> None), through pandas' own JSON writer."""
    return json.loads(frame.reset_index().to_json(orient="records"))


def style_control_for(counted: pd.DataFrame, confidence: float = 0.95) -> dict | None:
    """Leaderboards with and without style control and the covariate effects; None without 2 models."""
    if counted.empty or count_pairs(counted).n_models < 2:
        return None
    covariates = covariates_frame(pd.concat([counted["image_left"], counted["image_right"]]).unique())
    result = fit_style_control(counted, covariates, confidence=confidence)
    effects = _records(result.effects)
    for row in effects:
        row["label"] = COVARIATE_LABELS.get(row["covariate"], row["covariate"])
    return {
        "leaderboard": _records(result.leaderboard),
        "effects": effects,
        "left_out": [
            {"covariate": name, "label": COVARIATE_LABELS.get(name, name), "reason": reason}
            for name, reason in result.left_out.items()
        ],
        "covariates": list(COVARIATES),
        "n_votes": result.n_votes,
        "n_images": result.n_images,
        "confidence": result.confidence,
        "intervals": result.intervals,
    }


def _replay_inputs(counted: pd.DataFrame, pairs, alpha: float, top_rule: str):
    """(ordered votes, cache key of the answer) for a replayed top rule: the counted votes in the order they
    were stored (vote_id), as the Decisions card replays them, and their fingerprint."""
    in_order = counted.sort_values("vote_id", kind="stable") if "vote_id" in counted.columns else counted
    ordered = vote_sequence(in_order, list(pairs.models))
    # a pure function of the ordered counted votes: kept in the shared cache under their fingerprint (the replays
    # cost ~4 s per criterion at 21k votes), so any vote added, removed or moved makes it stale
    digest = hashlib.sha256(repr((alpha, top_rule, list(pairs.models), FRAGILITY_CACHE_VERSION)).encode())
    ids = in_order["vote_id"].to_numpy(dtype=np.int64) if "vote_id" in in_order.columns else np.arange(len(in_order))
    for column in (ids, *ordered):
        digest.update(np.ascontiguousarray(column).tobytes())
    return ordered, "fragility:" + digest.hexdigest()


def _pairs_of(counted: pd.DataFrame):
    """The pair counts of one criterion's counted votes, or None without 2 models (nothing to decide)."""
    if counted.empty:
        return None
    pairs = count_pairs(counted)
    return pairs if pairs.n_models >= 2 else None


def fragility_for(
    counted: pd.DataFrame, alpha: float, top_rule: str = "bonferroni", *, latest_key: str | None = None
) -> list[dict] | None:
    """decision_fragility on one criterion's counted votes, computed here (the replay included: seconds at 20k
    votes, so only the Celery task `dashboards.refresh_fragility` and scripts call it; a request calls
    fragility_in_request). None without 2 models. top_rule: the rule that decides "top model certified" on the
    page; a replayed one ('rebalanced_ties_rho8') takes the counted votes in the order they were stored (vote_id).
    A replayed answer is kept in the shared cache under the votes' fingerprint and, with latest_key, as the
    latest answer with the number of votes and the time it was computed for (what a request shows while the
    next one is computed)."""
    pairs = _pairs_of(counted)
    if pairs is None:
        return None
    if top_rule == "bonferroni":
        return decision_fragility(pairs, alpha)
    ordered, key = _replay_inputs(counted, pairs, alpha, top_rule)
    shared = caches["shared"]
    found = shared.get(key)
    if found is None:
        found = decision_fragility(pairs, alpha, top_rule=top_rule, ordered=ordered)
        shared.set(key, found, FRAGILITY_KEEP_SECONDS)
    if latest_key is not None:
        latest = {"key": key, "decisions": found, "votes": len(counted), "computed_at": timezone.now().isoformat()}
        shared.set(latest_key, latest, FRAGILITY_KEEP_SECONDS)
    return found


def fragility_latest_key(campaign_id: int, criterion: str, alpha: float, top_rule: str, exclude_flagged: bool) -> str:
    """Where the latest replayed answer of one campaign's criterion (and page options) is kept."""
    return f"fragility-latest:{campaign_id}:{criterion}:{alpha!r}:{top_rule}:{int(exclude_flagged)}"


def _shared(operation: str, *args):
    """The shared cache for a request: a cache that is away reads as a miss and skips the write, never a 500."""
    try:
        return getattr(caches["shared"], operation)(*args)
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): fragility %s skipped", exc, operation)
        return None


def _asked_marker(campaign_id: int, criterion: str, alpha: float, exclude_flagged: bool) -> str:
    """The shared-cache key that says a refresh of this campaign's criterion (and page options) is asked for."""
    return f"fragility-asked:{campaign_id}:{criterion}:{alpha!r}:{int(exclude_flagged)}"


def _ask_for_refresh(campaign_id: int, criterion: str, alpha: float, exclude_flagged: bool) -> str | None:
    """Enqueue `dashboards.refresh_fragility` after this transaction commits, unless one is already asked for
    (a marker in the shared cache, which the task removes when done and which expires after
    FRAGILITY_ASKED_SECONDS in case its message or its worker was lost). Returns when the refresh now pending
    was asked for (ISO time; now if this request asked), or None when none could be asked for."""
    marker = _asked_marker(campaign_id, criterion, alpha, exclude_flagged)
    now = timezone.now().isoformat()
    added = _shared("add", marker, now, FRAGILITY_ASKED_SECONDS)
    if added is None:  # no shared cache: no marker to hold duplicates back, so ask nothing
        return None
    if not added:
        asked_at = _shared("get", marker)  # None if it expired or was done in between: then it is asked anew
        return asked_at if isinstance(asked_at, str) else now

    def send() -> None:
        from evalsite.celery import app  # the project's Celery app (this module is imported by its tasks)

        try:
            app.send_task(FRAGILITY_REFRESH_TASK, args=[campaign_id, criterion, alpha, exclude_flagged])
        except Exception:  # a broker that is away: the next request asks again
            _shared("delete", marker)
            raise

    transaction.on_commit(send, robust=True)
    return now


def _overdue(asked_at: str | None) -> bool:
    """Whether a refresh asked for at `asked_at` has waited longer than a worker needs (FRAGILITY_OVERDUE_SECONDS)."""
    if asked_at is None:
        return False
    try:
        waited = (timezone.now() - datetime.fromisoformat(asked_at)).total_seconds()
    except (TypeError, ValueError):
        return False
    return waited > FRAGILITY_OVERDUE_SECONDS


def refresh_marker_done(campaign_id: int, criterion: str, alpha: float, exclude_flagged: bool) -> None:
    """The task's last step: the next stale request may ask again."""
    caches["shared"].delete(_asked_marker(campaign_id, criterion, alpha, exclude_flagged))


def fragility_in_request(
    counted: pd.DataFrame, alpha: float, top_rule: str, *, campaign_id: int, criterion: str, exclude_flagged: bool
) -> tuple[list[dict] | None, dict | None]:
    """(decisions, refresh) for a dashboard or API request, which never replays the top rule itself.

    With 'bonferroni' everything is computed here (no replay). With a replayed rule the other decisions are
    computed here (refits on the counts, the same as decision_fragility's) and "top model certified" is the
    answer for exactly these votes when it is in the shared cache (state 'current'); otherwise the latest answer
    computed on earlier votes (state 'stale'), or none yet (state 'computing'), and a refresh is enqueued once.
    refresh: {state, votes (counted now), computed_votes, computed_at, queued}; None for 'bonferroni' or when
    there are not enough votes."""
    pairs = _pairs_of(counted)
    if pairs is None:
        return None, None
    if top_rule == "bonferroni":
        return decision_fragility(pairs, alpha), None
    _, key = _replay_inputs(counted, pairs, alpha, top_rule)
    latest_key = fragility_latest_key(campaign_id, criterion, alpha, top_rule, exclude_flagged)
    latest = _shared("get", latest_key)
    found = _shared("get", key)
    if found is not None:
        at = latest["computed_at"] if isinstance(latest, dict) and latest.get("key") == key else None
        refresh = {"state": "current", "votes": len(counted), "computed_votes": len(counted), "computed_at": at}
        return found, refresh | {"queued": False, "asked_at": None, "overdue": False}
    asked_at = _ask_for_refresh(campaign_id, criterion, alpha, exclude_flagged)
    decisions = decision_fragility(pairs, alpha)  # the stateless decisions; its top entry is the Bonferroni rule's
    top = None
    if isinstance(latest, dict):
        top = next((d for d in latest["decisions"] if d["kind"] == "top_model_certified"), None)
    refresh = {
        "state": "stale" if top is not None else "computing",
        "votes": len(counted),
        "computed_votes": latest["votes"] if top is not None else None,
        "computed_at": latest["computed_at"] if top is not None else None,
        "queued": asked_at is not None,
        "asked_at": asked_at,
        "overdue": _overdue(asked_at),
    }
    if top is None:
        top = {
            "kind": "top_model_certified",
            "claim": f"Certified best by the {top_rule} rule: being computed",
            "state": "computing",
            "holds": None,
            "models": list(pairs.models),
            "approximate": None,
            "votes_to_change": None,
            "confirmed": False,
            "share": None,
            "removed": [],
            "refits": 0,
            "rule": top_rule,
            "explain": "The replay of the site's rule is being computed by a worker; reload the page in a moment.",
        }
    else:
        top = top | {"state": "stale"}
    decisions = [top if d["kind"] == "top_model_certified" else d for d in decisions]
    return decisions, refresh
