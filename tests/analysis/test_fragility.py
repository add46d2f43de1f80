"""Fragility: the fewest votes whose removal changes a decision, on constructed votes with a known answer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.decisions import campaign_decisions
from analysis.fragility import decision_fragility
from analysis.votes import PairCounts, count_pairs


def votes_of(*spec) -> pd.DataFrame:
    """votes_of(("A", "B", "model_a", 51), ...): n votes of model_a vs model_b with that winner."""
    rows = [{"model_a": a, "model_b": b, "winner": w} for a, b, w, n in spec for _ in range(n)]
    return pd.DataFrame(rows)


def by_kind(results: list[dict], kind: str, claim_start: str = "") -> dict:
    return next(r for r in results if r["kind"] == kind and r["claim"].startswith(claim_start))


def decisions_after(pairs: PairCounts, removed: np.ndarray) -> dict:
    """The real campaign decisions on the counts left after removing `removed` (P, 3) votes."""
    left = PairCounts(pairs.models, pairs.i, pairs.j, pairs.counts - removed)
    return campaign_decisions(left.half_wins(), model_names=left.models, project=False)


def test_a_51_to_49_lead_changes_when_two_of_the_leaders_wins_are_removed():
    result = decision_fragility(count_pairs(votes_of(("A", "B", "model_a", 51), ("A", "B", "model_b", 49))))
    leads = by_kind(result, "top_model")
    assert leads["claim"] == "A leads" and leads["holds"]
    assert leads["votes_to_change"] == 2 and leads["confirmed"]
    assert leads["removed"] == [
        {"model_i": "A", "model_j": "B", "outcome": "A won", "votes": 2, "text": "2 votes A won against B"}
    ]
    assert leads["approximate"] in (2, 3)  # the first-order estimate, before refits adjust it
    assert leads["share"] == pytest.approx(0.02)
    assert "2 of the 100 counted votes" in leads["explain"]


def test_ties_move_nothing_between_two_models_and_are_never_chosen():
    result = decision_fragility(
        count_pairs(votes_of(("A", "B", "model_a", 30), ("A", "B", "model_b", 25), ("A", "B", "tie", 40)))
    )
    leads = by_kind(result, "top_model")
    assert leads["votes_to_change"] == 5
    assert [r["outcome"] for r in leads["removed"]] == ["A won"]


def test_the_certified_top_model_needs_exactly_the_brute_force_minimum_of_removals():
    pairs = count_pairs(votes_of(("A", "B", "model_a", 70), ("A", "B", "model_b", 30), ("A", "B", "tie", 6)))
    assert decisions_after(pairs, np.zeros((1, 3)))["top_model"]["certified"]
    certified = by_kind(decision_fragility(pairs), "top_model_certified")
    assert certified["holds"] and certified["confirmed"]
    limit = certified["votes_to_change"]
    brute = min(
        a + b + t
        for a, b, t in itertools.product(range(71), range(31), range(7))
        if a + b + t <= limit
        and not decisions_after(pairs, np.array([[a, b, t]], dtype=float))["top_model"]["certified"]
    )
    assert certified["votes_to_change"] == brute


def test_an_open_decision_reports_the_removals_that_would_settle_it():
    pairs = count_pairs(votes_of(("A", "B", "model_a", 55), ("A", "B", "model_b", 45)))
    settled = by_kind(decision_fragility(pairs), "neighbour_settled")
    assert not settled["holds"] and settled["confirmed"]
    n = settled["votes_to_change"]
    assert [r["outcome"] for r in settled["removed"]] == ["B won"]
    assert decisions_after(pairs, np.array([[0, n, 0]], dtype=float))["neighbours"][0]["settled"]
    assert not decisions_after(pairs, np.array([[0, n - 1, 0]], dtype=float))["neighbours"][0]["settled"]


@pytest.mark.filterwarnings("ignore:Bradley-Terry fit")  # some removals leave a model without a loss
def test_three_models_top_model_matches_an_exhaustive_search():
    pairs = count_pairs(
        votes_of(
            ("A", "B", "model_a", 5),
            ("A", "B", "model_b", 3),
            ("A", "C", "model_a", 4),
            ("A", "C", "model_b", 2),
            ("B", "C", "model_a", 3),
            ("B", "C", "model_b", 3),
        )
    )
    leads = by_kind(decision_fragility(pairs), "top_model")
    decisive = [(p, o) for p in range(len(pairs.i)) for o in (0, 1) if pairs.counts[p, o] > 0]
    best = None
    for amounts in itertools.product(*(range(int(pairs.counts[p, o]) + 1) for p, o in decisive)):
        if best is not None and sum(amounts) >= best:
            continue
        removed = np.zeros_like(pairs.counts)
        for (p, o), n in zip(decisive, amounts, strict=True):
            removed[p, o] = n
        left = decisions_after(pairs, removed)
        theta = np.array(left["theta"])
        if not theta[0] - np.delete(theta, 0).max() > 1e-9:
            best = sum(amounts)
    assert leads["votes_to_change"] == best


def test_every_decision_the_dashboard_shows_gets_a_number():
    pairs = count_pairs(
        votes_of(
            ("A", "B", "model_a", 80),
            ("A", "B", "model_b", 20),
            ("A", "C", "model_a", 70),
            ("A", "C", "model_b", 30),
            ("B", "C", "model_a", 60),
            ("B", "C", "model_b", 40),
        )
    )
    result = decision_fragility(pairs)
    kinds = [r["kind"] for r in result]
    assert kinds == ["top_model", "top_model_certified", "neighbour_settled", "neighbour_settled", *["pair_order"] * 3]
    assert all(r["confirmed"] and r["votes_to_change"] >= 1 for r in result)
    # the confirmation is a real refit: removing the reported votes changes what campaign_decisions says
    for r in result:
        removed = np.zeros_like(pairs.counts)
        for row in r["removed"]:
            p = next(
                n
                for n in range(len(pairs.i))
                if pairs.models[pairs.i[n]] == row["model_i"] and pairs.models[pairs.j[n]] == row["model_j"]
            )
            o = 2 if row["outcome"] == "tie" else (0 if row["outcome"] == f"{row['model_i']} won" else 1)
            removed[p, o] += row["votes"]
        after = decisions_after(pairs, removed)
        if r["kind"] == "top_model_certified":
            assert after["top_model"]["certified"] != r["holds"]


def test_no_votes_no_decisions():
    empty = PairCounts(["A", "B"], np.array([0]), np.array([1]), np.zeros((1, 3)))
    assert decision_fragility(empty) == []
