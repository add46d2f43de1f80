"""Votes still needed: the open-estimate correction, and calibration against whole simulated campaigns."""

import numpy as np
import pytest

from analysis.confidence_sequences import one_sided_radius
from analysis.decisions import campaign_decisions
from analysis.simulate import simulate_campaign
from analysis.votes_needed import difference_given_open


def test_estimate_of_an_open_difference_moves_up_only_near_the_boundary():
    info = np.array([100.0, 100.0])
    edge = float(one_sided_radius(100.0, 0.01))
    far, near = difference_given_open(np.array([edge - 0.5, edge - 0.01]), info, 0.01)
    assert far == pytest.approx(edge - 0.5, abs=1e-3)
    assert edge - 0.01 < near <= edge - 0.01 + 3.0 / 10.0 + 1e-9


def test_votes_still_needed_is_calibrated_at_half_the_campaign():
    """Median of estimated / actual remaining votes, estimated at the look nearest half the stopping time
    (the bench measures 0.95 for the engine and 1.08 for uniform pairs over 200 campaigns)."""
    strengths = np.array([0.0, -0.42, -1.62, -2.82])
    rng = np.random.default_rng(8)
    ratios = []
    for _ in range(30):
        run = simulate_campaign(strengths, rng, keep_looks=True)
        votes, wins, theta = min(run.looks, key=lambda look: abs(look[0] - run.certified_at / 2))
        if votes >= run.certified_at or votes < 12:
            continue
        needed = campaign_decisions(wins, theta=theta, min_votes_per_pair=2)["top_model"]["votes_still_needed"]
        ratios.append(np.inf if needed is None else needed / (run.certified_at - votes))
    assert len(ratios) >= 25
    assert 0.7 <= np.median(ratios) <= 1.4
