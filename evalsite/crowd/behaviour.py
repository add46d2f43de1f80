"""Who a simulated rater is, and how it turns what it sees into an answer.

A rater of a judging kind compares the two images' graded scores on the question asked
(`generation.demo_judge`), perceives the difference through its own reliability (`sharpness`: how many
logits one point of score difference is worth to it) and its position bias (logits towards the left
image), and answers with the project's one vote model, `analysis.simulate.vote_model` (Bradley-Terry with
ties as half wins: equal images tie with probability `tie_rate`). A tie between two images that
both fail the question (score below BOTH_BAD_BELOW) is answered "both bad", as people in public arenas do.

Kinds (the mix is chosen per crowd):
    careful       reliable (sharpness 8-14), nearly no position bias, thinks 3-5 s per pair
    casual        less reliable (3-6), some position bias, thinks 2.5-4 s
    random        clicks at random (left / right, sometimes tie or both bad), thinks 2.5-4 s
    always_left   always answers "left", thinks 2.5-4 s
    fast          clicks at random in well under a second
The last three are bad on purpose: quality control should flag them (gold accuracy, position bias, speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.simulate import A_WINS, B_WINS, draw_outcomes, vote_model
from generation.demo_judge import ImageScores

JUDGING_KINDS: tuple[str, ...] = ("careful", "casual")
BAD_KINDS: tuple[str, ...] = ("random", "always_left", "fast")
KINDS: tuple[str, ...] = JUDGING_KINDS + BAD_KINDS
# How strongly a point of score difference weighs, per question. A clean image against a noisy one differs by
# a few hundredths to a few tenths of aesthetics score, so that question gets a larger weight.
# Multi-view consistency (3D) is a product of two shares near 1 for a good asset, so it is weighed like aesthetics.
QUESTION_WEIGHT = {"prompt_following": 1.0, "typography": 1.0, "aesthetics": 2.0, "multiview_consistency": 2.0}
BOTH_BAD_BELOW = 0.5  # a tie between two images that both score below this is answered "both bad"
RANDOM_ANSWERS = (("left", 0.45), ("right", 0.45), ("tie", 0.05), ("both_bad", 0.05))


@dataclass(frozen=True)
class RaterProfile:
    """One simulated rater's fixed traits (drawn once, from its seed)."""

    kind: str  # one of KINDS
    sharpness: float  # logits per point of score difference (judging kinds)
    position_bias: float  # logits added towards the left image (judging kinds)
    tie_rate: float  # probability that two equal images are called a tie
    think_seconds: float  # median time spent on one pair, before think_scale

    @property
    def judges(self) -> bool:
        return self.kind in JUDGING_KINDS


def draw_profile(kind: str, rng: np.random.Generator) -> RaterProfile:
    """A rater of `kind` with traits drawn from the kind's ranges."""
    if kind == "careful":
        return RaterProfile(kind, rng.uniform(8, 14), rng.normal(0, 0.1), 0.15, rng.uniform(3.0, 5.0))
    if kind == "casual":
        return RaterProfile(kind, rng.uniform(3, 6), rng.normal(0, 0.3), 0.10, rng.uniform(2.5, 4.0))
    if kind in ("random", "always_left"):
        return RaterProfile(kind, 0.0, 0.0, 0.0, rng.uniform(2.5, 4.0))
    if kind == "fast":
        return RaterProfile(kind, 0.0, 0.0, 0.0, rng.uniform(0.3, 0.8))
    raise ValueError(f"unknown rater kind {kind!r}; known: {', '.join(KINDS)}")


def parse_mix(text: str) -> dict[str, float]:
    """'careful=0.7,casual=0.3' -> {'careful': 0.7, 'casual': 0.3}; the shares are normalised later."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, share = part.partition("=")
        name = name.strip()
        if not sep or name not in KINDS:
            raise ValueError(f"a rater mix is kind=share pairs of {', '.join(KINDS)}, got {text!r}")
        try:
            mix[name] = float(share)
        except ValueError:
            raise ValueError(f"share of {name!r} is not a number: {share!r}") from None
        if mix[name] < 0:
            raise ValueError(f"share of {name!r} must be >= 0, got {mix[name]}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"a rater mix needs a positive share somewhere, got {text!r}")
    return mix


def assign_kinds(n: int, mix: dict[str, float]) -> list[str]:
    """`n` kinds in the proportions of `mix`, by largest remainder (so 50 raters at 20% bad are exactly 10 bad)."""
    total = sum(mix.values())
    exact = {kind: n * share / total for kind, share in mix.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[kind] += 1
    return [kind for kind in mix for _ in range(counts[kind])]


def decide(
    profile: RaterProfile, left: ImageScores, right: ImageScores, question: str, rng: np.random.Generator
) -> str:
    """The rater's answer to one question about the pair (left, right): left, right, tie or both_bad."""
    if profile.kind == "always_left":
        return "left"
    if not profile.judges:
        answers, weights = zip(*RANDOM_ANSWERS, strict=True)
        return str(rng.choice(answers, p=np.array(weights)))
    score_left, score_right = left.get(question), right.get(question)
    if score_left is None or score_right is None:
        raise ValueError(f"the question {question!r} does not apply to this prompt")
    d = profile.sharpness * QUESTION_WEIGHT[question] * (score_left - score_right) + profile.position_bias
    p, tie = vote_model(d, profile.tie_rate)
    outcome = int(draw_outcomes(rng.random(), p, tie))
    if outcome == A_WINS:
        return "left"
    if outcome == B_WINS:
        return "right"
    return "both_bad" if max(score_left, score_right) < BOTH_BAD_BELOW else "tie"


def think_time(profile: RaterProfile, rng: np.random.Generator, scale: float = 1.0) -> float:
    """Seconds this rater spends on one pair: log-normal around its median, times `scale`."""
    return float(profile.think_seconds * np.exp(rng.normal(0.0, 0.3)) * scale)
