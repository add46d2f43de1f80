"""Raters held out for review (evalsite.rating.quality.detect_suspicious_raters) on the dashboards.

`with_reviews(campaign, raters)` marks held and rejected raters in the rater table as flagged, with the
checks' reasons, so every number leaves their votes out unless the page is asked to include flagged raters.
`held_out_effect(...)` is the effect of including the held votes: the leaderboard of the chosen criterion
with and without them, side by side, and the raters with their reasons.
"""

from __future__ import annotations

import pandas as pd

from analysis.leaderboard import fit_bradley_terry
from analysis.votes import count_pairs
from evalsite.dashboards.data import counted_votes
from evalsite.rating.models import Campaign, RaterReview

REVIEW_COLUMNS = ["rater", "review", "review_reasons"]


def reviews_of(campaign: Campaign) -> pd.DataFrame:
    """rater (user name), review (held / accepted / rejected), review_reasons."""
    rows = RaterReview.objects.filter(campaign=campaign).values_list("rater__user__username", "state", "reasons")
    return pd.DataFrame.from_records(list(rows), columns=REVIEW_COLUMNS)


def with_reviews(campaign: Campaign, raters: pd.DataFrame) -> pd.DataFrame:
    """The rater table with a `review` column; held and rejected raters are flagged, their reasons added."""
    if raters.empty:
        return raters.assign(review="")
    reviews = reviews_of(campaign).set_index("rater")
    out = raters.copy()
    out["review"] = out["rater"].map(reviews["review"]).astype(object).fillna("")
    held_out = out["review"].isin([RaterReview.State.HELD, RaterReview.State.REJECTED])
    words = out["rater"].map(reviews["review_reasons"]).astype(object).fillna("")
    out.loc[held_out, "reasons"] = [
        ", ".join(filter(None, [r, f"{state} in review: {w}"]))
        for r, state, w in zip(out.loc[held_out, "reasons"], out.loc[held_out, "review"], words[held_out], strict=True)
    ]
    out["flagged"] = out["flagged"].astype(bool) | held_out
    return out.sort_values(["flagged", "rater"], ascending=[False, True])


def held_out_effect(campaign: Campaign, votes: pd.DataFrame, raters: pd.DataFrame, criterion: str, rounds: int) -> dict:
    """{raters: [{rater, reasons}], votes: held votes on the criterion, leaderboard: [{model, without, with}]}:
    the chosen criterion's leaderboard without the held raters' votes (what every number shows) and with them."""
    held = sorted(raters.loc[raters.get("review", pd.Series(dtype=object)) == RaterReview.State.HELD, "rater"])
    if not held:
        return {"raters": [], "votes": 0, "leaderboard": []}
    reviews = reviews_of(campaign).set_index("rater")
    other_flags = sorted(set(raters.loc[raters["flagged"], "rater"]) - set(held))
    on_criterion = votes[votes["criterion"] == criterion]
    without = counted_votes(on_criterion, exclude_raters=other_flags + held)
    including = counted_votes(on_criterion, exclude_raters=other_flags)
    rows: dict[str, dict] = {}
    for label, frame in (("without", without), ("with", including)):
        if len(frame) and count_pairs(frame).n_models >= 2:
            fit = fit_bradley_terry(frame, rounds=rounds)
            for model, entry in fit.iterrows():
                rows.setdefault(str(model), {"model": str(model)})[label] = {
                    "score": float(entry["score"]),
                    "rank": int(entry["rank"]),
                }
    board = sorted(rows.values(), key=lambda r: r.get("without", r.get("with", {})).get("rank", 10**6))
    return {
        "raters": [{"rater": r, "reasons": str(reviews["review_reasons"].get(r, ""))} for r in held],
        "votes": int(len(including) - len(without)),
        "leaderboard": board,
    }
