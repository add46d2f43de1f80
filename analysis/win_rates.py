"""Empirical win rates from a table of votes, no model fitted: the pairwise win-rate matrix and one model's
win rate against each other model per criterion (the SD3 paper's figure).

May import numpy, pandas, analysis.votes and analysis.intervals (Wilson intervals).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis.intervals import wilson_interval
from analysis.votes import check_single_criterion, count_pairs, select_votes


def win_rate_matrix(
    votes: pd.DataFrame, *, models: Iterable[str] | None = None, exclude_raters: Iterable[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise empirical win rates: (rates, counts), two square DataFrames indexed model x model.

    rates.loc[r, c] = share of the r-vs-c votes that r won, ties and both_bad counted half (NaN where
    the pair was never compared); counts.loc[r, c] = number of r-vs-c votes. Gold checks are left out.
    models: row / column order (default: sorted names), e.g. `fit.index` for leaderboard order.
    """
    votes = select_votes(votes, exclude_raters=exclude_raters)
    check_single_criterion(votes)
    pairs = count_pairs(votes, models)
    decisive, ties = pairs.dense()
    n = decisive + decisive.T + ties
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(n > 0, (decisive + 0.5 * ties) / n, np.nan)
    index = pd.Index(pairs.models, name="model")
    columns = pd.Index(pairs.models, name="opponent")
    return pd.DataFrame(rates, index, columns), pd.DataFrame(n.astype(int), index, columns)


def sd3_win_rates(
    votes_by_criterion: dict[str, pd.DataFrame],
    model: str,
    *,
    confidence: float = 0.95,
    exclude_raters: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One model's win rate against every other model on each criterion (the SD3 paper's figure 5 data).

    votes_by_criterion: {"prompt_following": votes, "aesthetics": votes, ...}. Returns a long DataFrame
    with columns criterion, opponent, wins, losses, ties (tie + both_bad), n, win_rate (ties half),
    lower, upper (Wilson interval, see `wilson_interval`).
    """
    if not votes_by_criterion:
        raise ValueError("votes_by_criterion is empty")
    rows = []
    for criterion, votes in votes_by_criterion.items():
        votes = select_votes(votes, exclude_raters=exclude_raters)
        mine = votes[(votes["model_a"] == model) | (votes["model_b"] == model)]
        if len(mine) == 0:
            raise ValueError(f"model {model!r} has no votes on criterion {criterion!r}")
        is_a = (mine["model_a"] == model).to_numpy()
        opponent = np.where(is_a, mine["model_b"], mine["model_a"])
        won = np.where(is_a, mine["winner"] == "model_a", mine["winner"] == "model_b")
        tied = mine["winner"].isin(["tie", "both_bad"]).to_numpy()
        table = pd.DataFrame({"opponent": opponent, "wins": won, "ties": tied, "losses": ~won & ~tied})
        table = table.groupby("opponent").sum().astype(int).reset_index()
        table.insert(0, "criterion", criterion)
        rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    out["n"] = out["wins"] + out["losses"] + out["ties"]
    out["win_rate"] = (out["wins"] + 0.5 * out["ties"]) / out["n"]
    out["lower"], out["upper"] = wilson_interval(out["wins"] + 0.5 * out["ties"], out["n"], confidence)
    return out[["criterion", "opponent", "wins", "losses", "ties", "n", "win_rate", "lower", "upper"]]
