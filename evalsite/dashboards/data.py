"""Campaign rows as pandas DataFrames: the one place where Django rows become analysis input.

`votes_frame(campaign)` gives one row per vote in the vote-table schema of `analysis/` (see
`analysis.bradley_terry.check_votes`): model_a is the model shown on the left, model_b the one on the
right, winner "model_a" / "model_b" / "tie" / "both_bad", left_model = model_a. The raw choice and
everything needed to find the vote again (ids, image tokens, prompt) come along for drill-down and export.
"""
from __future__ import annotations

import pandas as pd
from django.urls import reverse

from evalsite.rating.models import Campaign, Choice, Vote
from evalsite.runs.models import Image

WINNER_OF_CHOICE = {Choice.LEFT: "model_a", Choice.RIGHT: "model_b", Choice.TIE: "tie", Choice.BOTH_BAD: "both_bad"}

VOTE_COLUMNS = [
    "vote_id", "campaign_id", "criterion", "choice", "winner", "model_a", "model_b", "left_model", "rater",
    "rater_id", "rater_flagged", "item", "assignment_id", "prompt_id", "prompt", "category", "challenge",
    "seed", "image_left", "image_right", "is_gold", "gold_correct", "gold_correct_side", "seconds",
    "time_taken_ms", "created_at",
]

IMAGE_COLUMNS = [
    "image_token", "image_url", "model", "prompt_id", "prompt", "category", "challenge", "seed", "status",
    "width", "height", "sampler_settings", "generation_seconds", "error", "created_at", "finished_at",
]


def votes_frame(campaign: Campaign, *, criterion: str | None = None, include_gold: bool = True) -> pd.DataFrame:
    """Every vote of the campaign (optionally one criterion, optionally without gold checks), oldest first."""
    votes = Vote.objects.filter(campaign=campaign)
    if criterion is not None:
        votes = votes.filter(criterion=criterion)
    if not include_gold:
        votes = votes.filter(is_gold=False)
    rows = votes.order_by("id").values_list(
        "id", "criterion", "choice", "model_left__name", "model_right__name", "rater_id", "rater__user__username",
        "rater__flagged", "assignment_id", "assignment__pair_key", "assignment__prompt_id",
        "assignment__prompt__text", "assignment__prompt__category", "assignment__prompt__challenge",
        "assignment__image_left__seed", "assignment__image_left__token", "assignment__image_right__token",
        "is_gold", "gold_correct", "time_taken_ms", "created_at", "assignment__image_left_id",
        "assignment__gold__correct_image_id",
    )
    records = []
    for (vote_id, crit, choice, left, right, rater_id, username, flagged, assignment_id, pair_key, prompt_id,
         prompt, category, challenge, seed, token_left, token_right, is_gold, gold_correct, time_ms,
         created_at, left_image_id, gold_correct_image_id) in rows:
        correct_side = None
        if is_gold and gold_correct_image_id is not None:
            correct_side = "left" if gold_correct_image_id == left_image_id else "right"
        records.append({
            "vote_id": vote_id,
            "campaign_id": campaign.pk,
            "criterion": crit,
            "choice": choice,
            "winner": WINNER_OF_CHOICE[choice],
            "model_a": left,
            "model_b": right,
            "left_model": left,
            "rater": username,
            "rater_id": rater_id,
            "rater_flagged": bool(flagged),
            "item": f"{pair_key}:{crit}",  # one judged question: an image pair on one criterion
            "assignment_id": str(assignment_id),
            "prompt_id": prompt_id,
            "prompt": prompt,
            "category": category or "(none)",
            "challenge": challenge or "(none)",
            "seed": seed,
            "image_left": token_left,
            "image_right": token_right,
            "is_gold": bool(is_gold),
            "gold_correct": gold_correct,
            "gold_correct_side": correct_side,
            "seconds": None if time_ms is None else time_ms / 1000.0,
            "time_taken_ms": time_ms,
            "created_at": created_at,
        })
    frame = pd.DataFrame.from_records(records, columns=VOTE_COLUMNS)
    frame["gold_correct"] = frame["gold_correct"].astype("boolean")
    frame["seconds"] = frame["seconds"].astype("float64")
    frame["time_taken_ms"] = frame["time_taken_ms"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def images_frame(campaign: Campaign) -> pd.DataFrame:
    """Every image of the campaign's run with its model, prompt, seed, settings and access-checked URL."""
    rows = (Image.objects.filter(run=campaign.run).order_by("model__name", "prompt__position", "seed")
            .values_list("token", "model__name", "prompt_id", "prompt__text", "prompt__category",
                         "prompt__challenge", "seed", "status", "width", "height", "sampler_settings",
                         "generation_seconds", "error", "created_at", "finished_at"))
    records = []
    for (token, model, prompt_id, prompt, category, challenge, seed, status, width, height, sampler, seconds,
         error, created_at, finished_at) in rows:
        records.append({
            "image_token": token,
            "image_url": reverse("rating:image", args=[token]),
            "model": model,
            "prompt_id": prompt_id,
            "prompt": prompt,
            "category": category or "(none)",
            "challenge": challenge or "(none)",
            "seed": seed,
            "status": status,
            "width": width,
            "height": height,
            "sampler_settings": sampler,
            "generation_seconds": seconds,
            "error": error,
            "created_at": created_at,
            "finished_at": finished_at,
        })
    frame = pd.DataFrame.from_records(records, columns=IMAGE_COLUMNS)
    for col in ("width", "height", "seed"):
        frame[col] = frame[col].astype("Int64")
    frame["generation_seconds"] = frame["generation_seconds"].astype("float64")
    return frame


def quality_frame(votes: pd.DataFrame) -> pd.DataFrame:
    """Votes ready for `analysis.rater_quality.rater_report`: on gold checks the two images may come from the
    same model, so their sides are named after the known answer ("gold: correct image" / "gold: wrong image")
    instead; real pairs keep their model names. Left/right position bias is then measured on both."""
    frame = votes.copy()
    gold = frame["is_gold"].astype(bool) & frame["gold_correct_side"].notna() & frame["gold_correct"].notna()
    left_correct = frame["gold_correct_side"] == "left"
    frame.loc[gold, "model_a"] = left_correct[gold].map({True: "gold: correct image", False: "gold: wrong image"})
    frame.loc[gold, "model_b"] = left_correct[gold].map({True: "gold: wrong image", False: "gold: correct image"})
    frame["left_model"] = frame["model_a"]
    # gold rows without an answer key or a verdict (e.g. the other questions asked on a gold pair) say nothing
    # about the rater's accuracy or the models: leave them out
    return frame[~frame["is_gold"].astype(bool) | gold]


def counted_votes(votes: pd.DataFrame, *, exclude_raters=()) -> pd.DataFrame:
    """The votes that count for model ratings: no gold checks, none of `exclude_raters`."""
    keep = ~votes["is_gold"].astype(bool)
    if exclude_raters:
        keep &= ~votes["rater"].isin(set(exclude_raters))
    return votes[keep]
