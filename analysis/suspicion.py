"""Suspicious raters: bursts of joins, identical answer streams, and answers that favour one model.

Three plain checks, each returning one row per suspicious rater (or pair of raters) with the evidence:

  join_bursts(joins)            many accounts joining through one link within a short window (a script, or
                                one person minting accounts to stuff votes);
  identical_streams(votes)      two raters whose answers on the items they share are the same, far beyond
                                what the crowd, and their agreement with anyone else, predicts;
  model_favouring(votes)        a rater who picks one model far more often than the rest of the crowd does
                                *on the same model pairs* (someone who recognises a model and pushes it).

`suspicious_raters(votes, joins)` runs all three and gives one row per rater with its reasons.

The favouring check compares a rater with the crowd on the pairs the rater was shown, so a careful rater
who prefers the truly best model is not suspicious: the crowd prefers it on those pairs too. A rater is
flagged only when the excess is both large (min_excess) and significant after a Bonferroni correction over
the models tested.

Vote columns used (see analysis/votes.py): rater, item, model_a, model_b, winner, criterion (optional),
is_gold (optional; gold checks are left out). Join columns: rater, link, joined_at (datetimes).
May import numpy, pandas, scipy and analysis.votes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.votes import check_votes, require_columns

SUSPICION_COLUMNS = ["rater", "reasons"]


def _real_votes(votes: pd.DataFrame) -> pd.DataFrame:
    if "is_gold" in votes.columns:
        votes = votes[~votes["is_gold"].fillna(False).astype(bool)]
    return votes


def _pair_key(votes: pd.DataFrame) -> pd.Series:
    """The unordered model pair (and criterion, when there is one) of each vote: "a|b|criterion"."""
    first = np.minimum(votes["model_a"].astype(str), votes["model_b"].astype(str))
    second = np.maximum(votes["model_a"].astype(str), votes["model_b"].astype(str))
    key = pd.Series(first, index=votes.index) + "|" + pd.Series(second, index=votes.index)
    if "criterion" in votes.columns:
        key = key + "|" + votes["criterion"].astype(str)
    return key


def _outcome(votes: pd.DataFrame) -> pd.Series:
    """Orientation-free answer: the winning model's name, "tie" or "both_bad"."""
    winner = votes["winner"].to_numpy()
    won = np.where(winner == "model_a", votes["model_a"].astype(str), votes["model_b"].astype(str))
    return pd.Series(np.where(np.isin(winner, ["tie", "both_bad"]), winner, won), index=votes.index)


# --------------------------------------------------------------------------------------------------
# Join bursts
# --------------------------------------------------------------------------------------------------


def join_bursts(joins: pd.DataFrame, *, window_seconds: float = 60.0, min_joins: int = 10) -> pd.DataFrame:
    """Raters who joined through a link in a burst: at least `min_joins` joins through the same link within
    `window_seconds`. Returns rater, link, burst_size (the largest such window the rater is in)."""
    columns = ["rater", "link", "burst_size"]
    if len(joins) == 0:
        return pd.DataFrame(columns=columns)
    require_columns(joins, ["rater", "link", "joined_at"], "join_bursts")
    rows = []
    for link, group in joins.groupby("link", sort=False):
        group = group.sort_values("joined_at")
        times = pd.to_datetime(group["joined_at"], utc=True)
        seconds = (times - times.min()).dt.total_seconds().to_numpy()
        raters = group["rater"].to_numpy()
        best = np.zeros(len(seconds), dtype=int)
        end = 0
        for start in range(len(seconds)):  # two pointers: the window starting at each join
            end = max(end, start)
            while end + 1 < len(seconds) and seconds[end + 1] - seconds[start] <= window_seconds:
                end += 1
            size = end - start + 1
            if size >= min_joins:
                best[start : end + 1] = np.maximum(best[start : end + 1], size)
        rows += [{"rater": r, "link": link, "burst_size": int(b)} for r, b in zip(raters, best, strict=True) if b]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------
# Identical answer streams
# --------------------------------------------------------------------------------------------------


def identical_streams(
    votes: pd.DataFrame, *, min_shared: int = 20, min_agreement: float = 1.0, alpha: float = 1e-3
) -> pd.DataFrame:
    """Pairs of raters whose answers agree on at least `min_agreement` (default: all) of the >= `min_shared`
    items they both answered, when what the crowd predicts makes that improbable.

    Answers are the winning model, tie or both bad, so the left/right order does not matter. The predicted
    agreement of raters A and B is the highest of: the crowd's agreement on those model pairs (the chance
    that two votes drawn from the answers on an item's model pair and criterion agree: sum of share**2,
    averaged over the shared items), and the agreement of A or of B with any *third* rater they share at
    least `min_shared` items with. So careful raters, who agree with every careful rater about as much as
    with each other, are not suspects; an account that copies another (or two run by one script), which
    agree with each other far more than with anyone else, are. The test is one-sided binomial
    (conservative next to the exact Poisson-binomial), Bonferroni-corrected over the pairs tested.
    Returns rater, other, n_shared, agreement, expected, p_value.
    """
    columns = ["rater", "other", "n_shared", "agreement", "expected", "p_value"]
    votes = _real_votes(votes)
    if len(votes) == 0:
        return pd.DataFrame(columns=columns)
    require_columns(votes, ["rater", "item", "model_a", "model_b", "winner"], "identical_streams")
    check_votes(votes)
    frame = pd.DataFrame(
        {"rater": votes["rater"], "item": votes["item"], "pair": _pair_key(votes), "answer": _outcome(votes)}
    ).drop_duplicates(["rater", "item"])
    shares = frame.groupby("pair")["answer"].value_counts(normalize=True)
    chance = (shares**2).groupby(level=0).sum()  # the crowd's agreement per model pair
    frame["chance"] = frame["pair"].map(chance)
    both = frame.merge(frame, on=["item", "pair", "chance"], suffixes=("", "_other"))
    both = both[both["rater"].astype(str) < both["rater_other"].astype(str)]
    if both.empty:
        return pd.DataFrame(columns=columns)
    both["agree"] = both["answer"] == both["answer_other"]
    grouped = both.groupby(["rater", "rater_other"]).agg(
        n_shared=("agree", "size"), agreed=("agree", "sum"), crowd=("chance", "mean")
    )
    tested = grouped[grouped["n_shared"] >= min_shared].copy()
    if tested.empty:
        return pd.DataFrame(columns=columns)
    tested["agreement"] = tested["agreed"] / tested["n_shared"]
    with_others: dict = {}  # rater -> [(other, agreement)] over the tested pairs
    for (a, b), agreement in tested["agreement"].items():
        with_others.setdefault(a, []).append((b, agreement))
        with_others.setdefault(b, []).append((a, agreement))
    expected = []
    for (a, b), crowd in tested["crowd"].items():
        third = [x for r, o in ((a, b), (b, a)) for other, x in with_others[r] if other != o]
        expected.append(max([crowd, *third]))
    tested["expected"] = np.clip(expected, 0.0, 1 - 1e-9)
    tested["p_value"] = stats.binom.sf(tested["agreed"] - 1, tested["n_shared"], tested["expected"])
    hits = tested[(tested["agreement"] >= min_agreement) & (tested["p_value"] < alpha / len(tested))]
    out = hits.reset_index().rename(columns={"rater_other": "other"})
    out["n_shared"] = out["n_shared"].astype(int)
    return out[columns]


# --------------------------------------------------------------------------------------------------
# One model favoured far beyond the crowd
# --------------------------------------------------------------------------------------------------


def model_favouring(
    votes: pd.DataFrame, *, min_votes: int = 20, min_excess: float = 0.25, alpha: float = 1e-3
) -> pd.DataFrame:
    """Raters who pick one model far more often than the rest of the crowd does on the same model pairs.

    For each rater and each model they were shown, over the rater's decisive votes (left or right) on pairs
    with that model: `picked` is how often they chose it; the crowd's chance on each vote is the share of the
    *other* raters' decisive votes on that model pair (and criterion) that chose it (votes on a model pair
    nobody else answered are left out), and the baseline is that chance but at least 1/2 (a coin), so a
    random clicker, who picks a weak model far more often than the crowd, favours nothing. Flagged when at
    least `min_votes` votes are compared, the excess share (picked - baseline) / n is at least `min_excess`,
    and the one-sided normal test of picked against the Poisson-binomial with the baseline chances gives
    p < alpha / (models tested for the rater). Pushing the model the crowd already prefers most cannot be
    told from good judgement this way, and is not flagged.
    A careful rater who prefers the truly best model is not flagged: the crowd prefers it on the same pairs.
    Returns rater, model, n_votes, picked_share, crowd_share, excess, p_value.
    """
    columns = ["rater", "model", "n_votes", "picked_share", "crowd_share", "excess", "p_value"]
    votes = _real_votes(votes)
    if len(votes) == 0:
        return pd.DataFrame(columns=columns)
    require_columns(votes, ["rater", "model_a", "model_b", "winner"], "model_favouring")
    check_votes(votes)
    decisive = votes[votes["winner"].isin(["model_a", "model_b"])]
    if decisive.empty:
        return pd.DataFrame(columns=columns)
    pair = _pair_key(decisive)
    won = _outcome(decisive)
    # one row per (vote, model shown): did this vote pick this model?
    long = pd.concat(
        [
            pd.DataFrame({"rater": decisive["rater"], "pair": pair, "model": decisive[side].astype(str)})
            for side in ("model_a", "model_b")
        ]
    )
    long["picked"] = (long["model"] == pd.concat([won, won])).astype(float)
    total = long.groupby(["pair", "model"])["picked"].agg(["sum", "count"])
    mine = long.groupby(["rater", "pair", "model"])["picked"].agg(["sum", "count"]).reset_index()
    mine = mine.merge(total.add_suffix("_all").reset_index(), on=["pair", "model"])
    others_n = mine["count_all"] - mine["count"]
    mine = mine[others_n > 0].copy()
    mine["crowd_rate"] = (mine["sum_all"] - mine["sum"]) / (mine["count_all"] - mine["count"])
    # the baseline is the crowd's rate, but never below a coin's: a random clicker picks the worst model half
    # the time, far more than the crowd, yet favours nothing
    baseline = mine["crowd_rate"].clip(lower=0.5)
    mine["crowd"] = mine["crowd_rate"] * mine["count"]
    mine["expected"] = baseline * mine["count"]
    mine["variance"] = baseline * (1 - baseline) * mine["count"]
    per_model = mine.groupby(["rater", "model"]).agg(
        n_votes=("count", "sum"),
        picked=("sum", "sum"),
        crowd=("crowd", "sum"),
        expected=("expected", "sum"),
        variance=("variance", "sum"),
    )
    per_model = per_model[per_model["n_votes"] >= min_votes]
    if per_model.empty:
        return pd.DataFrame(columns=columns)
    excess = (per_model["picked"] - per_model["expected"]) / per_model["n_votes"]
    sd = np.sqrt(per_model["variance"].clip(lower=1e-12))
    z = (per_model["picked"] - per_model["expected"] - 0.5) / sd  # continuity correction
    p_values = pd.Series(stats.norm.sf(z), index=per_model.index)
    tested_per_rater = per_model.groupby(level="rater")["n_votes"].transform("size")
    hits = (excess >= min_excess) & (p_values < alpha / tested_per_rater)
    out = pd.DataFrame(
        {
            "n_votes": per_model["n_votes"].astype(int),
            "picked_share": per_model["picked"] / per_model["n_votes"],
            "crowd_share": per_model["crowd"] / per_model["n_votes"],
            "excess": excess,
            "p_value": p_values,
        }
    )[hits]
    return out.reset_index()[columns]


# --------------------------------------------------------------------------------------------------
# Together
# --------------------------------------------------------------------------------------------------


def suspicious_raters(votes: pd.DataFrame, joins: pd.DataFrame | None = None, **options) -> pd.DataFrame:
    """One row per suspicious rater: rater and reasons (words a researcher reads, "; "-separated).

    options: window_seconds, min_joins (join_bursts); min_shared, min_agreement (identical_streams);
    min_votes, min_excess (model_favouring); alpha (both tests)."""
    burst_opts = {k: options[k] for k in ("window_seconds", "min_joins") if k in options}
    stream_opts = {k: options[k] for k in ("min_shared", "min_agreement", "alpha") if k in options}
    favour_opts = {k: options[k] for k in ("min_votes", "min_excess", "alpha") if k in options}
    reasons: dict = {}

    def add(rater, reason: str) -> None:
        reasons.setdefault(rater, []).append(reason)

    if joins is not None and len(joins):
        for row in join_bursts(joins, **burst_opts).itertuples():
            add(row.rater, f"join burst: one of {row.burst_size} joins through {row.link} within a short window")
    if len(votes):
        for row in identical_streams(votes, **stream_opts).itertuples():
            text = f"{row.agreement:.0%} of {row.n_shared} shared answers (crowd predicts {row.expected:.0%})"
            add(row.rater, f"identical answers to rater {row.other}: {text}")
            add(row.other, f"identical answers to rater {row.rater}: {text}")
        for row in model_favouring(votes, **favour_opts).itertuples():
            add(
                row.rater,
                f"favours {row.model}: picked in {row.picked_share:.0%} of {row.n_votes} votes, "
                f"the crowd {row.crowd_share:.0%} on the same pairs (p={row.p_value:.1g})",
            )
    return pd.DataFrame(
        [{"rater": r, "reasons": "; ".join(dict.fromkeys(v))} for r, v in reasons.items()], columns=SUSPICION_COLUMNS
    )
