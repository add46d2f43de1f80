"""Fragility: the fewest votes whose removal changes a decision, on constructed votes with a known answer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis.bradley_terry import bt_covariance_observed_ties, bt_mle, difference_information
from analysis.confidence_sequences import log_evidence
from analysis.decisions import campaign_decisions, replay_top_evidence
from analysis.fragility import decision_fragility, replayed_top_fragility
from analysis.votes import PairCounts, count_pairs
from tests.support import ordered_votes


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


# The top model certified by the site's rule (rebalanced_ties), replayed over the votes in their order


def _replayed_certified(a, b, score, k: int, leader: int) -> bool:
    """The site rule's certificate of `leader`, computed without analysis.fragility: the replayed e-values."""
    evidence = replay_top_evidence(a, b, score, k, tie_variance=True)
    return bool(np.delete(evidence, leader).min() >= np.log(1 / 0.05))


def _without(a, b, score, removed: list[dict], names: list[str]):
    """The ordered votes without the most recent `votes` of each removed kind (as the report describes them)."""
    keep = np.ones(len(a), dtype=bool)
    for r in removed:
        i, j = names.index(r["model_i"]), names.index(r["model_j"])
        first_score = 0.5 if r["outcome"] == "tie" else (1.0 if r["outcome"] == f"{r['model_i']} won" else 0.0)
        same = np.flatnonzero(
            ((a == i) & (b == j) & (score == first_score)) | ((a == j) & (b == i) & (score == 1 - first_score))
        )
        keep[same[len(same) - r["votes"] :]] = False
    return a[keep], b[keep], score[keep]


def test_the_site_rule_between_two_models_needs_exactly_the_brute_force_minimum_of_removals():
    """With two models the rule's e-value is the mixture evidence of today's counts (the wealth never moves), so
    the answer does not depend on which votes of a kind go: a brute force over every removal of wins, losses
    and ties gives the known minimum."""
    a, b, score = ordered_votes(np.array([0.0, -0.5]), 240, seed=1)
    names = ["A", "B"]
    entry = replayed_top_fragility(a, b, score, names)
    assert entry["rule"] == "rebalanced_ties" and entry["holds"] and entry["confirmed"]
    first = np.where(a < b, score, 1 - score)  # score of A
    won, lost, tied = (first == 1).sum(), (first == 0).sum(), (first == 0.5).sum()

    def certified(w: int, l_: int, t: int) -> bool:
        wins = np.array([[0.0, won - w + 0.5 * (tied - t)], [lost - l_ + 0.5 * (tied - t), 0.0]])
        ties = np.array([[0.0, tied - t], [tied - t, 0.0]])
        theta = bt_mle(wins)
        info = difference_information(bt_covariance_observed_ties(wins, ties, theta))[0, 1]
        return bool(log_evidence(theta[0] - theta[1], info) >= np.log(1 / 0.05))

    assert certified(0, 0, 0)
    brute = min(
        w + l_ + t
        for w, l_, t in itertools.product(range(60), range(20), range(20))
        if w <= won and l_ <= lost and t <= tied and not certified(w, l_, t)
    )
    assert entry["votes_to_change"] == brute
    assert not _replayed_certified(*_without(a, b, score, entry["removed"], names), 2, 0)


def test_the_site_rule_certificate_among_three_models_is_confirmed_by_replaying_without_the_votes():
    a, b, score = ordered_votes(np.array([0.0, -0.3, -1.0]), 600, seed=2)
    names = ["A", "B", "C"]
    assert _replayed_certified(a, b, score, 3, 0)
    entry = replayed_top_fragility(a, b, score, names)
    assert entry["holds"] and entry["confirmed"] and entry["claim"] == "A is certified best"
    assert 0 < entry["votes_to_change"] < 60
    assert sum(r["votes"] for r in entry["removed"]) == entry["votes_to_change"]
    assert not _replayed_certified(*_without(a, b, score, entry["removed"], names), 3, 0)
    for r in entry["removed"]:  # one vote fewer of any removed kind keeps the certificate
        fewer = [{**x, "votes": x["votes"] - (x is r)} for x in entry["removed"]]
        assert _replayed_certified(*_without(a, b, score, fewer, names), 3, 0)


def test_an_open_site_rule_decision_is_certified_by_the_reported_removals():
    a, b, score = ordered_votes(np.array([0.0, -0.2, -1.0]), 400, seed=4)
    names = ["A", "B", "C"]
    assert not _replayed_certified(a, b, score, 3, 0)
    entry = replayed_top_fragility(a, b, score, names)
    assert not entry["holds"] and entry["confirmed"] and entry["claim"] == "A is not yet certified best"
    assert _replayed_certified(*_without(a, b, score, entry["removed"], names), 3, 0)


def test_decision_fragility_reports_the_site_rule_for_the_top_model_and_keeps_the_rest():
    a, b, score = ordered_votes(np.array([0.0, -0.3, -1.0]), 600, seed=2)
    names = ["A", "B", "C"]
    frame = pd.DataFrame(
        {
            "model_a": np.array(names)[a],
            "model_b": np.array(names)[b],
            "winner": np.where(score == 1, "model_a", np.where(score == 0, "model_b", "tie")),
        }
    )
    pairs = count_pairs(frame)
    stateless = decision_fragility(pairs)
    replayed = decision_fragility(pairs, top_rule="rebalanced_ties", ordered=(a, b, score))
    assert [r["kind"] for r in replayed] == [r["kind"] for r in stateless]
    top = by_kind(replayed, "top_model_certified")
    assert top == replayed_top_fragility(a, b, score, names)
    assert [r for r in replayed if r["kind"] != "top_model_certified"] == [
        r for r in stateless if r["kind"] != "top_model_certified"
    ]
    with pytest.raises(ValueError, match="order"):
        decision_fragility(pairs, top_rule="rebalanced_ties")
