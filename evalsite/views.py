import logging
import sys

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.outages import is_outage
from evalsite.runs.models import ComparisonRun
from evalsite.throttles import client_address, forget, over_budget


@login_required
def home(request):
    context = {}
    if request.user.is_staff:
        context.update(
            prompt_sets=PromptSet.objects.all()[:20],
            image_models=ImageModel.objects.all()[:50],
            runs=ComparisonRun.objects.all()[:20],
        )
    rater = getattr(request.user, "rater", None)
    context["campaigns"] = rater.campaigns.filter(is_open=True) if rater else []
    return render(request, "home.html", context)


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


class LoginView(auth_views.LoginView):
    """Django's login, with failed attempts limited per client address and per user name (the shared cache,
    EVALSITE_LOGIN_FAILURE_RATE): past the limit the form is refused with 429 before the password is checked."""

    def post(self, request, *args, **kwargs):
        rate = settings.EVALSITE_LOGIN_FAILURE_RATE
        keys = [("login-address", client_address(request)), ("login-user", request.POST.get("username", "")[:150])]
        if any(over_budget(scope, key, rate, count=False) for scope, key in keys):
            context = self.get_context_data(form=self.form_class(request), throttled=True)
            return self.render_to_response(context, status=429)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            forget("login-user", keys[1][1])
        else:
            for scope, key in keys:
                over_budget(scope, key, rate)
        return response


# --- When the database (or the cache) is briefly away ----------------------------------------------------

RETRY_AFTER_SECONDS = 2
log = logging.getLogger(__name__)


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def server_error(request):
    """handler500. A database or cache that is briefly away is a 503 with Retry-After (JSON for the API, so
    the rater page waits and sends the same answer again; nothing was stored, every write is one transaction).
    Anything else is a plain 500 that shows nothing internal."""
    exc = sys.exc_info()[1]
    if is_outage(exc):
        detail = "The service is briefly unavailable; nothing was stored. Try again in a moment."
        if _wants_json(request):
            response = JsonResponse(
                {"error": "unavailable", "detail": detail, "retry_after_seconds": RETRY_AFTER_SECONDS}, status=503
            )
        else:
            page = loader.get_template("503.html").render({"retry_after": RETRY_AFTER_SECONDS})
            response = HttpResponse(page, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
    if _wants_json(request):
        return JsonResponse({"error": "server_error", "detail": "Something went wrong on our side."}, status=500)
    return HttpResponse(loader.get_template("500.html").render({}), status=500)
