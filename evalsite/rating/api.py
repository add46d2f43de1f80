"""The rater JSON API (the rater page uses exactly this).

GET  /api/assignments/next?campaign=<id>[&exclude=<assignment id>]
POST /api/assignments/<id>/votes

Session authentication (CSRF enforced on POST), per-rater throttling (scope "rater"), and every error
as JSON {"error": code, "detail": words} with a 4xx status; a refused request stores nothing.
"""

from __future__ import annotations

import logging
import uuid

from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Exists, OuterRef
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from evalsite.inputs import numeric_id
from evalsite.outages import CACHE_AWAY, DATABASE_AWAY
from evalsite.rating import engine
from evalsite.rating.models import Campaign, Rater
from evalsite.rating.rows import RUN_IS_3D_PARAMS, columns, fetch_row, instances, loaded, run_is_3d, select_list
from evalsite.rating.serializers import (
    ErrorSerializer,
    NextAssignmentSerializer,
    VoteRequestSerializer,
    VoteResponseSerializer,
    assignment_payload,
    plain_vote_body,
    progress_payload,
    vote_payload,
)
from evalsite.rating.voting import VoteRefused, VoteSubmission, submit_votes
from evalsite.runs.models import ComparisonRun
from evalsite.throttles import count_use


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with a body nested too deep for Python's parser refused as malformed, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply") from None


class ApiError(exceptions.APIException):
    def __init__(self, status_code: int, code: str, detail: str):
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code


log = logging.getLogger(__name__)


class RaterThrottle(ScopedRateThrottle):
    """Per-rater rate limit (scope "rater"), counted in the shared cache so that every web process and machine
    sees one count; reads the rate at request time so settings overrides apply.

    The sliding-window estimate of two fixed windows, counted in one round trip to the shared cache
    (evalsite.throttles.count_use), where DRF's sliding log reads and writes the whole log on every request (in
    the embedded default a pickled file written and renamed: ~0.6 ms per request, bench/vote_path.py)."""

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope) if self.scope else None
        if rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(rate)
        try:
            self.use = count_use(self.get_cache_key(request, view), self.duration)
        except CACHE_AWAY as exc:  # Redis restarting: let the rater through rather than fail the request
            log.warning("shared cache away (%s): rater rate limit not counted", exc)
            return True
        return self.use.estimate <= self.num_requests

    def wait(self):
        return self.use.retry_after(self.num_requests)


_DRF_CODES = {"parse_error": "malformed_body", "unsupported_media_type": "malformed_body"}


def json_error_handler(exc, context):
    """Every refusal as {"error": code, "detail": words}."""
    if isinstance(exc, ApiError):
        code = exc.error_code
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid"
        code = _DRF_CODES.get(code, code)
        if isinstance(exc, exceptions.PermissionDenied) and str(exc.detail).startswith("CSRF Failed"):
            code = "csrf_failed"
    else:
        return None  # a bug: let Django answer 500 and log it
    body = {"error": code, "detail": _words(exc.detail)}
    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        body["retry_after_seconds"] = int(exc.wait) + 1
        headers["Retry-After"] = str(int(exc.wait) + 1)
    return Response(body, status=exc.status_code, headers=headers)


def _words(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_words(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_words(item) for item in detail)
    return str(detail)


def _errors(*codes: int) -> dict:
    return {code: OpenApiResponse(ErrorSerializer) for code in codes}


DATABASE_RETRIES = 2


class RaterAPIView(APIView):
    throttle_classes = [RaterThrottle]
    throttle_scope = "rater"
    parser_classes = [SafeJSONParser]

    def dispatch(self, request, *args, **kwargs):
        """Run the request again when the database connection died under it (a server restart cuts off the
        queries in flight). Safe: every write is one transaction, rolled back when its connection died, and
        both views are idempotent (an open pair is handed out again, a vote carries its idempotency key).
        What still fails becomes the 503 with Retry-After (evalsite.views.server_error)."""
        request.body  # read once: DRF then gives every attempt its own stream over the same bytes  # noqa: B018
        for attempt in range(DATABASE_RETRIES + 1):
            try:
                return super().dispatch(request, *args, **kwargs)
            except DATABASE_AWAY:
                if attempt == DATABASE_RETRIES or connection.in_atomic_block:
                    raise
                log.warning("database connection lost during %s %s; trying again", request.method, request.path)
                connection.close()  # the next query opens a new one (the backend waits for a restarting server)
        raise AssertionError("unreachable")

    def get_exception_handler(self):
        return json_error_handler

    def rater(self) -> Rater:
        rater = Rater.objects.filter(user=self.request.user).first()
        if rater is None:
            raise ApiError(403, "not_a_rater", "this account is not a rater; join a campaign through its invite link")
        return rater


def _campaign_for(rater: Rater, raw_id: str | None) -> Campaign:
    campaign_id = numeric_id(raw_id)
    if campaign_id is None:
        raise ApiError(400, "bad_campaign", "the query parameter campaign=<numeric id> is required")
    membership = Campaign.raters.through.objects.filter(campaign_id=OuterRef("pk"), rater_id=rater.pk)
    campaign = Campaign.objects.annotate(is_member=Exists(membership)).filter(pk=campaign_id).first()
    if campaign is None:
        raise ApiError(404, "campaign_not_found", f"no campaign {raw_id}")
    if not campaign.is_member:
        raise ApiError(403, "not_in_campaign", "you are not a rater of this campaign")
    if not campaign.is_open:
        raise ApiError(409, "campaign_closed", "this campaign is closed")
    return campaign


_CAMPAIGN_COLUMNS = (
    columns(Campaign, "c")
    + columns(ComparisonRun, "r")
    + [
        ("(SELECT rr.id FROM rating_rater rr WHERE rr.user_id = %(user)s)", Rater._meta.pk),
        (f"EXISTS (SELECT 1 FROM {Campaign.raters.through._meta.db_table} m JOIN rating_rater rr ON rr.id = m.rater_id "
         "WHERE m.campaign_id = c.id AND rr.user_id = %(user)s)", BooleanField()),
        run_is_3d("c.run_id"),
    ]
)  # fmt: skip
_CAMPAIGN_SQL = (
    select_list(_CAMPAIGN_COLUMNS)
    + " FROM rating_campaign c JOIN runs_comparisonrun r ON r.id = c.run_id WHERE c.id = %(campaign)s"
)


def _rater_and_campaign(view: RaterAPIView, raw_id: str | None) -> tuple[Rater, Campaign]:
    """The caller's Rater and the campaign it asks about, in one statement when all is well (the campaign and its run,
    the user's rater id and its membership); any refusal is found and worded by the step-by-step checks."""
    user_id = view.request.user.pk
    campaign_id = numeric_id(raw_id)
    if campaign_id is not None:
        params = {"user": user_id, "campaign": campaign_id, **RUN_IS_3D_PARAMS}
        row = fetch_row(_CAMPAIGN_SQL, params, _CAMPAIGN_COLUMNS)
        if row is not None:
            (campaign, run), (rater_pk, is_member, is_3d) = instances(row, Campaign, ComparisonRun)
            if rater_pk is not None and is_member and campaign.is_open:
                campaign.run = run
                campaign.run.is_3d = is_3d  # the questions' wording asks it: read in this statement
                # Only the ids are read: the engine needs no more, and any other field loads on first use.
                return loaded(Rater, id=rater_pk, user_id=user_id), campaign
    rater = view.rater()
    return rater, _campaign_for(rater, raw_id)


def _flag(raw: str | None) -> bool:
    if raw in (None, "", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ApiError(400, "bad_parameter", f"next: {raw!r} is not one of 1, true, 0, false")


def _parse_uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (TypeError, ValueError):
        raise ApiError(404, "not_found", f"{what}: {raw!r} is not an assignment id") from None


class NextAssignmentView(RaterAPIView):
    @extend_schema(
        operation_id="next_assignment",
        summary="The pair this rater should answer next",
        description=(
            "Returns the rater's open assignment if one is still valid (resume after a break), otherwise "
            "hands out a new one. `exclude` asks for one other than the given open assignment: the page "
            "uses it to preload the next pair (a rater holds at most two open assignments per campaign). "
            "`assignment` is null when no pair is left for this rater."
        ),
        parameters=[
            OpenApiParameter("campaign", OpenApiTypes.INT, required=True),
            OpenApiParameter(
                "exclude", OpenApiTypes.UUID, required=False, description="An open assignment the page already shows."
            ),
        ],
        responses={200: NextAssignmentSerializer, **_errors(400, 403, 404, 409, 429)},
    )
    def get(self, request):
        return Response(
            next_payload(self, request.query_params.get("campaign"), _exclude(request)),
            headers={"Cache-Control": "no-store"},
        )


def _exclude(request) -> tuple[str, ...]:
    exclude = tuple(request.query_params.getlist("exclude"))
    for raw in exclude:
        _parse_uuid(raw, "exclude")
    return exclude


def next_payload(
    view: RaterAPIView,
    raw_campaign: str | None,
    exclude: tuple[str, ...],
    known: tuple[Rater, Campaign] | None = None,
    *,
    savepoint: bool = True,
    rater_locked: bool = False,
) -> dict:
    """{"assignment": the pair this rater should answer next or None, "progress": ...}; raises ApiError. `known`:
    the rater and its campaign (with its run), already read and checked (a member, the campaign open). savepoint,
    rater_locked: engine.hand_out's."""
    rater, campaign = known or _rater_and_campaign(view, raw_campaign)
    try:
        handout = engine.hand_out(rater, campaign, exclude=exclude, savepoint=savepoint, rater_locked=rater_locked)
    except engine.TooManyOpenAssignments as exc:
        raise ApiError(409, "too_many_open_assignments", str(exc)) from None
    payload = None
    if handout.assignment is not None:
        handout.assignment.campaign = campaign
        payload = assignment_payload(handout.assignment)
    return {"assignment": payload, "progress": progress_payload(handout.progress)}


class VoteView(RaterAPIView):
    @extend_schema(
        operation_id="submit_votes",
        summary="Answer every criterion of one assignment",
        description=(
            "One choice per criterion asked (left, right, tie, both_bad) and a client-made idempotency key. "
            "201: stored. 200: the same key was already stored; the stored answers come back and nothing "
            "new is stored. Refused with nothing stored: 400 malformed_body / missing_criterion / "
            "unknown_criterion / unknown_choice, 403 not_your_assignment, 404 not_found, "
            "409 already_answered (another key), 410 assignment_expired, 429 throttled. "
            "With `next=1` the answer also carries the pair to show after this one, as GET next would answer it "
            "for the assignment's campaign and `exclude` (the page's preloaded pair): one request per rated pair. "
            "The vote and the hand-out commit together; a hand-out that is refused after the vote comes back as "
            "`next: {error, detail}` beside the stored answer, never as a refusal of the vote."
        ),
        parameters=[
            OpenApiParameter(
                "next", OpenApiTypes.BOOL, required=False, description="1: also hand out the next pair (`next`)."
            ),
            OpenApiParameter(
                "exclude",
                OpenApiTypes.UUID,
                required=False,
                description="With next=1: an open assignment the page "
                "already holds (its preloaded pair), not to be handed out as `next`.",
            ),
        ],
        request=VoteRequestSerializer,
        responses={201: VoteResponseSerializer, 200: VoteResponseSerializer, **_errors(400, 403, 404, 409, 410, 429)},
    )
    def post(self, request, assignment_id: str):
        # No Rater lookup up front: the statement that locks the assignment checks that it is this user's. Only
        # a refusal looks the rater up, so that a user who is no rater still hears "not_a_rater" first.
        try:
            key = _parse_uuid(assignment_id, "assignment")
            then_next = _flag(request.query_params.get("next"))
            exclude = _exclude(request) if then_next else ()
            submission = _vote_submission(request.data)
            try:
                if then_next:
                    recorded, payload = self._vote_then_next(key, submission, exclude)
                else:
                    recorded = submit_votes(key, request.user.pk, submission)
                    payload = _vote_payload(key, recorded)
            except VoteRefused as refused:
                raise ApiError(refused.status, refused.code, refused.detail) from None
        except exceptions.APIException:
            self.rater()  # raises not_a_rater for a user who is no rater
            raise
        return Response(payload, status=status.HTTP_201_CREATED if recorded.created else status.HTTP_200_OK)

    def _vote_then_next(self, key: uuid.UUID, submission: VoteSubmission, exclude: tuple[str, ...]):
        """The vote and the next pair's hand-out in one transaction, so a rated pair waits for one commit (one WAL
        flush), not two. A refused hand-out leaves the vote to commit and comes back as `next: {error, detail}`. The
        first try has no savepoint at all (two round trips fewer): a database error anywhere, which in the hand-out
        means the rater already had the pair the engine chose (written outside the engine, or in another campaign),
        rolls back both, and the second try gives the hand-out its savepoint, so that the pair is refused and another
        one tried while the vote stands. A lost race between two submissions of the vote (SQLite) also runs the
        transaction again, which then finds the stored vote."""
        for attempt in range(2):
            try:
                with transaction.atomic():
                    recorded = submit_votes(key, self.request.user.pk, submission, savepoint=False)
                    payload = _vote_payload(key, recorded)
                    # The vote's statement read the campaign and the rater's membership: not asked again when
                    # all is well.
                    known = recorded.rater_in_open_campaign
                    try:
                        # A vote stored now holds its rater until the commit (engine.hand_out's rater_locked);
                        # a replayed one wrote nothing, and the hand-out locks the rater itself.
                        payload["next"] = next_payload(
                            self,
                            str(recorded.campaign_id),
                            exclude,
                            known,
                            savepoint=attempt > 0,
                            rater_locked=recorded.created,
                        )
                    except ApiError as refused:  # say why there is no next pair; the vote stands
                        payload["next"] = {"error": refused.error_code, "detail": _words(refused.detail)}
                return recorded, payload
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _vote_submission(data) -> VoteSubmission:
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_body", "the body must be a JSON object")
    plain = plain_vote_body(data)
    if plain is not None:
        return VoteSubmission(*plain)
    body = VoteRequestSerializer(data=data)
    if not body.is_valid():
        raise ApiError(400, "malformed_body", _words(body.errors))
    return VoteSubmission(
        idempotency_key=body.validated_data["idempotency_key"],
        choices=dict(body.validated_data["choices"]),
        time_taken_ms=body.validated_data.get("time_taken_ms"),
    )


def _vote_payload(key: uuid.UUID, recorded) -> dict:
    progress = engine.Progress(answered=recorded.answered, target=recorded.target)
    return vote_payload(key, recorded.votes, not recorded.created, progress)
