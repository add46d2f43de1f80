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

import numpy as np
import pandas as pd
from django.core.cache import cache

from analysis.fragility import decision_fragility
from analysis.style_control import COVARIATES, fit_style_control
from analysis.votes import count_pairs, vote_sequence
from evalsite.runs.style_covariates import covariates_frame

FRAGILITY_CACHE_VERSION = 1  # bump when decision_fragility's answer changes for the same votes

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


def fragility_for(counted: pd.DataFrame, alpha: float, top_rule: str = "bonferroni") -> list[dict] | None:
    """decision_fragility on one criterion's counted votes; None without 2 models. top_rule: the rule that
    decides "top model certified" on the page; a replayed one ('rebalanced_ties') takes the counted votes in
    the order they were stored (vote_id), as the Decisions card replays them."""
    if counted.empty:
        return None
    pairs = count_pairs(counted)
    if pairs.n_models < 2:
        return None
    if top_rule == "bonferroni":
        return decision_fragility(pairs, alpha)
    in_order = counted.sort_values("vote_id", kind="stable") if "vote_id" in counted.columns else counted
    ordered = vote_sequence(in_order, list(pairs.models))
    # a pure function of the ordered counted votes: kept in the cache under their fingerprint (the replays cost
    # ~4 s per criterion at 21k votes of 6 models), recomputed as soon as any vote is added, removed or moved
    digest = hashlib.sha256(repr((alpha, top_rule, list(pairs.models), FRAGILITY_CACHE_VERSION)).encode())
    ids = in_order["vote_id"].to_numpy(dtype=np.int64) if "vote_id" in in_order.columns else np.arange(len(in_order))
    for column in (ids, *ordered):
        digest.update(np.ascontiguousarray(column).tobytes())
    key = "fragility:" + digest.hexdigest()
    found = cache.get(key)
    if found is None:
        found = decision_fragility(pairs, alpha, top_rule=top_rule, ordered=ordered)
        cache.set(key, found, 24 * 3600)
    return found
