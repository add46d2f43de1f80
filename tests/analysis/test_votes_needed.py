"""Votes still needed: the open-estimate correction, and calibration against whole simulated campaigns."""

import numpy as np
import pytest

from analysis.confidence_sequences import one_sided_radius
from analysis.decisions import campaign_decisions, top_rule_settings
from analysis.simulate import simulate_campaign
from analysis.votes_needed import difference_given_open

SITE_RULE = "rebalanced_ties_rho8"  # evalsite.dashboards.results.CAMPAIGN_TOP_RULE (these tests run without Django)
SITE_RHO = top_rule_settings(SITE_RULE)["rho"]


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


def test_without_ties_the_tie_variance_projection_is_the_fisher_one():
    rng = np.random.default_rng(3)
    run = simulate_campaign(np.array([0.0, -0.4, -1.0]), rng, policy="uniform", keep_looks=True, tie_rate=0.0)
    votes, wins, theta = run.looks[len(run.looks) // 2]
    evidence = np.zeros(3)
    for policy in ("uniform", "active"):
        fisher = campaign_decisions(wins, theta=theta, policy=policy, top_evidence=evidence)["top_model"]
        tied = campaign_decisions(wins, theta=theta, policy=policy, top_evidence=evidence, ties=np.zeros((3, 3)))
        assert tied["top_model"]["votes_still_needed"] == fisher["votes_still_needed"]


def test_votes_still_needed_of_the_site_rule_is_calibrated_under_uniform_pairs():
    """The site's rule (rebalanced_ties_rho8): estimated at the look nearest half the stopping time, with the rule's
    e-values and its variance from the observed ties (10% ties), against the votes it then took. The Fisher
    variance alone over-states the votes needed (here 1.06 against 1.27; the bench, rebalanced_ties: 1.40 at half
    for the 4-model case)."""
    strengths = np.array([0.0, -0.42, -1.62, -2.82])
    rng = np.random.default_rng(11)
    ratios, fisher_ratios = [], []
    for _ in range(30):
        run = simulate_campaign(strengths, rng, policy="uniform", rule=SITE_RULE, keep_looks=True)
        at = min(range(len(run.looks)), key=lambda n: abs(run.looks[n][0] - run.certified_at / 2))
        votes, wins, theta = run.looks[at]
        if votes >= run.certified_at or votes < 12:
            continue
        kwargs = {
            "theta": theta,
            "policy": "uniform",
            "min_votes_per_pair": 2,
            "top_evidence": run.top_evidence[at],
            "top_rho": SITE_RHO,
        }
        needed = campaign_decisions(wins, ties=run.ties_at_looks[at], **kwargs)["top_model"]["votes_still_needed"]
        fisher = campaign_decisions(wins, **kwargs)["top_model"]["votes_still_needed"]
        ratios.append(np.inf if needed is None else needed / (run.certified_at - votes))
        fisher_ratios.append(np.inf if fisher is None else fisher / (run.certified_at - votes))
    assert len(ratios) >= 25
    assert 0.75 <= np.median(ratios) <= 1.33
    assert np.median(ratios) < np.median(fisher_ratios)


def test_votes_still_needed_of_the_site_rule_is_calibrated_under_the_sites_engine():
    """The same under the engine as the site runs it (focused by the stateless evidence, steer_by_rule=False):
    30 campaigns of case 4, median est/actual at half 0.82 (0.86 with rebalanced_ties, the prior precision 20;
    the bench, 50 campaigns of that rule: 0.95)."""
    strengths = np.array([0.0, -0.42, -1.62, -2.82])
    rng = np.random.default_rng(12)
    ratios = []
    for _ in range(30):
        run = simulate_campaign(strengths, rng, rule=SITE_RULE, keep_looks=True, steer_by_rule=False)
        at = min(range(len(run.looks)), key=lambda n: abs(run.looks[n][0] - run.certified_at / 2))
        votes, wins, theta = run.looks[at]
        if votes >= run.certified_at or votes < 12:
            continue
        needed = campaign_decisions(
            wins,
            theta=theta,
            min_votes_per_pair=2,
            top_evidence=run.top_evidence[at],
            ties=run.ties_at_looks[at],
            top_rho=SITE_RHO,
        )["top_model"]["votes_still_needed"]
        ratios.append(np.inf if needed is None else needed / (run.certified_at - votes))
    assert len(ratios) >= 25
    assert 0.7 <= np.median(ratios) <= 1.4
