"""Campaign decisions: what a campaign can claim now (is the top model certain? which neighbours in the
ranking are settled? how many more votes?), in numbers and in plain words for the dashboard.

A campaign's dashboard asks these questions after every vote. Every claim here is made on the
anytime-valid boundary of analysis/confidence_sequences.py, so its error rate holds although the engine
(analysis/pair_choice.py) chose the pairs adaptively and the results are checked after every vote.
The votes still needed come from analysis/votes_needed.py.
May import numpy and analysis.bradley_terry, confidence_sequences, pair_choice and votes_needed.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.bradley_terry import (
    ELO_PER_NAT,
    bt_covariance,
    bt_covariance_observed_ties,
    bt_mle,
    check_wins,
    difference_information,
)
from analysis.confidence_sequences import (
    DEFAULT_ALPHA,
    MIXTURE_PRECISION,
    TopModelEvidence,
    check_alpha,
    confidence_radius,
    family_alphas,
    log_evidence,
    one_sided_radius,
)
from analysis.pair_choice import DEFAULT_EXPLORATION, check_policy
from analysis.votes_needed import project_votes_needed

TOP_RULES = ("bonferroni", "rebalanced", "rebalanced_ties", "rebalanced_ties_rho8")  # how "top model certified"
#   is decided: the stateless split over rivals; replay_top_evidence; the same with each vote's variance from the
#   observed ties; the same with the mixture's prior precision 8 instead of 20 (a prior sd of 0.35 nats for the
#   leader's gap to its closest rival instead of 0.22; docs/adaptive-campaigns.md, "The mixture's prior")
TOP_EVIDENCE_LOOK_EVERY = 25  # the rebalanced rules look at every 25th vote of the replayed history
# the rules kept across looks: (each vote's variance from the observed ties, the mixture's prior precision rho)
_KEPT_RULES = {
    "rebalanced": (False, MIXTURE_PRECISION),
    "rebalanced_ties": (True, MIXTURE_PRECISION),
    "rebalanced_ties_rho8": (True, 8.0),
}
KEPT_RULES = tuple(_KEPT_RULES)  # the rules of TOP_RULES that keep an e-process across looks (not 'bonferroni')


def top_rule_settings(rule: str) -> dict:
    """{'tie_variance': bool, 'rho': float} of a rule kept across looks (TopEvidenceReplay's arguments)."""
    if rule not in _KEPT_RULES:
        raise ValueError(f"a rule kept across looks is one of {KEPT_RULES}, got {rule!r}")
    tie_variance, rho = _KEPT_RULES[rule]
    return {"tie_variance": tie_variance, "rho": rho}


def campaign_decisions(
    wins: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    *,
    theta: np.ndarray | None = None,
    model_names: list[str] | None = None,
    project: bool = True,
    policy: str = "active",
    allowed: np.ndarray | None = None,
    min_votes_per_pair: int = 0,
    target_votes_per_pair: int | None = None,
    exploration: float | None = None,
    top_evidence: np.ndarray | None = None,
    ties: np.ndarray | None = None,
    top_rho: float = MIXTURE_PRECISION,
) -> dict:
    """What a campaign can claim now, with error rates that hold under adaptive sampling and repeated looks.

    wins: (K, K) win counts (ties as 0.5 / 0.5). theta: a recent BT fit to reuse (else bt_mle(wins)).
    project: also estimate votes still needed for each open decision, assuming the engine keeps choosing
    pairs with `policy` ('active' or 'uniform'; allowed / target / exploration as given to
    choose_model_pair) and the current estimates are the truth.
    Returns a JSON-friendly dict:
      votes, alpha, theta, order (model indices, best first),
      top_model: {model, certified, confidence, level, closest_rival, rivals [{model, difference,
        lower_bound, p_value}], votes, votes_still_needed, explain}
      neighbours: [{rank, higher, lower, settled, difference, lower_bound, confidence, votes_still_needed,
        explain}]  (lower_bound: of the difference, at the level of the whole ranking)
      intervals: {'lower', 'upper'}: (K, K) anytime-valid (1 - alpha) interval of theta_i - theta_j per pair
    top_evidence: (K,) log e-values against "model b is the best" from a TopModelEvidence kept across the
    campaign's looks (analysis/confidence_sequences.py): the top model is then certified when every other
    model's reaches log(1 / alpha), no split over rivals. None: the stateless rule, each rival at
    alpha / (K-1).
    ties: (K, K) symmetric tie counts ("both bad" included) when top_evidence comes from the rule that takes
    each vote's variance from the observed ties ('rebalanced_ties'): the votes still needed for the top model
    are then projected with that variance too (analysis.votes_needed). Ignored without top_evidence.
    top_rho: the prior precision of the mixtures behind top_evidence (top_rule_settings(rule)["rho"]), for the
    projection of the votes still needed. Ignored without top_evidence.
    """
    wins = check_wins(wins)
    check_alpha(alpha)
    check_policy(policy)
    k = wins.shape[0]
    names = _names(model_names, k)
    theta = bt_mle(wins) if theta is None else np.asarray(theta, dtype=float)
    if theta.shape != (k,):
        raise ValueError(f"theta must have shape ({k},), got {theta.shape}")
    info = difference_information(bt_covariance(wins, theta))
    diff = theta[:, None] - theta[None, :]
    votes = float(wins.sum())
    order = [int(i) for i in np.argsort(-theta, kind="stable")]
    top = top_model_decision(diff, info, alpha, int(np.argmax(theta)), names, votes, top_evidence=top_evidence)
    neighbours = neighbour_decisions(diff, info, alpha, order, names)
    if project:
        needed_top, needed_pairs = project_votes_needed(
            wins,
            theta,
            policy=policy,
            allowed=allowed,
            min_votes_per_pair=min_votes_per_pair,
            target_votes_per_pair=target_votes_per_pair,
            exploration=DEFAULT_EXPLORATION if exploration is None else exploration,
            alpha=alpha,
            alpha_top=None if top_evidence is None else alpha,
            ties=None if top_evidence is None else ties,
            top_evidence=top_evidence,
            top_rho=top_rho,
        )
        _fill_votes_still_needed([top, *neighbours], [needed_top, *needed_pairs])
    for decision in [top, *neighbours]:
        decision["explain"] = explain(decision)
    return {
        "votes": votes,
        "alpha": alpha,
        "theta": theta.tolist(),
        "order": order,
        "top_model": top,
        "neighbours": neighbours,
        "intervals": anytime_intervals(diff, info, alpha),
        "projected": project,
    }


def top_model_decision(
    diff: np.ndarray,
    info: np.ndarray,
    alpha: float,
    leader: int,
    names: list[str],
    votes: float,
    *,
    top_evidence: np.ndarray | None = None,
) -> dict:
    """The claim "the leader is the best": it beats every other model, one-sided at alpha / (K-1); or, with
    top_evidence ((K,) log e-values against "b is the best", kept across looks), every rival's e-value
    reaches 1 / alpha.

    diff: (K, K) theta_i - theta_j; info: (K, K) 1 / Var of those differences.
    """
    k = len(diff)
    alpha_top, _ = family_alphas(k, alpha)
    rivals = [j for j in range(k) if j != leader]
    stateless = log_evidence(diff[leader, rivals], info[leader, rivals])
    p_bonferroni = min(1.0, (k - 1) * float(np.exp(-stateless.min())))  # Bonferroni over the rivals
    if top_evidence is None:
        evidence, split = stateless, k - 1
    else:
        evidence = np.asarray(top_evidence, dtype=float)[rivals]
        split = 1  # one e-process per rival's "b is the best", each at alpha
    p_top = min(1.0, split * float(np.exp(-evidence.min())))
    lower = diff[leader, rivals] - one_sided_radius(info[leader, rivals], alpha_top)
    closest = rivals[int(np.argmin(evidence))]
    return {
        "kind": "top_model",
        "rule": TOP_RULES[0] if top_evidence is None else TOP_RULES[1],  # (callers name the variant they replayed)
        "model": leader,
        "model_name": names[leader],
        "certified": bool(p_top <= alpha),
        "confidence": 1.0 - p_top,
        "level": 1.0 - alpha,
        "closest_rival": closest,
        "closest_rival_name": names[closest],
        "rivals": [
            {
                "model": j,
                "difference": float(diff[leader, j]),
                "lower_bound": float(lo),
                "p_value": float(min(1.0, split * math.exp(-ev))),
            }
            for j, lo, ev in zip(rivals, lower, evidence, strict=True)
        ],
        "n_models": k,
        "votes": votes,
        "votes_still_needed": 0 if p_top <= alpha else None,
        # the stateless rule on the same votes, for comparison (the same as above when rule is bonferroni)
        "bonferroni": {"certified": bool(p_bonferroni <= alpha), "confidence": 1.0 - p_bonferroni},
    }


def replay_top_evidence(
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    k: int,
    *,
    look_every: int = TOP_EVIDENCE_LOOK_EVERY,
    tie_variance: bool = False,
    rho: float = MIXTURE_PRECISION,
) -> np.ndarray:
    """(K,) log e-values against "model m is the best" (TopModelEvidence), from a campaign's votes replayed
    in the order they were cast: a pure function of that ordered history.

    a, b: (N,) model indices of each vote, in order; score: (N,) score of a (1 win, 0.5 tie, 0 loss).
    The tracker looks after every `look_every`-th vote (look points fixed in advance by the vote count,
    so they cannot depend on what the votes say), refitting BT with a warm start; the value returned is
    the e-process at the last vote, which is valid between looks too. The top model is certified when
    every other model's value reaches log(1 / alpha) (campaign_decisions(..., top_evidence=...)).
    tie_variance: each vote's variance from the observed ties (bt_covariance_observed_ties; rule
    "rebalanced_ties"), else the Fisher variance p(1-p) (rule "rebalanced"). rho: the mixtures' prior precision
    (top_rule_settings gives both for a rule by name).
    """
    return TopEvidenceReplay(k, look_every=look_every, tie_variance=tie_variance, rho=rho).run(a, b, score)[0]


def top_evidence_at_looks(
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    k: int,
    *,
    look_every: int = TOP_EVIDENCE_LOOK_EVERY,
    tie_variance: bool = False,
    rho: float = MIXTURE_PRECISION,
) -> np.ndarray:
    """(L, K) log e-values of replay_top_evidence at each of the L = N // look_every look points."""
    replay = TopEvidenceReplay(k, look_every=look_every, tie_variance=tie_variance, rho=rho)
    at_looks = replay.run(a, b, score)[1]
    return np.array(at_looks).reshape(len(at_looks), k)


class TopEvidenceReplay:
    """The replay of replay_top_evidence, resumable: it keeps its state after the last look, so a caller that
    stored it can feed the same history grown by new votes and get exactly what a full replay gives."""

    def __init__(
        self,
        k: int,
        *,
        look_every: int = TOP_EVIDENCE_LOOK_EVERY,
        tie_variance: bool = False,
        rho: float = MIXTURE_PRECISION,
    ):
        if look_every < 1:
            raise ValueError(f"look_every must be >= 1, got {look_every}")
        self.k, self.look_every, self.tie_variance = k, look_every, tie_variance
        self.tracker = TopModelEvidence(k, rho=rho)
        self.wins = np.zeros((k, k))  # half wins of the votes up to the last look
        self.ties = np.zeros((k, k))  # ties among them (symmetric)
        self.theta: np.ndarray | None = None  # the fit at the last look (the next fit's warm start)
        self.looked = 0  # votes up to the last look: a multiple of look_every
        self.at_last_look = np.zeros(k)  # log e-values at the last look (no votes: every e-value is 1)

    def run(self, a, b, score) -> tuple[np.ndarray, list[np.ndarray]]:
        """Feed the whole ordered history (its first `looked` votes must be those fed before): returns the
        (K,) log e-values at its last vote and the (K,) values at each look it passed now."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        score = np.asarray(score, dtype=float)
        if not (a.shape == b.shape == score.shape) or a.ndim != 1:
            raise ValueError("a, b and score must be 1-d arrays of the same length")
        if len(a) < self.looked:
            raise ValueError(f"the history has {len(a)} votes, fewer than the {self.looked} already replayed")
        new = slice(self.looked, len(a))
        if len(a[new]) and (min(a[new].min(), b[new].min()) < 0 or max(a[new].max(), b[new].max()) >= self.k):
            raise ValueError(f"model indices must be distinct and in [0, {self.k})")
        if np.any(a[new] == b[new]):
            raise ValueError(f"model indices must be distinct and in [0, {self.k})")
        if np.any((score[new] < 0) | (score[new] > 1)):
            raise ValueError("scores must be in [0, 1]")
        at_looks = []
        while self.looked + self.look_every <= len(a):
            block = slice(self.looked, self.looked + self.look_every)
            self.theta, diff, info = self._add(self.wins, self.ties, a[block], b[block], score[block])
            self.at_last_look = self.tracker.look(diff, info, self.theta)
            self.looked += self.look_every
            at_looks.append(self.at_last_look)
        if self.looked == len(a):
            return self.at_last_look, at_looks
        rest = slice(self.looked, len(a))  # votes since the last look: fitted on copies, not kept
        _, diff, info = self._add(self.wins.copy(), self.ties.copy(), a[rest], b[rest], score[rest])
        return self.tracker.log_e_values(diff, info), at_looks

    def _add(self, wins, ties, a, b, score):
        """Add votes to wins and ties (in place) and fit: (theta, differences, informations)."""
        np.add.at(wins, (a, b), score)
        np.add.at(wins, (b, a), 1.0 - score)
        theta = bt_mle(wins, theta0=self.theta)
        if self.tie_variance:
            tied = score == 0.5
            np.add.at(ties, (a[tied], b[tied]), 1.0)
            np.add.at(ties, (b[tied], a[tied]), 1.0)
            cov = bt_covariance_observed_ties(wins, ties, theta)
        else:
            cov = bt_covariance(wins, theta)
        return theta, theta[:, None] - theta[None, :], difference_information(cov)


def neighbour_decisions(diff: np.ndarray, info: np.ndarray, alpha: float, order: list[int], names: list[str]) -> list:
    """The claims "higher ranks above lower" for neighbours in `order`, one-sided at alpha / (K(K-1)/2)."""
    k = len(diff)
    _, alpha_order = family_alphas(k, alpha)
    hi_all, lo_all = np.array(order[:-1]), np.array(order[1:])
    p_order = np.minimum(1.0, (k * (k - 1) / 2) * np.exp(-log_evidence(diff[hi_all, lo_all], info[hi_all, lo_all])))
    lower_order = diff[hi_all, lo_all] - one_sided_radius(info[hi_all, lo_all], alpha_order)
    neighbours = []
    for rank, (hi, lo, p, lower_bound) in enumerate(
        zip(order[:-1], order[1:], p_order.tolist(), lower_order.tolist(), strict=True), start=1
    ):
        neighbours.append(
            {
                "kind": "neighbours",
                "rank": rank,
                "higher": hi,
                "lower": lo,
                "higher_name": names[hi],
                "lower_name": names[lo],
                "settled": bool(p <= alpha),
                "difference": float(diff[hi, lo]),
                "lower_bound": lower_bound,
                "confidence": 1.0 - p,
                "level": 1.0 - alpha,
                "votes_still_needed": 0 if p <= alpha else None,
            }
        )
    return neighbours


def anytime_intervals(diff: np.ndarray, info: np.ndarray, alpha: float) -> dict:
    """{'lower', 'upper'}: (K, K) lists, the anytime-valid (1 - alpha) interval of every difference."""
    radius = confidence_radius(info, alpha)
    np.fill_diagonal(radius, 0.0)
    return {"lower": (diff - radius).tolist(), "upper": (diff + radius).tolist()}


def _fill_votes_still_needed(decisions: list[dict], needed: list[int | None]) -> None:
    for decision, votes in zip(decisions, needed, strict=True):
        made = decision["certified"] if decision["kind"] == "top_model" else decision["settled"]
        if not made:  # a claim already made needs no more votes (it keeps 0)
            decision["votes_still_needed"] = votes


def _names(model_names: list[str] | None, k: int) -> list[str]:
    if model_names is None:
        return [f"model {i}" for i in range(k)]
    if len(model_names) != k:
        raise ValueError(f"model_names has {len(model_names)} names for {k} models")
    return [str(n) for n in model_names]


# --------------------------------------------------------------------------------------------------
# Plain words for the dashboard
# --------------------------------------------------------------------------------------------------


def _win_share(difference: float) -> str:
    """A score difference as the share of head-to-head votes the first model would win."""
    return f"{100.0 / (1.0 + math.exp(-difference)):.0f}%"


def _votes_phrase(needed) -> str:
    if needed is None:
        return "The votes still needed cannot be estimated yet (the current gap is too small to project)."
    return f"At the current rate, about {int(needed):,} more votes are likely needed."


def explain(decision: dict) -> str:
    """One plain-words paragraph for a decision from campaign_decisions (top_model or a neighbours item)."""
    level = f"{100 * decision['level']:.0f}%"
    guarantee = (
        "This guarantee holds although the engine chose which pairs to show and the results are checked "
        "after every vote."
    )
    if decision["kind"] == "top_model":
        name, rival = decision["model_name"], decision["closest_rival_name"]
        if decision["votes"] == 0:
            return f"No votes yet: all {decision['n_models']} models are level."
        by_rival = {r["model"]: r for r in decision["rivals"]}
        r = by_rival[decision["closest_rival"]]
        elo = ELO_PER_NAT * r["difference"]
        if decision["certified"]:
            return (
                f"{name} is the best of the {decision['n_models']} models, with {level} confidence: it beats "
                f"every other model. Its closest rival, {rival}, is {elo:.0f} score points behind; {name} "
                f"would win about {_win_share(r['difference'])} of their votes (at least "
                f"{_win_share(max(r['lower_bound'], 0.0))}). {guarantee}"
            )
        return (
            f"Not yet certain which model is best. {name} leads, but {rival} could still be better: "
            f"{name} is {elo:.0f} score points ahead (it would win about {_win_share(r['difference'])} of "
            f"their votes), which is not yet enough evidence for {level} confidence "
            f"(currently {100 * max(decision['confidence'], 0.0):.0f}%). "
            f"{_votes_phrase(decision['votes_still_needed'])}"
        )
    if decision["kind"] == "neighbours":
        hi, lo = decision["higher_name"], decision["lower_name"]
        elo = ELO_PER_NAT * decision["difference"]
        if decision["settled"]:
            return (
                f"{hi} ranks above {lo} (places {decision['rank']} and {decision['rank'] + 1}), with {level} "
                f"confidence for the whole ranking at once: {elo:.0f} score points ahead, winning about "
                f"{_win_share(decision['difference'])} of their votes. {guarantee}"
            )
        return (
            f"The order of {hi} and {lo} (places {decision['rank']} and {decision['rank'] + 1}) is not settled: "
            f"{hi} is {elo:.0f} score points ahead, not yet enough for {level} confidence. "
            f"{_votes_phrase(decision['votes_still_needed'])}"
        )
    raise ValueError(f"unknown decision kind {decision.get('kind')!r}")
