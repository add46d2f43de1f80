"""Staff pages of imported preference data: the list with an upload form, one set's results, its votes."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from evalsite.dashboards import charts, exports
from evalsite.dashboards.views import staff_required
from evalsite.preferences.forms import PreferenceImportForm
from evalsite.preferences.imports import PreferenceFileError, import_preferences
from evalsite.preferences.models import PreferenceSet
from evalsite.preferences.results import set_results, set_votes_frame


@require_http_methods(["GET", "POST"])
@staff_required
def preference_list(request):
    form = PreferenceImportForm(request.POST or None, request.FILES or None)
    problems: list[tuple[str, str]] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        upload = data["file"]
        try:
            result = import_preferences(
                upload.read(),
                upload.name,
                name=data["name"] or None,
                description=data["description"],
                default_criterion=data["criterion"] or None,
                user=request.user,
            )
        except PreferenceFileError as exc:
            problems = exc.errors
        else:
            found = result.preference_set
            if result.created:
                messages.success(request, f"Imported {found.n_votes} votes as “{found.name}”.")
            else:
                messages.info(request, f"This file was imported before, as “{found.name}”: nothing changed.")
            return redirect("preferences:detail", set_id=found.pk)
    context = {"form": form, "problems": problems, "sets": PreferenceSet.objects.all()}
    return render(request, "preferences/list.html", context, status=400 if problems else 200)


@require_GET
@staff_required
def preference_detail(request, set_id: int):
    preference_set = get_object_or_404(PreferenceSet, pk=set_id)
    exclude_flagged = request.GET.get("flagged", "exclude") != "include"
    try:
        results = set_results(
            preference_set, criterion=request.GET.get("criterion") or None, exclude_flagged=exclude_flagged
        )
    except ValueError as exc:
        return render(request, "dashboards/message.html", {"message": str(exc)}, status=400)
    flagged = "exclude" if exclude_flagged else "include"

    def page_url(**params) -> str:
        query = {"criterion": results["criterion"], "flagged": flagged, **params}
        return f"{reverse('preferences:detail', args=[set_id])}?{urlencode(query)}"

    def link(**_filters) -> str:  # imported votes have no drill-down page: the charts point at the table
        return "#leaderboard-table"

    context = {
        "set": preference_set,
        "results": results,
        "criterion_tabs": [
            {**c, "url": page_url(criterion=c["criterion"]), "active": c["criterion"] == results["criterion"]}
            for c in results["criteria"]
        ],
        "flagged_toggle": page_url(flagged="include" if exclude_flagged else "exclude"),
        "interval_chart": charts.interval_chart(results["leaderboard"], link),
        "heatmap": charts.heatmap(results["win_rates"], link),
        "exports": [{"fmt": f, "url": reverse("preferences:export", args=[set_id, f])} for f in exports.FORMATS],
        "api_results": reverse("preferences:api-results", args=[set_id]),
    }
    return render(request, "preferences/detail.html", context)


@require_GET
@staff_required
def export(request, set_id: int, fmt: str):
    """The set's votes in the votes export's schema: they can travel on to another instance."""
    preference_set = get_object_or_404(PreferenceSet, pk=set_id)
    return exports.download(set_votes_frame(preference_set), fmt, f"preference-set-{set_id}-votes.{fmt}")
