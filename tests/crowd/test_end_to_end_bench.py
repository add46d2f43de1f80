"""bench/end_to_end.py's scoring of the platform's verdict against the truth (the bench itself runs for an hour)."""

from __future__ import annotations

import importlib

import pytest

e2e = importlib.import_module("bench.end_to_end")
TRUTH = {"a": 0.9, "b": 0.5, "c": 0.1}


def test_an_order_that_matches_the_truth_has_every_pair_in_order_and_spearman_one():
    assert e2e.pairs_in_order(["a", "b", "c"], TRUTH) == (3, 3)
    assert e2e.spearman(["a", "b", "c"], TRUTH) == pytest.approx(1.0)


def test_a_reversed_order_has_no_pair_in_order_and_spearman_minus_one():
    assert e2e.pairs_in_order(["c", "b", "a"], TRUTH) == (0, 3)
    assert e2e.spearman(["c", "b", "a"], TRUTH) == pytest.approx(-1.0)


def test_pairs_the_truth_cannot_tell_apart_are_not_counted():
    assert e2e.pairs_in_order(["b", "a", "c"], {"a": 0.5, "b": 0.5, "c": 0.1}) == (2, 2)


def test_flags_are_counted_by_the_kind_in_each_participant_id():
    raters = [
        {"participant": "sim-careful-0", "flagged": False},
        {"participant": "sim-casual-1", "flagged": True},
        {"participant": "sim-random-2", "flagged": True},
        {"participant": "sim-fast-3", "flagged": True},
        {"participant": "sim-always_left-4", "flagged": False},
    ]
    assert e2e.flag_counts(raters) == {
        "raters": 5,
        "flagged": 3,
        "bad": 3,
        "bad_flagged": 2,
        "honest": 2,
        "honest_flagged": 1,
    }
