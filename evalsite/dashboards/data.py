"""Campaign rows as pandas DataFrames: the one place where Django rows become analysis input.

`votes_frame(campaign)` gives one row per vote in the vote-table schema of `analysis/` (see
`analysis.votes.check_votes`): model_a is the model shown on the left, model_b the one on the
right, winner "model_a" / "model_b" / "tie" / "both_bad", left_model = model_a. The raw choice and
everything needed to find the vote again (ids, image tokens, prompt) come along for drill-down and export.
"""

from __future__ import annotations

import pandas as pd
from django.urls import reverse

from evalsite.rating.models import Campaign, Choice, Vote
from evalsite.rating.quality import held_out_rater_ids
from evalsite.runs.models import Image

WINNER_OF_CHOICE = {Choice.LEFT: "model_a", Choice.RIGHT: "model_b", Choice.TIE: "tie", Choice.BOTH_BAD: "both_bad"}

VOTE_COLUMNS = [
    "vote_id",
    "campaign_id",
    "criterion",
    "choice",
    "winner",
    "model_a",
    "model_b",
    "left_model",
    "rater",
    "rater_id",
    "rater_flagged",
    "rater_held",
    "rater_simulated",
    "participant",
    "item",
    "assignment_id",
    "prompt_id",
    "prompt",
    "category",
    "challenge",
    "seed",
    "image_left",
    "image_right",
    "is_gold",
    "gold_correct",
    "gold_correct_side",
    "seconds",
    "time_taken_ms",
    "created_at",
]

_IMAGE_FIELDS = {  # frame column <- ORM path
    "image_token": "token",
    "model": "model__name",
    "prompt_id": "prompt_id",
    "prompt": "prompt__text",
    "category": "prompt__category",
    "challenge": "prompt__challenge",
    "seed": "seed",
    "status": "status",
    "width": "width",
    "height": "height",
    "sampler_settings": "sampler_settings",
    "generation_seconds": "generation_seconds",
    "error": "error",
    "created_at": "created_at",
    "finished_at": "finished_at",
}
IMAGE_COLUMNS = ["image_token", "image_url", *list(_IMAGE_FIELDS)[1:]]  # the URL is made from the token


_VOTE_FIELDS = {  # frame column <- ORM path
    "vote_id": "id",
    "criterion": "criterion",
    "choice": "choice",
    "model_a": "model_left__name",
    "model_b": "model_right__name",
    "rater_id": "rater_id",
    "rater": "rater__user__username",
    "rater_flagged": "rater__flagged",
    "rater_simulated": "rater__simulated",
    "participant": "rater__participant_id",
    "pair_key": "assignment__pair_key",
    "prompt_id": "assignment__prompt_id",
    "prompt": "assignment__prompt__text",
    "category": "assignment__prompt__category",
    "challenge": "assignment__prompt__challenge",
    "seed": "assignment__image_left__seed",
    "image_left": "assignment__image_left__token",
    "image_right": "assignment__image_right__token",
    "is_gold": "is_gold",
    "gold_correct": "gold_correct",
    "time_taken_ms": "time_taken_ms",
    "left_image_id": "assignment__image_left_id",
    "gold_correct_image_id": "assignment__gold__correct_image_id",
}


def votes_frame(
    campaign: Campaign, *, criterion: str | None = None, include_gold: bool = True, for_export: bool = True
) -> pd.DataFrame:
    """Every vote of the campaign (optionally one criterion, optionally without gold checks), oldest first.

    for_export=False leaves out assignment_id and created_at, the slowest columns to read (UUID and datetime
    conversion: 60% of the time for 40k votes); the dashboards do not show them."""
    votes = Vote.objects.filter(campaign=campaign)
    if criterion is not None:
        votes = votes.filter(criterion=criterion)
    if not include_gold:
        votes = votes.filter(is_gold=False)
    extra = {"assignment_id": "assignment_id", "created_at": "created_at"} if for_export else {}
    fields = dict(_VOTE_FIELDS, **extra)
    rows = list(votes.order_by("id").values_list(*fields.values()))
    raw = pd.DataFrame.from_records(rows, columns=list(fields)) if rows else pd.DataFrame(columns=list(fields))
    frame = pd.DataFrame(
        {
            "vote_id": raw["vote_id"].astype("int64"),
            "campaign_id": campaign.pk,
            "criterion": raw["criterion"].astype(object),
            "choice": raw["choice"].astype(object),
            "winner": raw["choice"].map(WINNER_OF_CHOICE).astype(object),
            "model_a": raw["model_a"].astype(object),
            "model_b": raw["model_b"].astype(object),
            "left_model": raw["model_a"].astype(object),
            "rater": raw["rater"].astype(object),
            "rater_id": raw["rater_id"].astype("int64"),
            "rater_flagged": raw["rater_flagged"].astype(bool),
            # held for review or rejected by the suspicion checks (rating.quality): out of every count, like flagged
            "rater_held": raw["rater_id"].isin(held_out_rater_ids(campaign)).astype(bool),
            "rater_simulated": raw["rater_simulated"].astype(bool),  # a simulated crowd's vote, not a person's
            "participant": raw["participant"].astype(object),
            # one judged question: an image pair on one criterion
            "item": (raw["pair_key"].astype(str) + ":" + raw["criterion"].astype(str)).astype(object),
            "prompt_id": raw["prompt_id"].astype("int64"),
            "prompt": raw["prompt"].astype(object),
            "category": raw["category"].replace("", "(none)").fillna("(none)").astype(object),
            "challenge": raw["challenge"].replace("", "(none)").fillna("(none)").astype(object),
            "seed": raw["seed"].astype("Int64"),
            "image_left": raw["image_left"].astype(object),
            "image_right": raw["image_right"].astype(object),
            "is_gold": raw["is_gold"].astype(bool),
            "gold_correct": raw["gold_correct"].astype("boolean"),
            "gold_correct_side": None,
            "seconds": raw["time_taken_ms"].astype("float64") / 1000.0,
            "time_taken_ms": raw["time_taken_ms"].astype("Int64"),
        }
    )
    known = frame["is_gold"] & raw["gold_correct_image_id"].notna()
    left_is_correct = (raw["gold_correct_image_id"] == raw["left_image_id"]).to_numpy()
    frame["gold_correct_side"] = frame["gold_correct_side"].astype(object)
    frame.loc[known, "gold_correct_side"] = ["left" if v else "right" for v in left_is_correct[known.to_numpy()]]
    if for_export:
        frame["assignment_id"] = raw["assignment_id"].map(str).astype(object)
        frame["created_at"] = pd.to_datetime(raw["created_at"], utc=True)
    return frame[[c for c in VOTE_COLUMNS if c in frame.columns]]


def images_frame(campaign: Campaign) -> pd.DataFrame:
    """Every image of the campaign's run with its model, prompt, seed, settings and access-checked URL."""
    rows = (
        Image.objects.in_run(campaign.run)
        .order_by("model__name", "prompt__position", "seed")
        .values_list(*_IMAGE_FIELDS.values())
    )
    records = []
    for values in rows:
        record = dict(zip(_IMAGE_FIELDS, values, strict=True))
        record["image_url"] = reverse("rating:image", args=[record["image_token"]])
        record["category"] = record["category"] or "(none)"
        record["challenge"] = record["challenge"] or "(none)"
        records.append(record)
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
