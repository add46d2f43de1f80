"""Pairwise preference data that was not gathered by this instance's campaigns.

A `PreferenceSet` is one imported file: the votes export of another T2I Arena instance (the schema of
evalsite.dashboards.data.votes_frame) or a plain CSV of (prompt, image_a, image_b, winner[, criterion])
judgements gathered elsewhere. Its rows are `PreferenceVote`s: model names as text (the models need not
exist in this catalog), the winner in analysis/'s vote-table terms, and what the export carried about the
rater, the prompt and gold checks, so the same analysis as a campaign's can run on them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

WINNERS = [("model_a", "model a"), ("model_b", "model b"), ("tie", "tie"), ("both_bad", "both bad")]


class PreferenceSet(models.Model):
    class Source(models.TextChoices):
        EXPORT = "export", "votes export of a T2I Arena instance"
        PAIRS = "pairs", "pairwise CSV (prompt, image_a, image_b, winner)"

    name = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(
        max_length=64, unique=True, help_text="of the imported file: the same file twice is one set"
    )
    description = models.TextField(blank=True)
    n_votes = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField(auto_now_add=True)
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-imported_at", "-id"]

    def __str__(self) -> str:
        return self.name


class PreferenceVote(models.Model):
    preference_set = models.ForeignKey(PreferenceSet, on_delete=models.CASCADE, related_name="votes")
    line = models.PositiveIntegerField(help_text="where the vote stands in the imported file (1 = header)")
    source_vote_id = models.BigIntegerField(null=True, blank=True, help_text="its id on the instance it came from")
    criterion = models.CharField(max_length=40)
    winner = models.CharField(max_length=10, choices=WINNERS)
    model_a = models.CharField(max_length=100, help_text="the model shown on the left (image_a)")
    model_b = models.CharField(max_length=100)
    image_a = models.CharField(max_length=500, blank=True)
    image_b = models.CharField(max_length=500, blank=True)
    item = models.CharField(max_length=600, blank=True, help_text="one judged question: an image pair on a criterion")
    prompt = models.TextField(blank=True)
    category = models.CharField(max_length=200, default="(none)")
    challenge = models.CharField(max_length=200, default="(none)")
    seed = models.BigIntegerField(null=True, blank=True)
    rater = models.CharField(max_length=200, blank=True)
    participant = models.CharField(max_length=200, blank=True)
    rater_flagged = models.BooleanField(default=False)
    rater_simulated = models.BooleanField(default=False)
    is_gold = models.BooleanField(default=False)
    gold_correct = models.BooleanField(null=True, blank=True)
    gold_correct_side = models.CharField(max_length=5, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True, help_text="when the vote was cast, if known")

    class Meta:
        ordering = ["preference_set", "line"]
        constraints = [models.UniqueConstraint(fields=["preference_set", "line"], name="one_vote_per_line")]
        indexes = [models.Index(fields=["preference_set", "criterion"])]
