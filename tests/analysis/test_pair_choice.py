"""The engine's pair choice: constraints the site relies on, and that it never starves a possible winner."""

import numpy as np
import pytest

from analysis.bradley_terry import bt_covariance, bt_mle
from analysis.decisions import campaign_decisions
from analysis.pair_choice import NoPairAvailable, choose_model_pair, focus_contrasts, leaderboard_separated
from analysis.simulate import simulate_campaign, simulate_vote


def _balanced_wins(k, votes_per_pair, strengths=None):
    """Expected win counts: every pair has votes_per_pair votes split by the BT probability."""
    strengths = np.zeros(k) if strengths is None else np.asarray(strengths, float)
    p = 1 / (1 + np.exp(strengths[None, :] - strengths[:, None]))
    wins = votes_per_pair * p
    np.fill_diagonal(wins, 0.0)
    return wins


def _choose(wins, allowed=None, seed=0, **kw):
    kw.setdefault("min_votes_per_pair", 0)
    kw.setdefault("target_votes_per_pair", None)
    return choose_model_pair(wins, allowed, np.random.default_rng(seed), **kw)


def test_pairs_come_back_ordered_and_never_a_model_with_itself():
    for seed in range(50):
        i, j = _choose(_balanced_wins(5, 4, [0.5, 0.2, 0, -0.2, -0.5]), seed=seed)
        assert 0 <= i < j < 5


def test_coverage_comes_first_fewest_votes_first():
    wins = _balanced_wins(4, 3)
    wins[0, 1] = wins[1, 0] = 0.5  # pair (0, 1) has 1 vote
    wins[2, 3] = wins[3, 2] = 1.0  # pair (2, 3) has 2 votes; the rest 3
    for policy in ("active", "uniform"):
        picks = {_choose(wins, seed=s, min_votes_per_pair=3, policy=policy) for s in range(30)}
        assert picks == {(0, 1)}
    wins[0, 1] = wins[1, 0] = 1.0
    picks = {_choose(wins, seed=s, min_votes_per_pair=3) for s in range(60)}
    assert picks == {(0, 1), (2, 3)}


def test_only_allowed_pairs_are_chosen():
    rng = np.random.default_rng(1)
    strengths = np.linspace(1, -1, 6)
    for seed in range(80):
        allowed = rng.random((6, 6)) < 0.4
        allowed = allowed | allowed.T
        np.fill_diagonal(allowed, False)
        if not allowed.any():
            continue
        wins = _balanced_wins(6, 1 + seed % 7, strengths)
        for policy in ("active", "uniform"):
            i, j = _choose(wins, allowed, seed=seed, policy=policy, min_votes_per_pair=seed % 3)
            assert allowed[i, j]


def test_a_pair_at_its_target_is_never_chosen_and_none_left_is_an_error():
    wins = _balanced_wins(3, 10, [0.3, 0.0, -0.3])
    wins[0, 2], wins[2, 0] = 2.0, 1.0  # (0, 2) has 3 votes, the others 10
    picks = {_choose(wins, seed=s, target_votes_per_pair=10, exploration=0.5) for s in range(40)}
    assert picks == {(0, 2)}
    with pytest.raises(NoPairAvailable):
        _choose(wins, target_votes_per_pair=3)
    with pytest.raises(NoPairAvailable):
        _choose(wins, np.zeros((3, 3), dtype=bool))


def test_the_engine_asks_about_the_leader_and_its_closest_rival():
    wins = _balanced_wins(5, 20, [0.4, 0.3, -0.5, -1.0, -1.5])
    assert _choose(wins, exploration=0.0) == (0, 1)
    # without the direct pair for this rater, the most useful indirect comparison involves one of them
    allowed = ~np.eye(5, dtype=bool)
    allowed[0, 1] = allowed[1, 0] = False
    i, j = _choose(wins, allowed, exploration=0.0)
    assert {i, j} & {0, 1} and (i, j) != (0, 1)


def test_exploration_and_the_uniform_policy_reach_every_pair():
    wins = _balanced_wins(4, 20, [0.4, 0.3, -0.5, -1.0])
    for policy, exploration in (("uniform", 0.0), ("active", 0.5)):
        seen = {_choose(wins, seed=s, policy=policy, exploration=exploration) for s in range(300)}
        assert len(seen) == 6


def test_a_given_fit_gives_the_same_choice_as_fitting_inside():
    wins = _balanced_wins(6, 9, np.linspace(0.6, -0.6, 6))
    theta = bt_mle(wins)
    for seed in range(10):
        assert _choose(wins, seed=seed, theta=theta) == _choose(wins, seed=seed)


def test_a_cached_covariance_gives_the_same_choice_and_a_wrong_shape_is_refused(monkeypatch):
    wins = _balanced_wins(6, 9, np.linspace(0.6, -0.6, 6))
    theta = bt_mle(wins)
    cov = bt_covariance(wins, theta)
    expected = [_choose(wins, seed=seed, theta=theta) for seed in range(10)]

    def not_again(*args, **kwargs):
        raise AssertionError("the covariance was given: it must not be computed again")

    monkeypatch.setattr("analysis.pair_choice.bt_covariance", not_again)
    assert [_choose(wins, seed=seed, theta=theta, cov=cov) for seed in range(10)] == expected
    with pytest.raises(ValueError, match="cov must have shape"):
        _choose(wins, theta=theta, cov=np.eye(3), exploration=0.0)


def test_bad_arguments_are_refused_clearly():
    wins = _balanced_wins(3, 2)
    with pytest.raises(ValueError, match="allowed"):
        _choose(wins, np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="allowed"):
        _choose(wins, np.ones((3, 3), dtype=int))
    with pytest.raises(ValueError, match="policy"):
        _choose(wins, policy="greedy")
    with pytest.raises(ValueError, match="min_votes_per_pair"):
        _choose(wins, min_votes_per_pair=-1)
    with pytest.raises(ValueError, match="target_votes_per_pair"):
        _choose(wins, target_votes_per_pair=0)
    with pytest.raises(ValueError, match="exploration"):
        _choose(wins, exploration=1.5)
    with pytest.raises(ValueError, match="wins"):
        _choose(np.ones((3, 3)))
    with pytest.raises(TypeError, match="Generator"):
        choose_model_pair(wins, None, 0, min_votes_per_pair=0, target_votes_per_pair=None)


def test_after_certification_the_engine_makes_the_leaderboard_show_it():
    # 500 votes on the top pair, 30 on each other pair: certified, but the models at the bottom are
    # measured so loosely that the leaderboard's per-model intervals of the top two still overlap
    wins = _balanced_wins(4, 30, [0.45, 0.0, -0.8, -1.6])
    wins[0, 1], wins[1, 0] = 500 * wins[0, 1] / 30, 500 * wins[1, 0] / 30
    theta = bt_mle(wins)
    cov = bt_covariance(wins, theta)
    assert campaign_decisions(wins, theta=theta, project=False)["top_model"]["certified"]
    assert not leaderboard_separated(theta, cov)
    contrasts, weights = focus_contrasts(theta, cov)
    # the top two models' own intervals, not their difference
    assert contrasts.shape == (2, 4) and set(np.flatnonzero(contrasts.sum(axis=0))) == {0, 1}
    # which the bottom models' votes tighten (the centring ties every score to the mean)
    i, j = _choose(wins, exploration=0.0)
    assert {i, j} & {2, 3}


# --- starvation: a model that could still be the best keeps getting votes ---------------------------

STRENGTHS = np.array([0.0, -0.3, -0.6, -0.9, -1.2])  # model 0 is the best


def _unlucky_start():
    """Coverage votes in which the true best model lost every one of its 8 votes."""
    wins = _balanced_wins(5, 2, STRENGTHS)
    wins[0, 1:], wins[1:, 0] = 0.0, 2.0
    return wins


def _continue_campaign(wins, rng, choose, votes):
    """Run on from `wins`, refitting every 25 votes; returns the pairs and the wins at each look."""
    wins = wins.copy()
    theta, pairs, looks = bt_mle(wins), [], []
    for n in range(votes):
        i, j = choose(wins, theta, rng)
        score = simulate_vote(rng, STRENGTHS, i, j, 0.1)
        wins[i, j] += score
        wins[j, i] += 1 - score
        pairs.append((i, j))
        if (n + 1) % 25 == 0:
            theta = bt_mle(wins, theta0=theta)
            looks.append((n + 1, wins.copy(), theta))
    return pairs, looks


def _engine(exploration):
    def choose(wins, theta, rng):
        return choose_model_pair(
            wins, None, rng, min_votes_per_pair=2, target_votes_per_pair=None, exploration=exploration, theta=theta
        )

    return choose


def _top_two(wins, theta, rng):
    """What the notes warn against: always the current top two."""
    first, second = np.argsort(-theta)[:2]
    return int(min(first, second)), int(max(first, second))


def _best_model_votes(pairs, start, end):
    return sum(0 in pair for pair in pairs[start:end])


def test_the_engine_keeps_asking_about_the_true_best_model_after_an_unlucky_start():
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        pairs, looks = _continue_campaign(_unlucky_start(), rng, _engine(exploration=0.0), 1200)
        # in every 200 votes before a top model is certified (model 0 could still be best), it gets votes
        windows = 0
        for start in range(0, 1200, 200):
            wins, theta = (_unlucky_start(), None) if start == 0 else looks[start // 25 - 1][1:]
            if campaign_decisions(wins, theta=theta, project=False)["top_model"]["certified"]:
                break
            windows += 1
            assert _best_model_votes(pairs, start, start + 200) > 0, (seed, start)
        assert windows >= 2
        top = campaign_decisions(looks[-1][1], theta=looks[-1][2], project=False)["top_model"]
        assert top["model"] == 0  # it climbs back to the top (certified or not yet)


def test_the_starvation_check_catches_a_policy_that_starves_the_best_model():
    rng = np.random.default_rng(100)
    pairs, looks = _continue_campaign(_unlucky_start(), rng, _top_two, 600)
    assert _best_model_votes(pairs, 0, 600) == 0  # the check above would fail for this policy


def test_every_possible_winner_keeps_at_least_half_its_exploration_share():
    """Exploration alone gives each of 5 models 10% * 4/10 = 4% of votes; pooled over campaigns, every
    model whose claim against the leader is still open gets at least 2% of the votes cast meanwhile."""
    rng = np.random.default_rng(9)
    votes_open, votes_for = np.zeros(5), np.zeros(5)
    for _ in range(4):
        run = simulate_campaign(STRENGTHS, rng, keep_looks=True)
        for (n, wins, theta), (n_next, _, _) in zip(run.looks[:-1], run.looks[1:], strict=True):
            top = campaign_decisions(wins, theta=theta, project=False)["top_model"]
            possible = [r["model"] for r in top["rivals"] if r["p_value"] > 0.05] + [top["model"]]
            for model in possible:
                votes_open[model] += n_next - n
                votes_for[model] += sum(model in pair for pair in run.pairs[n:n_next])
    share = votes_for / votes_open
    assert np.all(votes_open > 0)
    assert share.min() >= 0.02, share
