"""The vote table's checks: a bad table is refused with a clear message wherever it enters analysis/."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.leaderboard import fit_bradley_terry


@pytest.mark.parametrize(
    ("votes", "message"),
    [
        (pd.DataFrame({"model_a": ["a"], "winner": ["model_a"]}), "missing column"),
        (pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "winner": ["left"]}), "unknown winner"),
        (pd.DataFrame({"model_a": [], "model_b": [], "winner": []}), "empty"),
        (pd.DataFrame({"model_a": ["a"], "model_b": ["a"], "winner": ["tie"]}), "with itself"),
        (pd.DataFrame({"model_a": ["a", None], "model_b": ["b", "b"], "winner": ["tie", "tie"]}), "missing model"),
        (
            pd.DataFrame(
                {"model_a": ["a", "a"], "model_b": ["b", "b"], "winner": ["tie"] * 2, "criterion": ["x", "y"]}
            ),
            "one criterion at a time",
        ),
        ([("a", "b", "model_a")], "DataFrame"),
    ],
)
def test_bad_votes_are_refused_with_a_clear_message(votes, message):
    with pytest.raises(ValueError, match=message):
        fit_bradley_terry(votes)
