"""analysis.suspicion: join bursts, identical answer streams and one-model favouring, on synthetic crowds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.suspicion import identical_streams, join_bursts, model_favouring, suspicious_raters

MODELS = ["best", "good", "middle", "weak", "worst"]
STRENGTH = {"best": 2.0, "good": 1.0, "middle": 0.0, "weak": -1.0, "worst": -2.0}


def crowd(kinds: dict[str, str], *, items: int = 400, per_item: int = 3, seed: int = 0) -> pd.DataFrame:
    """Votes of raters of the given kinds: careful (Bradley-Terry on the true strengths), random, perfect (always
    the truly better model), favours-<model> (picks that model whenever it is shown, else careful), or
    copy-<rater> (answers exactly as that rater, shown the same items)."""
    rng = np.random.default_rng(seed)
    raters = list(kinds)
    rows = []
    answers: dict[tuple[str, int], str] = {}
    originals = [r for r in raters if not kinds[r].startswith("copy-")]
    for item in range(items):
        a, b = rng.choice(MODELS, size=2, replace=False)
        p_a = 1 / (1 + np.exp(-(STRENGTH[a] - STRENGTH[b])))
        for rater in rng.choice(originals, size=per_item, replace=False):
            kind = kinds[rater]
            if kind == "random":
                winner = rng.choice(["model_a", "model_b", "tie"])
            elif kind == "perfect":
                winner = "model_a" if STRENGTH[a] > STRENGTH[b] else "model_b"
            elif kind.startswith("favours-") and kind.removeprefix("favours-") in (a, b):
                winner = "model_a" if a == kind.removeprefix("favours-") else "model_b"
            else:
                winner = "model_a" if rng.random() < p_a else "model_b"
            answers[(rater, item)] = winner
            rows.append({"rater": rater, "item": item, "model_a": a, "model_b": b, "winner": winner})
    for rater, kind in kinds.items():
        if kind.startswith("copy-"):
            source = kind.removeprefix("copy-")
            rows += [dict(r, rater=rater) for r in rows if r["rater"] == source]
    return pd.DataFrame(rows)


def test_a_rater_pushing_a_middle_model_is_flagged_for_favouring_it():
    kinds = {f"c{i}": "careful" for i in range(8)} | {"pusher": "favours-middle"}
    found = model_favouring(crowd(kinds))
    assert list(found["rater"]) == ["pusher"]
    assert found.iloc[0]["model"] == "middle" and found.iloc[0]["picked_share"] == 1.0


def test_a_careful_rater_who_always_prefers_the_truly_best_model_is_not_flagged():
    # The false positive to avoid: a rater who picks "best" in every pair with it (more often than the crowd,
    # which has random clickers in it) is right, not an exploiter; compared on the same pairs, the excess is small.
    kinds = {f"c{i}": "careful" for i in range(6)} | {"r0": "random", "r1": "random", "perfect": "perfect"}
    votes = crowd(kinds, items=1500)
    mine = votes[(votes["rater"] == "perfect") & ((votes["model_a"] == "best") | (votes["model_b"] == "best"))]
    assert len(mine) >= 100
    overall_best_share = ((votes["winner"] == "model_a") & (votes["model_a"] == "best")).sum() + (
        (votes["winner"] == "model_b") & (votes["model_b"] == "best")
    ).sum()
    assert overall_best_share / len(votes) < 0.4  # "best" wins far less often in the crowd's votes overall
    assert model_favouring(votes).empty


def test_identical_streams_find_a_copied_account_and_not_two_careful_raters():
    kinds = {f"c{i}": "careful" for i in range(6)} | {"r0": "random", "twin": "copy-r0"}
    found = identical_streams(crowd(kinds, items=600))
    assert [set(p) for p in found[["rater", "other"]].itertuples(index=False)] == [{"r0", "twin"}]
    assert found.iloc[0]["agreement"] == 1.0 and found.iloc[0]["expected"] < 0.8


def test_identical_streams_need_enough_shared_items():
    kinds = {f"c{i}": "careful" for i in range(6)} | {"r0": "random", "twin": "copy-r0"}
    votes = crowd(kinds, items=600)
    shared = votes[votes["rater"] == "twin"]["item"].nunique()
    assert identical_streams(votes, min_shared=shared + 1).empty


def test_a_burst_of_joins_through_one_link_is_found_and_a_steady_trickle_is_not():
    start = pd.Timestamp("2026-12-01T10:00:00Z")
    burst = [
        {"rater": f"b{i}", "link": "invite link", "joined_at": start + pd.Timedelta(seconds=3 * i)} for i in range(12)
    ]
    trickle = [
        {"rater": f"t{i}", "link": "invite link", "joined_at": start + pd.Timedelta(minutes=10 + 2 * i)}
        for i in range(30)
    ]
    other_link = [{"rater": f"o{i}", "link": "panel", "joined_at": start + pd.Timedelta(seconds=i)} for i in range(5)]
    found = join_bursts(pd.DataFrame(burst + trickle + other_link), window_seconds=60, min_joins=10)
    assert sorted(found["rater"]) == sorted(f"b{i}" for i in range(12))
    assert set(found["burst_size"]) == {12} or found["burst_size"].min() >= 10


def test_suspicious_raters_gives_one_row_per_rater_with_every_reason():
    kinds = {f"c{i}": "careful" for i in range(6)} | {"pusher": "favours-weak", "twin": "copy-pusher"}
    start = pd.Timestamp("2026-12-01T10:00:00Z")
    joins = pd.DataFrame([{"rater": r, "link": "invite link", "joined_at": start} for r in ("pusher", "twin")])
    table = suspicious_raters(crowd(kinds, items=800), joins, min_joins=2).set_index("rater")
    assert set(table.index) == {"pusher", "twin"}
    assert "favours weak" in table.loc["pusher", "reasons"]
    assert "identical answers to rater" in table.loc["twin", "reasons"]
    assert "join burst" in table.loc["twin", "reasons"]


def test_careful_crowd_has_no_suspects():
    kinds = {f"c{i}": "careful" for i in range(10)}
    assert suspicious_raters(crowd(kinds, items=1000)).empty


def test_raters_who_always_judge_the_same_way_are_not_copies_when_others_judge_that_way_too():
    # Three raters who always pick the truly better model answer identically on every item they share (as
    # simulated careful raters with the same judge nearly do); each agrees as much with the third, so the
    # agreement is explained by the items, not by one account copying another.
    kinds = {f"c{i}": "careful" for i in range(4)} | {f"p{i}": "perfect" for i in range(3)} | {"r0": "random"}
    votes = crowd(kinds, items=1500)
    p0, p1 = (set(votes.loc[votes["rater"] == r, "item"]) for r in ("p0", "p1"))
    assert len(p0 & p1) >= 20
    assert identical_streams(votes).empty
