"""Rater pages (invite link, instructions, the rating page), the access-checked image view, and the staff
page of a campaign's raters.

The rating page is a shell: evalsite/static/evalsite/rater.js drives it through the JSON API (api.py).
Nothing a rater can see names a model: the page shows no campaign name (researchers tend to put model
names there), images come from /i/<assignment id>/<side>.png: a new URL in every assignment, the run's one
size and encoding (evalsite.runs.display), no metadata and no file name.
"""

from __future__ import annotations

import io
import re
import secrets
import uuid

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from PIL import Image as PILImage

from evalsite.rating import engine
from evalsite.rating.models import CRITERION_QUESTIONS, Assignment, Campaign, Criterion, Rater, RaterStats
from evalsite.rating.quality import update_rater_quality
from evalsite.runs.display import shown_length, shown_png
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

    The campaign's simulation link (its simulation_token) is for the simulated crowd only: it makes new
    accounts marked simulated and refuses a logged-in person, so no person's votes are labelled simulated.
    `?participant=<id>` (letters, digits, _ . : -) is kept with a new rater, as rater panels send theirs."""
    campaign = Campaign.objects.filter(Q(invite_token=invite_token) | Q(simulation_token=invite_token)).first()
    if campaign is None or not campaign.is_open:
        return _message(
            request,
            "Invite link not valid",
            "This invite link is unknown or its campaign is closed. Ask for a new link.",
            status=404,
        )
    simulated = invite_token == campaign.simulation_token
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
        refusal = None if simulated else _join_refusal(request, campaign, participant)
        if refusal is not None:
            return refusal
        if not request.user.is_authenticated:
            user = get_user_model().objects.create_user(username=f"rater-{_random_suffix()}")
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        rater, _ = Rater.objects.get_or_create(
            user=request.user, defaults={"simulated": simulated, "participant_id": participant}
        )
        campaign.raters.add(rater)
        return redirect("rating:rate", campaign_id=campaign.pk)
    return render(request, "rating/join.html", {"invite_token": invite_token})


def _join_refusal(request, campaign: Campaign, participant: str):
    """Why a person may not join through the campaign's invite link now (an error page), or None.

    One account per panel participant id, the campaign's cap on the link, and new accounts per client address
    (EVALSITE_JOIN_RATE, counted in the shared cache): one person cannot mint raters to stuff votes."""
    if campaign.require_participant_id and not participant:
        return _message(request, "Participant id needed", "Open the link your rater panel gave you.", 400)
    members = campaign.raters.filter(simulated=False)
    mine = members.filter(user=request.user).exists() if request.user.is_authenticated else False
    if mine:
        return None
    if participant and members.filter(participant_id=participant).exists():
        return _message(request, "Already joined", "This participant id has already joined this campaign.", 409)
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
    questions = [(Criterion(c).label, CRITERION_QUESTIONS[Criterion(c)]) for c in campaign.criteria]
    return render(
        request,
        "rating/instructions.html",
        {
            "campaign_id": campaign.pk,
            "questions": questions,
            "asks_typography": Criterion.TYPOGRAPHY in campaign.criteria,
        },
    )


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
            "next_url": f"{reverse('rating:next-assignment')}?campaign={campaign.pk}",
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
        raise Http404("no such image")
    run = assignment.campaign.run
    if request.method == "HEAD":  # the same headers as GET, without decoding and encoding the picture
        response = HttpResponse(content_type="image/png")
        response["Content-Length"] = str(shown_length(run))
    else:
        response = HttpResponse(shown_png(shown, run), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
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
    response = HttpResponse(clean_png(shown), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def clean_png(image: Image) -> bytes:
    """The image's pixels as a fresh PNG: no text chunks, EXIF, ICC profile or anything else from the file."""
    key = f"rating:clean-png:{image.token}"
    data = cache.get(key)
    if data is not None:
        return data
    with image.file.open("rb") as stored:
        picture = PILImage.open(stored)
        picture.load()
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
    """Invite link, pairs and gold pool, and each rater's quality figures; recompute or prepare on POST."""
    campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
    notice = ""
    if request.method == "POST":
        if request.POST.get("action") == "quality":
            stats = update_rater_quality(campaign)
            notice = f"Recomputed {len(stats)} raters; {sum(s.flagged for s in stats)} flagged."
        elif request.POST.get("action") == "prepare":
            made = engine.prepare_campaign(campaign)
            notice = f"{made['new_pairs']} new image pairs, {made['new_gold_checks']} new gold checks."
    stats = RaterStats.objects.filter(campaign=campaign).select_related("rater__user").order_by("rater__user__username")
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
            "notice": notice,
        },
    )
