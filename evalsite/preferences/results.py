"""What a preference set's page and API show: the campaign dashboard's analysis, on imported votes.

The numbers come from the same functions as a campaign's (evalsite.dashboards.results and analysis/), with
the same counting rules: gold checks never count, and raters flagged where the votes came from, or by
rater_report on the imported votes themselves, are left out unless asked for. So a campaign's votes export,
imported here, gives the campaign's own leaderboard and decisions (the one campaign setting an export does
not carry, a minimum of votes per model pair before a claim, is taken as 0).
"""

from __future__ import annotations

import pandas as pd

from analysis.breakdowns import breakdown
from analysis.confidence_sequences import DEFAULT_ALPHA
from analysis.leaderboard import fit_bradley_terry
from analysis.votes import count_pairs
from evalsite.dashboards.data import VOTE_COLUMNS, counted_votes
from evalsite.dashboards.results import CAMPAIGN_TOP_RULE, decisions_of, rater_table_of, records, win_rates_of
from evalsite.preferences.models import PreferenceSet, PreferenceVote
from evalsite.rating.models import Criterion, default_min_gold_accuracy

_FIELDS = {  # frame column <- PreferenceVote field
    "vote_id": "source_vote_id",
    "line": "line",
    "criterion": "criterion",
    "winner": "winner",
    "model_a": "model_a",
    "model_b": "model_b",
    "rater": "rater",
    "rater_flagged": "rater_flagged",
    "rater_simulated": "rater_simulated",
    "participant": "participant",
    "item": "item",
    "prompt": "prompt",
    "category": "category",
    "challenge": "challenge",
    "seed": "seed",
    "image_left": "image_a",
    "image_right": "image_b",
    "is_gold": "is_gold",
    "gold_correct": "gold_correct",
    "gold_correct_side": "gold_correct_side",
    "seconds": "seconds",
    "created_at": "created_at",
}
CHOICE_OF_WINNER = {"model_a": "left", "model_b": "right", "tie": "tie", "both_bad": "both_bad"}


def top_rule_of(counted: pd.DataFrame) -> str:
    """The campaign's rule (replayed in the order of the votes' ids where they came from) when every vote carries
    that id, as a campaign's export does; otherwise the stateless rule, which needs no order."""
    if len(counted) and counted["vote_id"].notna().all():
        return CAMPAIGN_TOP_RULE
    return "bonferroni"


def set_votes_frame(preference_set: PreferenceSet) -> pd.DataFrame:
    """The set's votes in the votes export's schema (evalsite.dashboards.data.VOTE_COLUMNS), file order.

    vote_id is the id the vote had where it came from; `line` says where it stood in the imported file."""
    rows = list(
        PreferenceVote.objects.filter(preference_set=preference_set).order_by("line").values_list(*_FIELDS.values())
    )
    raw = pd.DataFrame.from_records(rows, columns=list(_FIELDS)) if rows else pd.DataFrame(columns=list(_FIELDS))
    frame = raw.astype({"rater_flagged": bool, "rater_simulated": bool, "is_gold": bool})
    frame["vote_id"] = raw["vote_id"].astype("Int64")
    frame["seed"] = raw["seed"].astype("Int64")
    frame["gold_correct"] = raw["gold_correct"].astype("boolean")
    frame["seconds"] = raw["seconds"].astype("float64")
    frame["time_taken_ms"] = (frame["seconds"] * 1000).round().astype("Int64")
    frame["created_at"] = pd.to_datetime(raw["created_at"], utc=True)
    frame["choice"] = raw["winner"].map(CHOICE_OF_WINNER)
    frame["left_model"] = raw["model_a"]
    frame["gold_correct_side"] = raw["gold_correct_side"].replace("", None)
    frame["set_id"] = preference_set.pk
    columns = ["set_id", "line"] + [c for c in VOTE_COLUMNS if c in frame.columns]
    return frame[columns]


def criteria_in(votes: pd.DataFrame) -> list[str]:
    """The set's criteria: the platform's three first, in their usual order, then the others by name."""
    found = set(votes["criterion"]) if len(votes) else set()
    known = [c for c in Criterion.values if c in found]
    return known + sorted(found - set(known))


def label_of(criterion: str) -> str:
    return Criterion(criterion).label if criterion in Criterion.values else criterion.replace("_", " ")


def set_results(
    preference_set: PreferenceSet,
    *,
    criterion: str | None = None,
    exclude_flagged: bool = True,
    alpha: float = DEFAULT_ALPHA,
    rounds: int = 100,
    votes: pd.DataFrame | None = None,
) -> dict:
    """Leaderboard, win rates, breakdowns and decisions of one criterion, and decisions of every criterion."""
    votes = set_votes_frame(preference_set) if votes is None else votes
    criteria = criteria_in(votes)
    criterion = criterion or (criteria[0] if criteria else None)
    if criterion is not None and criterion not in criteria:
        raise ValueError(f"criterion {criterion!r} is not in this set; it has {', '.join(criteria) or 'none'}")
    has_raters = bool(len(votes)) and (votes["rater"] != "").any()
    raters = rater_table_of(votes, min_gold_accuracy=default_min_gold_accuracy()) if has_raters else pd.DataFrame()
    excluded = sorted(raters.loc[raters["flagged"], "rater"]) if exclude_flagged and len(raters) else []
    counted = {c: counted_votes(votes[votes["criterion"] == c], exclude_raters=excluded) for c in criteria}

    leaderboard: list[dict] = []
    fit = None
    win_rates = None
    breakdowns: dict[str, list[dict]] = {}
    chosen = counted.get(criterion) if criterion else None
    if chosen is not None and len(chosen) and count_pairs(chosen).n_models >= 2:
        fit = fit_bradley_terry(chosen, rounds=rounds)
        leaderboard = records(fit.reset_index())
        win_rates = win_rates_of(chosen, list(fit.index))
        for column in ("category", "challenge"):
            if chosen[column].nunique() > 1:
                breakdowns[column] = records(breakdown(chosen, by=column, method="win_rate"))
    return {
        "set": {
            "id": preference_set.pk,
            "name": preference_set.name,
            "source": preference_set.source,
            "filename": preference_set.filename,
            "sha256": preference_set.sha256,
            "imported_at": preference_set.imported_at.isoformat(),
            "votes": len(votes),
        },
        "criterion": criterion,
        "criteria": [{"criterion": c, "label": label_of(c), "votes": len(counted[c])} for c in criteria],
        "exclude_flagged": exclude_flagged,
        "excluded_raters": excluded,
        "raters": records(raters[["rater", "n_votes", "flagged", "reasons"]]) if len(raters) else [],
        "leaderboard": leaderboard,
        "fit": None if fit is None else records(pd.DataFrame([fit.attrs]))[0],
        "win_rates": win_rates,
        "breakdowns": breakdowns,
        "decisions": {
            "alpha": alpha,
            "level": 1 - alpha,
            "by_criterion": [
                {
                    "criterion": c,
                    "label": label_of(c),
                    "decision": decisions_of(counted[c], alpha, top_rule=top_rule_of(counted[c])),
                }
                for c in criteria
            ],
        },
    }
