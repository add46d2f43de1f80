"""Rater pages (invite link, instructions, the rating page), the access-checked image view, and the staff
page of a campaign's raters.

The rating page is a shell: evalsite/static/evalsite/rater.js drives it through the JSON API (api.py).
Nothing a rater can see names a model: the page shows no campaign name (researchers tend to put model
names there), images come from /i/<assignment id>/<side>.png: a new URL in every assignment, the run's one
size and encoding (evalsite.runs.display), no metadata and no file name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
import uuid

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from PIL import Image as PILImage

from evalsite.rating import engine
from evalsite.rating.models import (
    SIMULATION_LINK,
    Assignment,
    Campaign,
    CampaignJoin,
    Criterion,
    JoinMode,
    PersonalInvite,
    Rater,
    RaterReview,
    RaterStats,
    criterion_text,
)
from evalsite.rating.quality import update_rater_quality
from evalsite.rating.withdraw import expire_if_withdrawn, withdraw_image
from evalsite.runs.display import ImageUnreadable, shown_length, shown_png, stored_picture
from evalsite.runs.models import Image
from evalsite.throttles import client_address, over_budget

CLEAN_PNG_CACHE_SECONDS = 3600
CLEAN_PNG_CACHE_MAX_BYTES = 2 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Joining and rating
# --------------------------------------------------------------------------------------------------


PARTICIPANT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _message(request, title: str, message: str, status: int):
    return render(request, "rating/message.html", {"title": title, "message": message}, status=status)


@require_http_methods(["GET", "POST"])
def join(request, invite_token: str):
    """Invite link: a visitor without an account gets one (generated name, no password, logged in by
    this session); a logged-in user joins with their account. GET only shows the page, so a link
    preview or prefetch creates nothing.

    The token is the campaign's invite link, its simulation link or a one-time personal invite. The
    simulation link is for the simulated crowd only: it makes new accounts marked simulated and refuses a
    logged-in person, so no person's votes are labelled simulated. A campaign whose join_mode is
    "personal" refuses its invite link; a personal invite makes one account and is then used up.
    `?participant=<id>` (letters, digits, _ . : -) is kept with a new rater, as rater panels send theirs."""
    campaign = Campaign.objects.filter(Q(invite_token=invite_token) | Q(simulation_token=invite_token)).first()
    invite = None
    if campaign is None:
        invite = PersonalInvite.objects.select_related("campaign", "used_by").filter(token=invite_token).first()
        campaign = invite.campaign if invite is not None else None
    if campaign is None or not campaign.is_open:
        return _message(
            request,
            "Invite link not valid",
            "This invite link is unknown or its campaign is closed. Ask for a new link.",
            status=404,
        )
    simulated = invite is None and invite_token == campaign.simulation_token
    if invite is None and not simulated and campaign.join_mode == JoinMode.PERSONAL:
        return _message(
            request, "Personal invites only", "This campaign takes raters by personal invite only.", status=403
        )
    if invite is not None and invite.used_by is not None and invite.used_by.user_id != request.user.pk:
        return _message(request, "Invite used", "This personal invite has already been used.", status=410)
    participant = request.GET.get("participant", "")
    if participant and not PARTICIPANT_ID.match(participant):
        return _message(
            request, "Participant id not valid", "A participant id is 1-100 letters, digits, _ . : or -.", 400
        )
    if simulated and request.user.is_authenticated:
        return _message(
            request,
            "Simulation link",
            "This link is for simulated raters only. People join through the campaign's invite link.",
            status=403,
        )
    if request.method == "POST":
        refusal = None if simulated else _join_refusal(request, campaign, participant, invite)
        if refusal is not None:
            return refusal
        with transaction.atomic():
            if not request.user.is_authenticated:
                user = get_user_model().objects.create_user(username=f"rater-{_random_suffix()}")
            else:
                user = request.user
            rater, _ = Rater.objects.get_or_create(
                user=user, defaults={"simulated": simulated, "participant_id": participant}
            )
            already_in = campaign.raters.filter(pk=rater.pk).exists()
            if invite is not None and invite.used_by_id != rater.pk and not already_in:  # a member keeps it unused
                claimed = PersonalInvite.objects.filter(pk=invite.pk, used_by__isnull=True).update(
                    used_by=rater, used_at=timezone.now()
                )
                if not claimed:  # someone else used it a moment ago: make nothing
                    transaction.set_rollback(True)
                    return _message(request, "Invite used", "This personal invite has already been used.", 410)
            campaign.raters.add(rater)
            link = SIMULATION_LINK if simulated else (f"personal invite {invite.pk}" if invite else "invite link")
            CampaignJoin.objects.get_or_create(campaign=campaign, rater=rater, defaults={"link": link})
        if not request.user.is_authenticated:
            login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        return redirect("rating:rate", campaign_id=campaign.pk)
    return render(request, "rating/join.html", {"invite_token": invite_token})


def _join_refusal(request, campaign: Campaign, participant: str, invite: PersonalInvite | None = None):
    """Why a person may not join through the campaign's invite link now (an error page), or None.

    One account per panel participant id, the campaign's cap on the link, and new accounts per client address
    (EVALSITE_JOIN_RATE, counted in the shared cache): one person cannot mint raters to stuff votes. A personal
    invite makes one account at most, so neither the link's cap nor the address budget applies to it."""
    if campaign.require_participant_id and not participant:
        return _message(request, "Participant id needed", "Open the link your rater panel gave you.", 400)
    members = campaign.raters.filter(simulated=False)
    mine = members.filter(user=request.user).exists() if request.user.is_authenticated else False
    if mine:
        return None
    if participant and members.filter(participant_id=participant).exists():
        return _message(request, "Already joined", "This participant id has already joined this campaign.", 409)
    if invite is not None:
        return None
    if campaign.invite_join_cap is not None and members.count() >= campaign.invite_join_cap:
        return _message(request, "Campaign full", "This invite link has brought in all the raters it may.", 403)
    if not request.user.is_authenticated and over_budget("join", client_address(request), settings.EVALSITE_JOIN_RATE):
        return _message(request, "Too many new accounts", "Too many accounts were made from here. Try later.", 429)
    return None


def _random_suffix() -> str:
    return secrets.token_hex(5)


def _rater_in_campaign(request, campaign_id: int):
    """(campaign, rater) or an error page response."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rater = Rater.objects.filter(user=request.user).first()
    if rater is None or not campaign.raters.filter(pk=rater.pk).exists():
        return None, render(
            request,
            "rating/message.html",
            {
                "title": "Not invited",
                "message": "You are not a rater of this campaign. Open the invite link you were sent.",
            },
            status=403,
        )
    if not campaign.is_open:
        return None, render(
            request,
            "rating/message.html",
            {"title": "Campaign closed", "message": "This campaign is closed. Thank you for your votes."},
            status=410,
        )
    return (campaign, rater), None


@login_required
@require_http_methods(["GET", "POST"])
def instructions(request, campaign_id: int):
    found, refusal = _rater_in_campaign(request, campaign_id)
    if refusal:
        return refusal
    campaign, rater = found
    if request.method == "POST":
        if rater.instructions_seen_at is None:
            rater.instructions_seen_at = timezone.now()
            rater.save(update_fields=["instructions_seen_at"])
        return redirect("rating:rate", campaign_id=campaign.pk)
    questions = [criterion_text(c, campaign.run.is_3d) for c in campaign.asked_criteria()]
    return render(
        request,
        "rating/instructions.html",
        {
            "campaign_id": campaign.pk,
            "questions": questions,
            "asks_typography": Criterion.TYPOGRAPHY in campaign.asked_criteria(),
            "turntables": campaign.run.is_3d,
        },
    )


def completion_code(campaign: Campaign, participant_id: str) -> str:
    """The code a panel participant gets at the end of their quota: an HMAC of campaign and participant id
    with the site's secret key, so the researcher can check every code a panel reports (the staff page lists
    them) and a participant cannot make one for another id. 12 characters, A-Z and 2-7."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"completion:{campaign.pk}:{participant_id}".encode(), hashlib.sha256
    ).digest()
    return base64.b32encode(digest).decode()[:12]


@login_required
def complete(request, campaign_id: int):
    """The completion code for a panel participant who answered the campaign's quota (pairs_per_rater)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    rater = Rater.objects.filter(user=request.user).first()
    if rater is None or not campaign.raters.filter(pk=rater.pk).exists():
        return _message(request, "Not invited", "You are not a rater of this campaign.", 403)
    if not rater.participant_id or campaign.pairs_per_rater is None:
        return _message(request, "No completion code", "This campaign gives no completion code to this account.", 404)
    answered = engine.progress(rater, campaign).answered
    if answered < campaign.pairs_per_rater:
        return _message(
            request,
            "Not finished yet",
            f"You have answered {answered} of {campaign.pairs_per_rater} pairs. The code appears when you finish.",
            403,
        )
    response = render(request, "rating/complete.html", {"code": completion_code(campaign, rater.participant_id)})
    response["Cache-Control"] = "no-store"
    return response


@login_required
def rate(request, campaign_id: int):
    found, refusal = _rater_in_campaign(request, campaign_id)
    if refusal:
        return refusal
    campaign, rater = found
    if rater.instructions_seen_at is None:
        return redirect("rating:instructions", campaign_id=campaign.pk)
    response = render(
        request,
        "rating/rate.html",
        {
            "campaign_id": campaign.pk,
            "sides": [("left", "Left", "1"), ("right", "Right", "2")],
            "next_url": f"{reverse('rating:next-assignment')}?campaign={campaign.pk}",
            "completion_url": (
                reverse("rating:complete", args=[campaign.pk])
                if rater.participant_id and campaign.pairs_per_rater
                else ""
            ),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


SIDES = ("left", "right")


@login_required
def assignment_image(request, assignment_id: str, side: str):
    """One side of one of the rater's own assignments (staff: any), as the run shows it (evalsite.runs.display).

    The URL names the assignment, never the image: the same image has another URL in every assignment, so it
    cannot be followed from pair to pair, and a gold check's URLs look like any pair's. Every image of a run
    answers with the same length and the same headers (no ETag, no Last-Modified, no file name). Unknown
    assignments, other raters' assignments and malformed ids answer the same 404."""
    try:
        key = uuid.UUID(assignment_id)
    except ValueError:
        raise Http404("no such image") from None
    if side not in SIDES:
        raise Http404("no such image")
    assignments = Assignment.objects.select_related("campaign__run", "image_left", "image_right")
    if not request.user.is_staff:
        assignments = assignments.filter(rater__user=request.user)
    assignment = assignments.filter(pk=key).first()
    if assignment is None:
        raise Http404("no such image")
    shown = assignment.image_left if side == "left" else assignment.image_right
    if shown.status != Image.Status.DONE or not shown.file:
        expire_if_withdrawn(assignment, shown)
        raise Http404("no such image")
    run = assignment.campaign.run
    if request.method == "HEAD":  # the same headers as GET, without decoding and encoding the picture
        response = HttpResponse(content_type="image/png")
        response["Content-Length"] = str(shown_length(run))
    else:
        try:
            response = HttpResponse(shown_png(shown, run), content_type="image/png")
        except ImageUnreadable as exc:
            return _unreadable(shown, exc)
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _unreadable(image: Image, exc: ImageUnreadable) -> HttpResponse:
    """A finished image whose file is gone or broken: out of every campaign (rating.withdraw), and a 404 that
    says so; the rater's page moves on to another pair (its assignment is expired now)."""
    withdraw_image(image, str(exc))
    response = HttpResponse(
        "This image cannot be shown. The pair has been withdrawn; the page will move on to another one.",
        status=404,
        content_type="text/plain",
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
def image(request, token: str):
    """Any finished image by its token, for researchers (dashboards' drill-down). Raters see images only through
    their assignments (assignment_image): a token is the same in every pair, so it would link them; to a rater
    every token answers 404."""
    if not request.user.is_staff:
        raise Http404("no such image")
    shown = Image.objects.filter(token=token, status=Image.Status.DONE).exclude(file="").first()
    if shown is None:
        raise Http404("no such image")
    try:
        response = HttpResponse(clean_png(shown), content_type="image/png")
    except ImageUnreadable as exc:
        return _unreadable(shown, exc)
    response["Cache-Control"] = "private, max-age=3600"
    return response


def clean_png(image: Image) -> bytes:
    """The image's pixels as a fresh PNG: no text chunks, EXIF, ICC profile or anything else from the file."""
    key = f"rating:clean-png:{image.token}"
    data = cache.get(key)
    if data is not None:
        return data
    picture = stored_picture(image)
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGBA" if "transparency" in picture.info or "A" in picture.mode else "RGB")
    pixels_only = PILImage.frombytes(picture.mode, picture.size, picture.tobytes())
    out = io.BytesIO()
    pixels_only.save(out, format="PNG")
    data = out.getvalue()
    if len(data) <= CLEAN_PNG_CACHE_MAX_BYTES:
        cache.set(key, data, CLEAN_PNG_CACHE_SECONDS)
    return data


# --------------------------------------------------------------------------------------------------
# Staff
# --------------------------------------------------------------------------------------------------


@staff_member_required
def staff_campaigns(request):
    return render(
        request,
        "rating/staff_campaigns.html",
        {"campaigns": Campaign.objects.select_related("run").order_by("-created_at")},
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def staff_campaign_raters(request, campaign_id: int):
    """Invite link, pairs and gold pool, each rater's quality figures, the raters held for review, personal
    invites and panel completion codes; recompute, prepare, review or make invites on POST."""
    campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
    notice = ""
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "quality":
            stats = update_rater_quality(campaign)
            held = RaterReview.objects.filter(campaign=campaign, state=RaterReview.State.HELD).count()
            notice = f"Recomputed {len(stats)} raters; {sum(s.flagged for s in stats)} flagged, {held} held for review."
        elif action == "prepare":
            made = engine.prepare_campaign(campaign)
            notice = f"{made['new_pairs']} new image pairs, {made['new_gold_checks']} new gold checks."
        elif action in ("accept", "reject", "hold"):
            state = {"accept": "accepted", "reject": "rejected", "hold": "held"}[action]
            changed = RaterReview.objects.filter(campaign=campaign, pk=request.POST.get("review", "")[:18]).update(
                state=state, reviewed_by=request.user, reviewed_at=timezone.now()
            )
            notice = f"Marked {state}." if changed else "No such review."
        elif action == "invites":
            labels = [line.strip()[:200] for line in request.POST.get("labels", "").splitlines() if line.strip()]
            count = len(labels) or _small_count(request.POST.get("count", ""))
            made = [PersonalInvite(campaign=campaign, label=labels[i] if labels else "") for i in range(count)]
            PersonalInvite.objects.bulk_create(made)
            notice = f"{len(made)} personal invites made."
    stats = RaterStats.objects.filter(campaign=campaign).select_related("rater__user").order_by("rater__user__username")
    reviews = RaterReview.objects.filter(campaign=campaign).select_related("rater__user").order_by("state", "rater_id")
    invites = campaign.personal_invites.select_related("used_by__user").order_by("pk")
    panel = campaign.raters.exclude(participant_id="").filter(simulated=False).order_by("participant_id")
    return render(
        request,
        "rating/staff_campaign_raters.html",
        {
            "campaign": campaign,
            "invite_url": request.build_absolute_uri(reverse("rating:join", args=[campaign.invite_token])),
            "pair_count": campaign.image_pairs.count(),
            "gold_count": campaign.gold_checks.count(),
            "answered": campaign.assignments.filter(status=Assignment.Status.ANSWERED).count(),
            "stats": stats,
            "reviews": reviews,
            "invites": [(i, request.build_absolute_uri(reverse("rating:join", args=[i.token]))) for i in invites],
            "panel_codes": [(r, completion_code(campaign, r.participant_id)) for r in panel],
            "notice": notice,
        },
    )


def _small_count(text: str) -> int:
    """A number of invites to make: 1-500, anything else 0."""
    return int(text) if text.isascii() and text.isdigit() and 0 < int(text) <= 500 else 0
