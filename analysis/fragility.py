"""Fragility of each decision the dashboard shows: the smallest number of votes whose removal would change it.

The decisions are those of analysis/decisions.py on one criterion's votes (ties as half a win):
  top_model            "L leads": L has the highest Bradley-Terry strength
  top_model_certified  "L is certified best" (or "not yet certified"): top_model_decision's claim
  neighbour_settled    "hi ranks above lo, settled" (or "not settled"): neighbour_decisions' claim
  pair_order           "i is above j": the sign of every pairwise score difference (neighbours included)

How the number is found (an influence approximation, then refits):
1. Votes of one pair and one outcome (i won, j won, tie) are interchangeable, so the candidates are the
   3 P vote kinds. Each decision has a statistic s that is > 0 exactly when its claim holds: the
   smallest score difference (top_model, pair_order) or the smallest distance of a difference above its
   one-sided anytime boundary (the certified / settled claims, analysis/confidence_sequences.py).
2. Influence of dropping one vote of a kind: the one-step Newton change of the strengths,
   H^-1 grad(loss of that vote), and the Sherman-Morrison change of the differences' variances (the
   vote's information leaves), give the change of s to first order.
3. Greedy: drop the most influential votes first until the first-order s crosses 0; the count of that
   first pass is the `approximate` answer (no refit at all).
4. Confirm: refit without those votes and ask the real decision functions (analysis/decisions.py) whether
   the claim changed. If not, recompute the influences at the refit and drop more; once it changed,
   search the smallest prefix of the removal order that still changes it (refits). That count is
   `votes_to_change`, `confirmed` True. It is an upper bound on the true minimum (the search follows the
   influence order; it does not try every subset); on a pair of models it is the exact minimum.
A decision that no removal within `max_votes` changes is reported with votes_to_change None. A removal that
leaves a model of the claim without votes does not count as a change (its score would be the prior's).

May import numpy and analysis.votes, newton, bradley_terry, confidence_sequences, decisions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis.bradley_terry import (
    bt_covariance,
    bt_covariance_observed_ties,
    bt_mle,
    difference_information,
    sigmoid,
)
from analysis.confidence_sequences import (
    DEFAULT_ALPHA,
    check_alpha,
    family_alphas,
    log_evidence,
    one_sided_radius,
)
from analysis.decisions import (
    TOP_EVIDENCE_LOOK_EVERY,
    TopEvidenceReplay,
    neighbour_decisions,
    top_model_decision,
    top_rule_settings,
)
from analysis.votes import PairCounts

OUTCOME_SCORE = np.array([1.0, 0.0, 0.5])  # score of the pair's first model for: i won, j won, tie
MAX_ROUNDS = 40  # re-linearisations before giving up on a decision
LEVEL = 1e-9  # score differences (nats) this small are a tie: "i above j" does not hold, and level pairs
#   get no order decision


@dataclass
class Decision:
    """One claim and how to evaluate it on any vote counts."""

    kind: str
    claim: str  # in words, as it holds now
    leader: int  # the model the claim is about (top model, higher of a pair)
    rivals: list[int]  # the claim compares leader with each of these: min over them
    level: float | None  # one-sided level of the boundary; None for a plain sign


def decision_fragility(
    pairs: PairCounts,
    alpha: float = DEFAULT_ALPHA,
    *,
    max_votes: int | None = None,
    pair_orders: bool = True,
    top_rule: str = "bonferroni",
    ordered: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    look_every: int = TOP_EVIDENCE_LOOK_EVERY,
) -> list[dict]:
    """For each decision on these vote counts: the votes whose removal would change it.

    pairs: the counted votes of one criterion (analysis.votes.count_pairs). alpha: as campaign_decisions.
    max_votes: stop looking beyond this many removed votes (default: all votes).
    Returns JSON-friendly dicts, one per decision:
      kind, claim, holds (whether the claim holds now), models (names involved),
      approximate (votes to remove by the first-order pass; None when the first order never gets there),
      votes_to_change (confirmed by refitting; None when not found), confirmed (bool),
      share (votes_to_change / counted votes), removed [{model_i, model_j, outcome, votes}] (which votes:
      outcome "i won", "j won" or "tie"), refits (how many refits it took), explain (plain words).
    top_rule: how "top model certified" is decided, as campaign_decisions' caller decides it: 'bonferroni'
    (the stateless rule, from the counts) or 'rebalanced' / 'rebalanced_ties' (the rule kept across looks,
    replayed over `ordered` = (a, b, score), the same votes in the order they were cast, model indices into
    pairs.models, looking every `look_every` votes): its entry is then replayed_top_fragility's.
    """
    check_alpha(alpha)
    counts = np.asarray(pairs.counts, dtype=float)
    total = float(counts.sum())
    k = pairs.n_models
    if k < 2 or total == 0:
        return []
    max_votes = int(total) if max_votes is None else min(int(max_votes), int(total))
    names = list(pairs.models)
    out = []
    if top_rule != "bonferroni" and ordered is None:
        raise ValueError(f"top_rule {top_rule!r} needs the votes in their order (ordered=(a, b, score))")
    for decision in _decisions(pairs, counts, alpha):
        if decision.kind == "top_model_certified" and ordered is not None and top_rule != "bonferroni":
            a, b, score = ordered
            out.append(
                replayed_top_fragility(
                    a, b, score, names, alpha, rule=top_rule, look_every=look_every, max_votes=max_votes
                )
            )
            continue
        out.append(_fragility_of(decision, pairs, counts, alpha, max_votes, names, total))
    return out


def _decisions(pairs: PairCounts, counts: np.ndarray, alpha: float) -> list[Decision]:
    k = pairs.n_models
    names = pairs.models
    theta = bt_mle(pairs.half_wins(counts))
    order = [int(i) for i in np.argsort(-theta, kind="stable")]
    level_top, level_order = family_alphas(k, alpha)
    leader = order[0]
    rivals = [j for j in range(k) if j != leader]
    certified = _claim_holds(Decision("top_model_certified", "", leader, rivals, level_top), pairs, counts, alpha)
    out = []
    if min(theta[leader] - theta[j] for j in rivals) > LEVEL:
        out.append(Decision("top_model", f"{names[leader]} leads", leader, rivals, None))
    out += [
        Decision(
            "top_model_certified",
            f"{names[leader]} is certified best" if certified else f"{names[leader]} is not yet certified best",
            leader,
            rivals,
            level_top,
        ),
    ]
    for hi, lo in zip(order[:-1], order[1:], strict=True):
        settled = _claim_holds(Decision("neighbour_settled", "", hi, [lo], level_order), pairs, counts, alpha)
        verb = "settled" if settled else "not settled"
        out.append(Decision("neighbour_settled", f"{names[hi]} above {names[lo]}: {verb}", hi, [lo], level_order))
    for position, hi in enumerate(order):
        for lo in order[position + 1 :]:
            if theta[hi] - theta[lo] > LEVEL:
                out.append(Decision("pair_order", f"{names[hi]} scores above {names[lo]}", hi, [lo], None))
    return out


def _fit(pairs: PairCounts, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wins = pairs.half_wins(counts)
    theta = bt_mle(wins)
    return theta, bt_covariance(wins, theta)


def _changed(decision: Decision, pairs: PairCounts, counts: np.ndarray, alpha: float, holds: bool) -> bool:
    """Whether removing votes down to `counts` changed the claim. A removal that leaves a model of the claim
    without any vote does not count: its score would be the prior's, not evidence (the claim is gone, not
    reversed)."""
    per_model = np.bincount(pairs.i, counts.sum(axis=1), pairs.n_models) + np.bincount(
        pairs.j, counts.sum(axis=1), pairs.n_models
    )
    if (per_model[[decision.leader, *decision.rivals]] <= 0).any():
        return False
    return _claim_holds(decision, pairs, counts, alpha) != holds


def _claim_holds(decision: Decision, pairs: PairCounts, counts: np.ndarray, alpha: float) -> bool:
    """Whether the claim holds on these counts, asked of the decision functions themselves (a refit)."""
    theta, cov = _fit(pairs, counts)
    diff = theta[:, None] - theta[None, :]
    names = list(pairs.models)
    if decision.kind == "top_model_certified":
        info = difference_information(cov)
        return bool(top_model_decision(diff, info, alpha, decision.leader, names, float(counts.sum()))["certified"])
    if decision.kind == "neighbour_settled":
        info = difference_information(cov)
        return bool(neighbour_decisions(diff, info, alpha, [decision.leader, decision.rivals[0]], names)[0]["settled"])
    return bool(min(diff[decision.leader, j] for j in decision.rivals) > LEVEL)


def _statistic(decision: Decision, diff: np.ndarray, var: np.ndarray) -> np.ndarray:
    """s (...) from differences and their variances (..., R) against each rival: > 0 where the claim holds."""
    if decision.level is None:
        return diff.min(axis=-1) - LEVEL
    with np.errstate(divide="ignore"):
        info = np.where(var > 0, 1.0 / np.maximum(var, 1e-300), 0.0)
    bound = diff - one_sided_radius(info, decision.level)
    return np.maximum(bound, -1e6).min(axis=-1)  # the radius is inf without information


def _first_order(decision: Decision, pairs: PairCounts, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """(s now, change of s (P * 3,) when one vote of each kind is dropped), to first order, at a fresh fit."""
    theta, cov = _fit(pairs, counts)
    k = len(theta)
    i, j = pairs.i, pairs.j
    contrasts = np.zeros((len(decision.rivals), k))  # (R, K) rows e_leader - e_rival
    contrasts[:, decision.leader] = 1.0
    contrasts[np.arange(len(decision.rivals)), decision.rivals] = -1.0
    diff = contrasts @ theta  # (R,)
    var = np.einsum("rk,kl,rl->r", contrasts, cov, contrasts)  # (R,)
    s = float(_statistic(decision, diff, var))
    # per pair p: u_p = e_i - e_j; c^T cov u_p for each rival (R, P); u^T cov u (P,)
    cov_u = cov[:, i] - cov[:, j]  # (K, P)
    c_cov_u = contrasts @ cov_u  # (R, P)
    u_cov_u = cov_u[i, np.arange(len(i))] - cov_u[j, np.arange(len(i))]  # (P,)
    p = sigmoid(theta[i] - theta[j])  # (P,)
    weight = p * (1 - p)  # information of one vote of the pair
    loss_grad = p[:, None] - OUTCOME_SCORE[None, :]  # (P, 3) d loss / d (theta_i - theta_j)
    new_diff = diff[:, None, None] + c_cov_u[:, :, None] * loss_grad[None]  # (R, P, 3)
    denom = np.maximum(1.0 - weight * u_cov_u, 1e-12)
    new_var = var[:, None] + weight * c_cov_u**2 / denom  # (R, P), the same for the 3 outcomes
    new_var = np.broadcast_to(new_var[:, :, None], new_diff.shape)
    s_after = _statistic(decision, np.moveaxis(new_diff, 0, -1), np.moveaxis(new_var, 0, -1))  # (P, 3)
    return s, (s_after - s).ravel()


def _greedy_round(
    s: float, delta: np.ndarray, available: np.ndarray, direction: float, budget: int
) -> tuple[list[int], bool]:
    """Vote kinds to drop (with repetition), most influential first, until the first-order s crosses 0.

    direction: -1 to push s to <= 0 (break a claim that holds), +1 to push it above 0. Returns (kinds,
    whether the first order says s crosses within the budget)."""
    gain = direction * delta
    # breaking a claim needs s <= 0 (a tie breaks "i above j"); making one needs s > 0
    gap = abs(s) * (1 + 1e-9) if direction > 0 else abs(s) * (1 - 1e-9)
    kinds: list[int] = []
    for kind in np.argsort(-gain, kind="stable"):
        if gain[kind] <= 0 or len(kinds) >= budget:
            break
        n = int(min(available[kind], math.ceil(gap / gain[kind]), budget - len(kinds)))
        kinds.extend([int(kind)] * n)
        gap -= n * gain[kind]
        if gap <= 0:
            return kinds, True
    return kinds, False


def _fragility_of(
    decision: Decision,
    pairs: PairCounts,
    counts: np.ndarray,
    alpha: float,
    max_votes: int,
    names: list[str],
    total: float,
) -> dict:
    holds = _claim_holds(decision, pairs, counts, alpha)
    search = _search_removal(
        counts,
        lambda remaining: _first_order(decision, pairs, remaining),
        lambda remaining: _changed(decision, pairs, remaining, alpha, holds),
        -1.0 if holds else 1.0,
        max_votes,
    )
    return _entry(decision, holds, [names[decision.leader], *(names[r] for r in decision.rivals)], search, pairs, total)


@dataclass
class _Search:
    removal: list[int]  # vote kinds (pair * 3 + outcome), in the order they are dropped
    found: int | None  # the smallest prefix of `removal` found to change the claim (None: none within budget)
    approximate: int | None  # what the first-order step alone predicted
    refits: int


def _search_removal(
    counts: np.ndarray,
    first_order: Callable[[np.ndarray], tuple[float, np.ndarray]],
    changed: Callable[[np.ndarray], bool],
    direction: float,
    max_votes: int,
) -> _Search:
    """The search both kinds of decision share: greedy rounds of the first-order step (first_order(remaining) ->
    (s, change of s per vote kind dropped)), each confirmed by `changed(remaining)` (a refit or a replay), then a
    bisection for the smallest prefix of the removal that still changes the claim."""
    removal: list[int] = []
    approximate = None
    last_unchanged = 0  # the longest prefix of `removal` known (by a refit) not to change the claim
    found = None
    refits = 0
    for round_number in range(MAX_ROUNDS):
        remaining = counts - _as_counts(removal, counts.shape)
        s, delta = first_order(remaining)
        kinds, crosses = _greedy_round(s, delta, remaining.ravel(), direction, max_votes - len(removal))
        if round_number == 0 and crosses:
            approximate = len(kinds)
        if not kinds:
            break
        removal.extend(kinds)
        refits += 1
        if changed(counts - _as_counts(removal, counts.shape)):
            found = len(removal)
            break
        last_unchanged = len(removal)
        if len(removal) >= max_votes:
            break
    if found is not None:  # the smallest prefix that still changes the claim (bisection, refits)
        lo, hi = last_unchanged, found
        while hi - lo > 1:
            mid = (lo + hi) // 2
            refits += 1
            lo, hi = (lo, mid) if changed(counts - _as_counts(removal[:mid], counts.shape)) else (mid, hi)
        found = hi
    return _Search(removal, found, approximate, refits)


def _entry(
    decision: Decision, holds: bool, models: list[str], search: _Search, pairs: PairCounts, total: float, **extra
) -> dict:
    """One decision's fragility as the page and the API show it (extra: rule-specific keys after 'kind')."""
    found = search.found
    entry = {
        "kind": decision.kind,
        **extra,
        "claim": decision.claim,
        "holds": holds,
        "models": models,
        "approximate": search.approximate,
        "votes_to_change": found,
        "confirmed": found is not None,
        "share": None if found is None else found / total,
        "removed": [] if found is None else _describe(search.removal[:found], pairs),
        "refits": search.refits,
        "counted_votes": int(total),
    }
    entry["explain"] = explain_fragility(entry)
    return entry


def _as_counts(kinds: list[int], shape: tuple[int, ...]) -> np.ndarray:
    return np.bincount(np.asarray(kinds, dtype=np.int64), minlength=shape[0] * shape[1]).reshape(shape).astype(float)


def _describe(kinds: list[int], pairs: PairCounts) -> list[dict]:
    removed = _as_counts(kinds, pairs.counts.shape)
    out = []
    for p, outcome in zip(*np.nonzero(removed), strict=True):
        first, second = pairs.models[pairs.i[p]], pairs.models[pairs.j[p]]
        n = int(removed[p, outcome])
        if outcome == 2:
            outcome_name, text = "tie", f"{n} tie{'s' if n > 1 else ''} of {first} and {second}"
        else:
            winner, loser = (first, second) if outcome == 0 else (second, first)
            outcome_name, text = f"{winner} won", f"{n} vote{'s' if n > 1 else ''} {winner} won against {loser}"
        out.append({"model_i": first, "model_j": second, "outcome": outcome_name, "votes": n, "text": text})
    return sorted(out, key=lambda r: -r["votes"])


def explain_fragility(entry: dict) -> str:
    """One sentence: how many votes it would take to change the decision."""
    claim = entry["claim"]
    if entry["votes_to_change"] is None:
        if entry["approximate"] is None:
            return f"“{claim}”: removing votes does not change it (no vote moves it that way)."
        return (
            f"“{claim}”: the first-order estimate ({entry['approximate']:,} votes) was not confirmed by refitting, "
            "and removing votes in order of influence found no set that changes it (removing a model's losses "
            "also removes the information about it, so some claims cannot be reached by removals)."
        )
    n, share = entry["votes_to_change"], 100 * entry["share"]
    what = ", ".join(r["text"] for r in entry["removed"])
    estimate = "–" if entry["approximate"] is None else f"{entry['approximate']:,}"
    return (
        f"“{claim}” changes if {n:,} of the {entry['counted_votes']:,} counted votes ({share:.1f}%) are removed: "
        f"{what} (confirmed by refitting; the first-order estimate was {estimate})."
    )


# --------------------------------------------------------------------------------------------------
# The top model certified by the rule kept across looks ('rebalanced' / 'rebalanced_ties')
# --------------------------------------------------------------------------------------------------


def replayed_top_fragility(
    a: np.ndarray,
    b: np.ndarray,
    score: np.ndarray,
    models: list[str],
    alpha: float = DEFAULT_ALPHA,
    *,
    rule: str = "rebalanced_ties",
    look_every: int = TOP_EVIDENCE_LOOK_EVERY,
    max_votes: int | None = None,
) -> dict:
    """Fragility of "L is certified best" (or "not yet certified") under the rule the site runs, replayed over
    the counted votes in the order they were cast (analysis.decisions.replay_top_evidence).

    a, b, score: the ordered votes (model indices into `models`; score of a: 1, 0.5, 0). L is the leader of the
    BT fit of all of them, as in campaign_decisions. The search is the one of decision_fragility, with:
    * the statistic s = min over rivals b of (log E_b - log(1/alpha)), > 0 exactly when certified. To first
      order each log E_b moves like the stateless log M_{L,b} (while the test's wealth rides on L,
      log E_b = offset_b + log M_{L,b}, the offset fixed by the replay); M's information is the rule's
      (observed-ties sandwich for 'rebalanced_ties', as a fixed ratio to Fisher's at each linearisation);
    * "votes of a kind" (pair, outcome) are no longer interchangeable, since the order matters: removing n
      votes of a kind removes the n most recent of them;
    * confirmation replays the rule on the history without those votes (the look points move, as when a
      rater is flagged) and asks top_model_decision with the replayed e-values.
    Returns one entry like decision_fragility's, kind 'top_model_certified', with 'rule' and 'look_every'.
    """
    check_alpha(alpha)
    replay = _OrderedVotes(a, b, score, models, look_every=look_every, **top_rule_settings(rule))
    pairs, counts = replay.pairs, replay.pairs.counts.astype(float)
    total = float(counts.sum())
    max_votes = int(total) if max_votes is None else min(int(max_votes), int(total))
    theta = bt_mle(pairs.half_wins(counts))
    leader = int(np.argmax(theta))
    rivals = [j for j in range(len(models)) if j != leader]
    holds = replay.certified(counts, leader, alpha)
    names = list(models)
    claim = f"{names[leader]} is certified best" if holds else f"{names[leader]} is not yet certified best"
    decision = Decision("top_model_certified", claim, leader, rivals, alpha)

    def changed(remaining: np.ndarray) -> bool:
        per_model = np.bincount(pairs.i, remaining.sum(axis=1), pairs.n_models) + np.bincount(
            pairs.j, remaining.sum(axis=1), pairs.n_models
        )
        if (per_model[[leader, *rivals]] <= 0).any():
            return False
        return replay.certified(remaining, leader, alpha) != holds

    search = _search_removal(
        counts,
        lambda remaining: _first_order_replayed(decision, replay, remaining, alpha),
        changed,
        -1.0 if holds else 1.0,
        max_votes,
    )
    models_shown = [names[leader], *(names[r] for r in rivals)]
    return _entry(decision, holds, models_shown, search, pairs, total, rule=rule, look_every=look_every)


class _OrderedVotes:
    """An ordered vote history, its pair counts, and replays of the top-model rule without some votes.

    The replay's state is kept at every look of the full history, so a replay without some votes resumes
    at the last look before the earliest removed vote (the history up to there is unchanged)."""

    def __init__(self, a, b, score, models, *, look_every: int, tie_variance: bool, rho: float):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        score = np.asarray(score, dtype=float)
        self.a, self.b, self.score, self.k = a, b, score, len(models)
        self.look_every, self.tie_variance, self.rho = look_every, tie_variance, rho
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        first_won = np.where(a < b, score, 1.0 - score)  # score of the lower-indexed model
        outcome = np.where(score == 0.5, 2, np.where(first_won == 1.0, 0, 1))
        pair_keys, pair_of = np.unique(lo * self.k + hi, return_inverse=True)
        self.pair_of = pair_of.reshape(-1)
        self.kind = self.pair_of * 3 + outcome  # each vote's kind: pair * 3 + outcome, as decision_fragility
        counts = np.bincount(self.kind, minlength=len(pair_keys) * 3).reshape(len(pair_keys), 3)
        self.pairs = PairCounts(list(models), pair_keys // self.k, pair_keys % self.k, counts)
        self.positions = [np.flatnonzero(self.kind == kind) for kind in range(len(pair_keys) * 3)]
        self._evidence: dict[bytes, np.ndarray] = {}
        self.states = [TopEvidenceReplay(self.k, look_every=look_every, tie_variance=tie_variance, rho=rho)]
        full = copy.deepcopy(self.states[0])
        while full.looked + look_every <= len(a):
            full.run(a[: full.looked + look_every], b[: full.looked + look_every], score[: full.looked + look_every])
            self.states.append(copy.deepcopy(full))

    def evidence(self, counts: np.ndarray) -> np.ndarray:
        """(K,) log e-values at the last vote of the history without the most recent votes of each kind that
        `counts` ((P, 3), at most the full counts) leaves out."""
        drop = (self.pairs.counts - counts).astype(np.int64).ravel()
        key = drop.tobytes()
        if key not in self._evidence:  # the search asks again for the counts it just confirmed
            self._evidence[key] = self._replay_without(drop)
        return self._evidence[key]

    def _replay_without(self, drop: np.ndarray) -> np.ndarray:
        removed = [self.positions[kind][len(self.positions[kind]) - drop[kind] :] for kind in np.flatnonzero(drop > 0)]
        if not removed:
            keep = np.ones(len(self.a), dtype=bool)
            first = len(self.a)
        else:
            gone = np.concatenate(removed)
            keep = np.ones(len(self.a), dtype=bool)
            keep[gone] = False
            first = int(gone.min())
        replay = copy.deepcopy(self.states[min(first // self.look_every, len(self.states) - 1)])
        return replay.run(self.a[keep], self.b[keep], self.score[keep])[0]

    def certified(self, counts: np.ndarray, leader: int, alpha: float) -> bool:
        """Whether the rule certifies `leader` on the history without those votes (top_model_decision)."""
        theta = bt_mle(self.pairs.half_wins(counts))
        diff = theta[:, None] - theta[None, :]
        info = difference_information(bt_covariance(self.pairs.half_wins(counts), theta))
        names = list(self.pairs.models)
        top = top_model_decision(
            diff, info, alpha, leader, names, float(counts.sum()), top_evidence=self.evidence(counts)
        )
        return bool(top["certified"])


def _first_order_replayed(
    decision: Decision, replay: _OrderedVotes, counts: np.ndarray, alpha: float
) -> tuple[float, np.ndarray]:
    """(s, change of s per vote kind dropped) for the replayed rule, to first order (see replayed_top_fragility)."""
    pairs = replay.pairs
    wins = pairs.half_wins(counts)
    theta = bt_mle(wins)
    cov = bt_covariance(wins, theta)
    k = len(theta)
    rivals = np.array(decision.rivals)
    contrasts = np.zeros((len(rivals), k))
    contrasts[:, decision.leader] = 1.0
    contrasts[np.arange(len(rivals)), rivals] = -1.0
    diff = contrasts @ theta
    var = np.einsum("rk,kl,rl->r", contrasts, cov, contrasts)
    ratio = np.ones(len(rivals))  # the rule's variance / Fisher's, per rival, held fixed to first order
    if replay.tie_variance:
        tied = bt_covariance_observed_ties(wins, pairs.dense(counts)[1], theta)
        ratio = np.einsum("rk,kl,rl->r", contrasts, tied, contrasts) / np.maximum(var, 1e-300)
    evidence = replay.evidence(counts)[rivals]
    offset = evidence - log_evidence(diff, 1.0 / np.maximum(var * ratio, 1e-300), rho=replay.rho)
    threshold = math.log(1.0 / alpha)

    def statistic(d: np.ndarray, v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            info = np.where(v > 0, 1.0 / np.maximum(v * ratio, 1e-300), 0.0)
        return (log_evidence(d, info, rho=replay.rho) + offset).min(axis=-1) - threshold

    s = float(statistic(diff, var))
    i, j = pairs.i, pairs.j
    cov_u = cov[:, i] - cov[:, j]
    c_cov_u = contrasts @ cov_u
    u_cov_u = cov_u[i, np.arange(len(i))] - cov_u[j, np.arange(len(i))]
    p = sigmoid(theta[i] - theta[j])
    weight = p * (1 - p)
    loss_grad = p[:, None] - OUTCOME_SCORE[None, :]
    new_diff = diff[:, None, None] + c_cov_u[:, :, None] * loss_grad[None]
    new_var = var[:, None] + weight * c_cov_u**2 / np.maximum(1.0 - weight * u_cov_u, 1e-12)
    new_var = np.broadcast_to(new_var[:, :, None], new_diff.shape)
    s_after = statistic(np.moveaxis(new_diff, 0, -1), np.moveaxis(new_var, 0, -1))
    return s, (s_after - s).ravel()
