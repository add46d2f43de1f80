"""Shapes of the rater API (used to validate requests and to document the OpenAPI schema).

Nothing here carries a model's name, id or any image attribute that could identify a model: an image
is an unguessable URL and an alt text saying which side it is on.
"""

from __future__ import annotations

import functools
import re
import uuid

from django.urls import get_script_prefix, reverse
from rest_framework import serializers

from evalsite.rating.engine import Progress
from evalsite.rating.models import Assignment, Choice, Criterion, Vote, criterion_text
from evalsite.runs.display import views_shown

IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{8,80}$"
MAX_TIME_TAKEN_MS = 24 * 3600 * 1000


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Machine-readable code, e.g. missing_criterion, assignment_expired.")
    detail = serializers.CharField(help_text="What is wrong, in words.")


class CriterionSerializer(serializers.Serializer):
    key = serializers.ChoiceField(choices=Criterion.choices)
    label = serializers.CharField()
    question = serializers.CharField(help_text="The SD3 paper's wording.")


class ShownImageSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="Access-checked, unguessable; the PNG carries no metadata.")
    alt = serializers.CharField()
    views = serializers.IntegerField(
        help_text="Squares side by side in the PNG: 1 for a picture; for a 3D asset its turntable's views "
        "(azimuths 0, 360/N, ... degrees), the same for every model."
    )


class PairImagesSerializer(serializers.Serializer):
    left = ShownImageSerializer()
    right = ShownImageSerializer()


class PromptSerializer(serializers.Serializer):
    text = serializers.CharField()


class AssignmentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    prompt = PromptSerializer()
    criteria = CriterionSerializer(
        many=True, help_text="Answer every one; typography only for text prompts; multi-view consistency for 3D."
    )
    images = PairImagesSerializer()
    expires_at = serializers.DateTimeField()
    votes_url = serializers.CharField(help_text="POST the answers here.")


class ProgressSerializer(serializers.Serializer):
    answered = serializers.IntegerField(help_text="Pairs this rater has answered in the campaign.")
    target = serializers.IntegerField(allow_null=True, help_text="Pairs per rater; null when unlimited.")


class NextAssignmentSerializer(serializers.Serializer):
    assignment = AssignmentSerializer(allow_null=True, help_text="null: no pair is left for this rater.")
    progress = ProgressSerializer()


class NextAfterVoteSerializer(serializers.Serializer):
    assignment = AssignmentSerializer(allow_null=True, required=False, help_text="null: no pair is left.")
    progress = ProgressSerializer(required=False)
    error = serializers.CharField(
        required=False,
        help_text="Set instead of the two above when the hand-out was "
        "refused (as GET next would refuse it); the vote itself is stored.",
    )
    detail = serializers.CharField(required=False)


class VoteRequestSerializer(serializers.Serializer):
    idempotency_key = serializers.RegexField(
        IDEMPOTENCY_KEY_PATTERN,
        help_text="8-80 characters [A-Za-z0-9_.:-], the same for every retry.",
        error_messages={"invalid": "must be 8-80 characters of A-Z, a-z, 0-9, _ . : -"},
    )
    choices = serializers.DictField(
        child=serializers.CharField(),
        allow_empty=False,
        help_text="One answer per criterion asked: " + ", ".join(c.value for c in Choice) + ".",
    )
    time_taken_ms = serializers.IntegerField(min_value=0, max_value=MAX_TIME_TAKEN_MS, required=False, allow_null=True)


_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.removeprefix("^").removesuffix("$"))
_CHOICES = frozenset(Choice.values)


def plain_vote_body(data: dict) -> tuple[str, dict[str, str], int | None] | None:
    """(idempotency key, choices, time taken) of a vote body in its everyday shape, read by hand; None for any other
    body, which VoteRequestSerializer then reads and, where it is wrong, words the refusal.

    DRF's serializer costs ~80 us a vote, about 2% of a rated pair. Only what that serializer would accept with the
    same values passes here: a key of the pattern's characters (no whitespace for it to trim), a non-empty object of
    criterion -> one of the four choices, and a time that is absent, null or a plain integer in range (a bool, a float
    or a numeric string goes the long way). tests/rating/test_api.py checks the two readings agree."""
    key, choices, taken = data.get("idempotency_key"), data.get("choices"), data.get("time_taken_ms")
    if type(key) is not str or _KEY.fullmatch(key) is None:
        return None
    if type(choices) is not dict or not choices or not all(type(c) is str and c in _CHOICES for c in choices.values()):
        return None
    if taken is not None and (type(taken) is not int or not 0 <= taken <= MAX_TIME_TAKEN_MS):
        return None
    return key, dict(choices), taken


class VoteResponseSerializer(serializers.Serializer):
    assignment = serializers.UUIDField()
    idempotency_key = serializers.CharField()
    choices = serializers.DictField(child=serializers.ChoiceField(choices=Choice.choices))
    replayed = serializers.BooleanField(help_text="true: this submission was already stored; nothing new stored.")
    progress = ProgressSerializer()
    next = NextAfterVoteSerializer(
        required=False, help_text="Only when asked with next=1: the pair to show after this one, or why there is none."
    )


def criteria_payload(assignment: Assignment) -> list[dict]:
    is_3d = assignment.campaign.run.is_3d
    payload = []
    for key in assignment.campaign.criteria_for(assignment.prompt):
        label, question = criterion_text(key, is_3d)
        payload.append({"key": key, "label": label, "question": question})
    return payload


def assignment_payload(assignment: Assignment) -> dict:
    # views: how many squares, side by side, each image holds (a text-to-3D run's turntable; 1 for a picture)
    views = views_shown(assignment.campaign.run)
    what = "object" if views > 1 else "image"
    urls = {name: template.replace(_ID_MARK, str(assignment.id)) for name, template in _url_templates().items()}
    return {
        "id": str(assignment.id),
        "prompt": {"text": assignment.prompt.text},
        "criteria": criteria_payload(assignment),
        "images": {side: {"url": urls[side], "alt": f"{side.capitalize()} {what}", "views": views} for side in SIDES},
        "expires_at": assignment.expires_at,
        "votes_url": urls["votes"],
    }


SIDES = ("left", "right")
_ID_MARK = str(uuid.UUID(int=0))


def _url_templates() -> dict[str, str]:
    """An assignment's three URLs with a mark where its id goes: reverse() costs ~37 us a call, three per handed-out
    pair, and only the id changes (the script prefix too, where the site is mounted under one: a key of the cache)."""
    return _url_templates_under(get_script_prefix())


@functools.lru_cache(maxsize=16)
def _url_templates_under(prefix: str) -> dict[str, str]:
    templates = {side: reverse("rating:assignment-image", args=[_ID_MARK, side]) for side in SIDES}
    templates["votes"] = reverse("rating:votes", args=[_ID_MARK])
    assert all(url.startswith(prefix) and url.count(_ID_MARK) == 1 for url in templates.values()), templates
    return templates


def progress_payload(progress: Progress) -> dict:
    return {"answered": progress.answered, "target": progress.target}


def vote_payload(assignment_id, votes: list[Vote], replayed: bool, progress: Progress) -> dict:
    return {
        "assignment": str(assignment_id),
        "idempotency_key": votes[0].idempotency_key,
        "choices": {vote.criterion: vote.choice for vote in votes},
        "replayed": replayed,
        "progress": progress_payload(progress),
    }
