"""Rater quality: gold-check accuracy, speed, position bias and inter-rater agreement.

Vote columns used here (see analysis/votes.py for the full schema):
  rater         rater id
  winner        "model_a", "model_b", "tie" or "both_bad"
  model_a, model_b, left_model   the two models and which one was shown on the left
  item          id of the image pair shown (the same item judged by several raters = a repeated pair)
  is_gold, gold_correct          gold / attention checks and whether the answer was right
  seconds       time taken for the vote

Typical use: ``report = rater_report(votes)``, then
``fit_bradley_terry(votes, exclude_raters=flagged_raters(report))``.
May import numpy, pandas, scipy and analysis.votes and intervals.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.intervals import wilson_interval
from analysis.votes import check_votes, require_columns

DECISIVE = ("model_a", "model_b")


def gold_accuracy(
    votes: pd.DataFrame, *, confidence: float = 0.95, item: str | None = None, contested_below: float = 0.5
) -> pd.DataFrame:
    """Per rater: n_gold, n_correct, accuracy and its Wilson interval (lower, upper) on gold checks.

    Needs columns rater, is_gold, gold_correct. Raters without gold checks are left out.

    With `item` (a column naming the gold check), a check is left out of a rater's figures when the other
    raters who answered it (at least two) got it right less than `contested_below` of the time: its answer
    is contested, as when both images of the check fail the prompt (a weak model's image for the prompt
    against its image for another prompt) and careful people rightly call it a tie. Such a check says
    nothing about the rater. n_contested counts the checks left out for each rater.
    """
    require_columns(votes, ["rater", "is_gold", "gold_correct"] + ([item] if item else []), "gold_accuracy")
    gold = votes[votes["is_gold"].fillna(False).astype(bool)]
    if gold["gold_correct"].isna().any():
        raise ValueError("gold_correct is missing for some gold checks")
    correct = gold["gold_correct"].astype(bool).astype(int)
    contested = pd.Series(False, index=gold.index)
    if item is not None:
        answers = correct.groupby(gold[item]).transform("size") - 1  # other raters' answers on the check
        right = correct.groupby(gold[item]).transform("sum") - correct
        contested = (answers >= 2) & (right < contested_below * answers)
    table = (
        pd.DataFrame({"rater": gold["rater"], "correct": correct.where(~contested), "contested": contested})
        .groupby("rater")
        .agg(n_gold=("correct", "count"), n_correct=("correct", "sum"), n_contested=("contested", "sum"))
    )
    table = table[table["n_gold"] > 0].copy()
    table["n_correct"] = table["n_correct"].astype(int)
    table["n_contested"] = table["n_contested"].astype(int)
    table["accuracy"] = table["n_correct"] / table["n_gold"]
    table["lower"], table["upper"] = wilson_interval(table["n_correct"], table["n_gold"], confidence)
    return table


def rater_speed(votes: pd.DataFrame, *, fast_seconds: float = 2.0) -> pd.DataFrame:
    """Per rater: n_votes, median_seconds, p10_seconds and fast_share (votes quicker than fast_seconds)."""
    require_columns(votes, ["rater", "seconds"], "rater_speed")
    seconds = pd.to_numeric(votes["seconds"], errors="coerce")
    if seconds.isna().any() or (seconds < 0).any():
        raise ValueError("seconds must be a non-negative number for every vote")
    grouped = seconds.groupby(votes["rater"])
    return pd.DataFrame(
        {
            "n_votes": grouped.size(),
            "median_seconds": grouped.median(),
            "p10_seconds": grouped.quantile(0.1),
            "fast_share": (seconds < fast_seconds).groupby(votes["rater"]).mean(),
        }
    )


def position_bias(votes: pd.DataFrame, *, by: str | None = "rater", confidence: float = 0.95) -> pd.DataFrame:
    """Share of decisive votes that went to the image on the left, with an exact binomial test.

    Needs columns model_a, model_b, winner, left_model (and `by`, default rater; by=None pools everyone).
    Ties and both_bad are not counted. Returns per group: n_decisive, left_share, lower, upper
    (Clopper-Pearson interval) and p_value (two-sided exact binomial test of left_share = 0.5). With the
    left/right order randomised, an unbiased rater's left_share is 0.5 whatever the models' strengths.
    """
    columns = ["model_a", "model_b", "winner", "left_model"] + ([by] if by else [])
    require_columns(votes, columns, "position_bias")
    check_votes(votes)
    on_screen = (votes["left_model"] == votes["model_a"]) | (votes["left_model"] == votes["model_b"])
    if not on_screen.all():
        raise ValueError("left_model must be model_a or model_b in every vote")
    decisive = votes[votes["winner"].isin(DECISIVE)]
    chosen = np.where(decisive["winner"] == "model_a", decisive["model_a"], decisive["model_b"])
    left = pd.Series(chosen == decisive["left_model"].to_numpy(), index=decisive.index)
    groups = left.groupby(decisive[by]) if by else left.groupby(np.zeros(len(left), dtype=int))
    rows = {}
    for key, chose_left in groups:
        k, n = int(chose_left.sum()), len(chose_left)
        test = stats.binomtest(k, n, 0.5)
        ci = test.proportion_ci(confidence, method="exact")
        rows[key if by else "all"] = {
            "n_decisive": n,
            "left_share": k / n,
            "lower": ci.low,
            "upper": ci.high,
            "p_value": test.pvalue,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = by or "raters"
    return table


# --------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------


def krippendorff_alpha_nominal(units: Iterable[Iterable[Hashable]]) -> float:
    """Krippendorff's alpha for nominal data.

    units: for each unit (e.g. an image pair on one criterion), the values the raters gave it (missing
    ratings simply absent, None / NaN dropped). Units with fewer than two values are not pairable and
    are ignored. alpha = 1 - D_o / D_e from the coincidence matrix (Krippendorff 2011, "Computing
    Krippendorff's alpha-reliability"). Returns NaN when all pairable values are the same (D_e = 0).
    """
    labels: dict[Hashable, int] = {}
    rows, cols = [], []
    for u, unit in enumerate(units):
        for v in unit:
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            rows.append(u)
            cols.append(labels.setdefault(v, len(labels)))
    if not rows:
        raise ValueError("no ratings given")
    table = np.zeros((rows[-1] + 1, len(labels)))
    np.add.at(table, (np.array(rows), np.array(cols)), 1.0)
    return krippendorff_alpha_from_counts(table)


def krippendorff_alpha_from_counts(table: np.ndarray | pd.DataFrame) -> float:
    """Nominal Krippendorff's alpha from an (units, categories) table of rating counts (any number per unit)."""
    counts = np.asarray(table, dtype=float)
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if len(m) == 0:
        raise ValueError("no unit has two or more ratings: agreement is undefined")
    disagreement = ((m * m - (counts**2).sum(axis=1)) / (m - 1)).sum()  # sum_{c != k} o_ck
    n_c = counts.sum(axis=0)
    n = n_c.sum()
    expected = n * n - (n_c**2).sum()  # sum_{c != k} n_c n_k
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * disagreement / expected)


def fleiss_kappa(table: np.ndarray | pd.DataFrame) -> float:
    """Fleiss' kappa from an (items, categories) table of counts; every item needs the same number
    of ratings (at least 2)."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a non-empty (items, categories) table of counts")
    raters = counts.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every item")
    n = raters[0]
    p_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_category = counts.sum(axis=0) / counts.sum()
    p_bar, p_expected = p_item.mean(), (p_category**2).sum()
    if p_expected == 1:
        return float("nan")
    return float((p_bar - p_expected) / (1 - p_expected))


def _item_outcomes(votes: pd.DataFrame, item_cols: list[str], both_bad_is_tie: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per vote: item number and an orientation-free outcome code.

    0 = the item's alphabetically first model won, 1 = the other model won, 2 = tie, 3 = both bad
    (folded into 2 when both_bad_is_tie). Raises if an item mixes different model pairs.
    """
    item_no = votes.groupby(item_cols, sort=False, dropna=False).ngroup().to_numpy()
    first = np.minimum(votes["model_a"].astype(str), votes["model_b"].astype(str)).to_numpy()
    second = np.maximum(votes["model_a"].astype(str), votes["model_b"].astype(str)).to_numpy()
    pairs = pd.DataFrame({"item": item_no, "first": first, "second": second}).drop_duplicates()
    if pairs["item"].duplicated().any():
        raise ValueError(f"an item ({item_cols}) must always show the same two models")
    winner = votes["winner"].to_numpy()
    won = np.where(winner == "model_a", votes["model_a"], votes["model_b"]).astype(str)
    code = np.where(won == first, 0, 1)
    code = np.where(winner == "tie", 2, np.where(winner == "both_bad", 2 if both_bad_is_tie else 3, code))
    return item_no, code


def rater_agreement(
    votes: pd.DataFrame, *, item: str | Sequence[str] = "item", both_bad_is_tie: bool = True
) -> pd.Series:
    """Agreement between raters on repeated pairs.

    Needs model_a, model_b, winner and the `item` column(s) that identify one judged pair (e.g. "item",
    or ["prompt", "seed", "criterion"]). Each vote is coded as "first model won / second won / tie"
    (and "both bad" unless both_bad_is_tie), so the left / right orientation does not matter. Returns
    krippendorff_alpha, fleiss_kappa (NaN unless every repeated item has the same number of ratings),
    percent_agreement (share of agreeing rating pairs within items), n_items (items with >= 2 ratings)
    and n_ratings (ratings on those items).
    """
    item_cols = [item] if isinstance(item, str) else list(item)
    require_columns(votes, ["model_a", "model_b", "winner", *item_cols], "rater_agreement")
    check_votes(votes)
    item_no, code = _item_outcomes(votes, item_cols, both_bad_is_tie)
    table = np.zeros((item_no.max() + 1, 4))
    np.add.at(table, (item_no, code), 1.0)
    table = table[table.sum(axis=1) >= 2]
    if len(table) == 0:
        raise ValueError("no item was rated twice: agreement needs repeated pairs")
    m = table.sum(axis=1)
    agree_pairs = (table * (table - 1)).sum() / 2
    all_pairs = (m * (m - 1)).sum() / 2
    return pd.Series(
        {
            "krippendorff_alpha": krippendorff_alpha_from_counts(table),
            "fleiss_kappa": fleiss_kappa(table) if np.all(m == m[0]) else np.nan,
            "percent_agreement": agree_pairs / all_pairs,
            "n_items": len(table),
            "n_ratings": int(m.sum()),
        }
    )


def agreement_with_others(votes: pd.DataFrame, *, item: str | Sequence[str] = "item") -> pd.DataFrame:
    """Per rater: how often their answer equals the most common answer of the *other* raters on the same
    item (ties and both bad as one answer). Votes whose item has no other rater, or whose other raters
    are split evenly, are not compared. Returns n_compared and agreement."""
    item_cols = [item] if isinstance(item, str) else list(item)
    require_columns(votes, ["rater", "model_a", "model_b", "winner", *item_cols], "agreement_with_others")
    check_votes(votes)
    item_no, code = _item_outcomes(votes, item_cols, both_bad_is_tie=True)
    table = np.zeros((item_no.max() + 1, 3))
    np.add.at(table, (item_no, code), 1.0)
    others = table[item_no]  # (V, 3) answers on the same item
    others[np.arange(len(code)), code] -= 1  # ... by the other raters
    top = others.max(axis=1)
    unique_top = (others == top[:, None]).sum(axis=1) == 1
    compared = (top > 0) & unique_top
    agreed = compared & (others.argmax(axis=1) == code)
    frame = pd.DataFrame({"n_compared": compared, "agreed": agreed}).groupby(votes["rater"].to_numpy()).sum()
    frame = frame[frame["n_compared"] > 0]
    table_out = pd.DataFrame({"n_compared": frame["n_compared"].astype(int)})
    table_out["agreement"] = frame["agreed"] / frame["n_compared"]
    table_out.index.name = "rater"
    return table_out


# --------------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------------


def rater_report(
    votes: pd.DataFrame,
    *,
    min_gold_accuracy: float = 0.7,
    max_bias_p_value: float = 1e-3,
    min_median_seconds: float = 2.0,
    item: str | Sequence[str] = "item",
) -> pd.DataFrame:
    """One row per rater with every quality measure the votes allow, plus `flagged` and `reasons`.

    Uses whichever columns exist: gold (is_gold, gold_correct), speed (seconds), position bias
    (left_model), agreement with the other raters (`item`). A rater is flagged when their gold accuracy
    is confidently below min_gold_accuracy (the upper Wilson bound is below it; gold checks the other raters
    contest are left out, see `gold_accuracy`), their left/right choices are biased (p_value <
    max_bias_p_value), or their median time is below min_median_seconds.
    """
    require_columns(votes, ["rater"], "rater_report")
    report = pd.DataFrame(index=pd.Index(sorted(votes["rater"].unique()), name="rater"))
    report["n_votes"] = votes.groupby("rater").size()
    reasons = pd.Series([[] for _ in report.index], index=report.index, dtype=object)
    columns = set(votes.columns)
    if {"is_gold", "gold_correct"} <= columns and votes["is_gold"].fillna(False).astype(bool).any():
        gold_item = item if isinstance(item, str) and item in columns else None
        gold = gold_accuracy(votes, item=gold_item)
        report = report.join(
            gold[["n_gold", "accuracy", "upper", "n_contested"]].rename(
                columns={"accuracy": "gold_accuracy", "upper": "gold_upper", "n_contested": "n_gold_contested"}
            )
        )
        for rater in report.index[report["gold_upper"] < min_gold_accuracy]:
            reasons[rater].append("gold accuracy")
    if "seconds" in columns:
        report = report.join(rater_speed(votes)[["median_seconds", "fast_share"]])
        for rater in report.index[report["median_seconds"] < min_median_seconds]:
            reasons[rater].append("too fast")
    if "left_model" in columns and votes["winner"].isin(DECISIVE).any():
        bias = position_bias(votes)
        report = report.join(bias[["left_share", "p_value"]].rename(columns={"p_value": "bias_p_value"}))
        for rater in report.index[report["bias_p_value"] < max_bias_p_value]:
            reasons[rater].append("position bias")
    item_cols = [item] if isinstance(item, str) else list(item)
    if set(item_cols) <= columns:
        others = agreement_with_others(votes, item=item)
        report = report.join(others.rename(columns={"agreement": "agreement_with_others"}))
    report["flagged"] = reasons.map(bool)
    report["reasons"] = reasons.map(", ".join)
    return report


def flagged_raters(report: pd.DataFrame) -> set:
    """The raters a `rater_report` flagged, ready for exclude_raters= in the fits."""
    return set(report.index[report["flagged"]])
