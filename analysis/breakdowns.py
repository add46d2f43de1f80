"""Results split by prompt category, challenge or any other vote column.

`breakdown(votes, by="category")` answers "on what kind of prompt is which model better": one
Bradley-Terry leaderboard (or one row of win rates per model) for every value of `by`, each with its
number of votes, so that thin groups are visible as such.
May import numpy, pandas and analysis.votes, intervals and leaderboard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis.intervals import wilson_interval
from analysis.leaderboard import fit_bradley_terry
from analysis.votes import select_votes

METHODS = ("bradley_terry", "win_rate")


def _model_win_rates(votes: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Each model's wins / ties / losses against all opponents, win_rate (ties half) and Wilson interval."""
    tie = votes["winner"].isin(["tie", "both_bad"]).to_numpy()
    sides = []
    for side, other in (("model_a", "model_b"), ("model_b", "model_a")):
        won = (votes["winner"] == side).to_numpy()
        lost = (votes["winner"] == other).to_numpy()
        sides.append(pd.DataFrame({"model": votes[side].to_numpy(), "wins": won, "ties": tie, "losses": lost}))
    table = pd.concat(sides).groupby("model").sum().astype(int)
    table["votes"] = table[["wins", "ties", "losses"]].sum(axis=1)
    table["win_rate"] = (table["wins"] + 0.5 * table["ties"]) / table["votes"]
    table["lower"], table["upper"] = wilson_interval(table["wins"] + 0.5 * table["ties"], table["votes"], confidence)
    return table.sort_values("win_rate", ascending=False)


def breakdown(
    votes: pd.DataFrame,
    by: str | Sequence[str] = "category",
    *,
    method: str = "bradley_terry",
    min_votes: int = 1,
    confidence: float = 0.95,
    exclude_raters: Iterable[str] | None = None,
    **fit_options,
) -> pd.DataFrame:
    """Per-group results: one block of rows per value of `by` (a column such as category, challenge,
    criterion, or a list of columns).

    method="bradley_terry": a separate `fit_bradley_terry` per group (fit_options such as ties=,
    intervals=, rounds=, seed= are passed on) -> columns score, lower, upper, rank, votes, win_rate.
    method="win_rate": each model's share of wins against all opponents in the group (ties half) ->
    columns wins, ties, losses, votes, win_rate, lower, upper (Wilson interval).
    Groups with fewer than min_votes votes are left out; every group's size is in column n_group.
    Missing group values are shown as "(none)". Returns a long DataFrame with the `by` column(s), model,
    n_group and the method's columns, groups in order of their values and models best first.
    """
    by_cols = [by] if isinstance(by, str) else list(by)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    votes = select_votes(votes, exclude_raters=exclude_raters)
    missing = [c for c in by_cols if c not in votes.columns]
    if missing:
        raise ValueError(f"breakdown by {missing} needs those columns in votes; it has {list(votes.columns)}")
    if "criterion" in votes.columns and "criterion" not in by_cols and votes["criterion"].nunique() > 1:
        raise ValueError("votes mix criteria: break down one criterion at a time, or include 'criterion' in by")
    keys = votes[by_cols].astype(object).where(votes[by_cols].notna(), "(none)")
    blocks = []
    for group, group_votes in votes.groupby([keys[c] for c in by_cols], sort=True):
        if len(group_votes) < min_votes:
            continue
        if method == "bradley_terry":
            table = fit_bradley_terry(group_votes, confidence=confidence, **fit_options)
        else:
            if fit_options:
                raise ValueError(f"method='win_rate' takes no fit options, got {sorted(fit_options)}")
            table = _model_win_rates(group_votes, confidence)
        table = table.reset_index().rename(columns={"index": "model"})
        table.insert(0, "n_group", len(group_votes))
        for col, value in zip(by_cols, np.atleast_1d(np.array(group, dtype=object)), strict=True):
            table.insert(0, col, value)
        blocks.append(table)
    if not blocks:
        raise ValueError(f"no group of {by_cols} has at least {min_votes} votes")
    out = pd.concat(blocks, ignore_index=True)
    return out[by_cols + ["model", "n_group"] + [c for c in out.columns if c not in by_cols + ["model", "n_group"]]]
