"""Staff dashboards: campaign list, campaign results, drill-down to votes and images, exports."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from evalsite.dashboards import charts, exports, snapshots
from evalsite.dashboards.data import votes_frame
from evalsite.dashboards.models import MetricResult, ResultSnapshot
from evalsite.dashboards.results import ResultOptions, campaign_results, criteria_of, rater_table
from evalsite.rating.models import Campaign, Criterion
from evalsite.runs.models import ComparisonRun

DRILLDOWN_FILTERS = ("criterion", "model", "opponent", "category", "challenge", "rater", "gold", "flagged")
VOTES_PER_PAGE = 100


def staff_required(view):
    """Logged-out visitors go to the login page; logged-in non-staff users get 403."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("The dashboards are for staff only.")
        return view(request, *args, **kwargs)

    return wrapped


class BadOption(ValueError):
    pass


def read_options(request, campaign: Campaign, votes) -> ResultOptions:
    criteria = criteria_of(campaign, votes)
    criterion = request.GET.get("criterion") or (criteria[0] if criteria else Criterion.PROMPT_FOLLOWING)
    if criterion not in criteria:
        raise BadOption(f"unknown criterion {criterion!r}; this campaign has {', '.join(criteria)}")
    flagged = request.GET.get("flagged", "exclude")
    if flagged not in ("exclude", "include"):
        raise BadOption("flagged must be 'exclude' or 'include'")
    try:
        alpha = float(request.GET.get("alpha", "0.05"))
    except ValueError as exc:
        raise BadOption("alpha must be a number such as 0.05") from exc
    if not 0 < alpha < 0.5:
        raise BadOption("alpha must be between 0 and 0.5")
    return ResultOptions(
        criterion=criterion,
        exclude_flagged=flagged == "exclude",
        alpha=alpha,
        sd3_model=request.GET.get("model") or None,
    )


def drilldown_url(campaign: Campaign, **filters) -> str:
    query = urlencode({k: v for k, v in filters.items() if v not in (None, "")})
    return f"{reverse('dashboards:votes', args=[campaign.pk])}?{query}"


@staff_required
def campaign_list(request):
    campaigns = (
        Campaign.objects.select_related("run").annotate(n_votes=Count("votes", distinct=True)).order_by("-created_at")
    )
    return render(request, "dashboards/campaign_list.html", {"campaigns": campaigns})


@staff_required
def campaign_detail(request, campaign_id: int):
    campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
    votes = votes_frame(campaign, for_export=False)
    try:
        options = read_options(request, campaign, votes)
    except BadOption as exc:
        return render(request, "dashboards/message.html", {"message": str(exc)}, status=400)
    results = campaign_results(campaign, options, votes=votes)
    flagged = "exclude" if options.exclude_flagged else "include"

    def link(**filters):
        filters.setdefault("criterion", options.criterion)
        return drilldown_url(campaign, flagged=flagged, **filters)

    def page_url(**params):
        base = {"criterion": options.criterion, "flagged": flagged, "model": options.sd3_model}
        base.update(params)
        return f"{reverse('dashboards:campaign', args=[campaign.pk])}?{urlencode({k: v for k, v in base.items() if v})}"

    metric_names = list(results["metrics"]["values"])
    breakdown_tables = {
        column: _breakdown_table(rows, column, results["leaderboard"], link)
        for column, rows in results["breakdowns"].items()
    }
    context = {
        "campaign": campaign,
        "results": results,
        "criterion_label": Criterion(options.criterion).label
        if options.criterion in Criterion.values
        else options.criterion,
        "criterion_tabs": [
            {**c, "url": page_url(criterion=c["criterion"]), "active": c["criterion"] == options.criterion}
            for c in results["criteria"]
        ],
        "flagged_toggle": page_url(flagged="include" if options.exclude_flagged else "exclude"),
        "interval_chart": charts.interval_chart(results["leaderboard"], link),
        "heatmap": charts.heatmap(results["win_rates"], link),
        "sd3_chart": charts.grouped_bars(results["sd3"], results["criteria"], link),
        "breakdown_tables": breakdown_tables,
        "metric_columns": [
            {"key": k, "label": MetricResult.Metric(k).label if k in MetricResult.Metric.values else k}
            for k in metric_names
        ],
        "metric_rows": _metric_rows(results, metric_names),
        "leaderboard_rows": [
            {**row, "href": link(model=row["model"]), "metric_values": [row["metrics"].get(k) for k in metric_names]}
            for row in results["leaderboard"]
        ],
        "rater_rows": [
            {**r, "href": drilldown_url(campaign, rater=r["rater"], criterion="all", gold="include", flagged="include")}
            for r in results["raters"]
        ],
        "exports": [
            {
                "table": t,
                "links": [
                    {"fmt": f, "url": reverse("dashboards:export", args=[campaign.pk, t, f])} for f in exports.FORMATS
                ],
            }
            for t in exports.TABLES
        ],
        "api_results": reverse("dashboards:api-results", args=[campaign.pk]),
        "history_chart": charts.history_chart(snapshots.history(campaign, options.criterion)),
        "snapshots": _snapshot_rows(campaign),
        "flagged": flagged,
        "models": [row["model"] for row in results["leaderboard"]],
    }
    return render(request, "dashboards/campaign.html", context)


def _breakdown_table(rows: list[dict], column: str, leaderboard: list[dict], link) -> dict:
    """Groups as rows, models (leaderboard order) as columns; each cell a win rate with its votes."""
    models = [r["model"] for r in leaderboard]
    groups = list(dict.fromkeys(r[column] for r in rows))
    cells = {(r[column], r["model"]): r for r in rows}
    body = []
    for group in groups:
        n_group = next(r["n_group"] for r in rows if r[column] == group)
        row_cells = []
        for model in models:
            r = cells.get((group, model))
            row_cells.append(
                None
                if r is None
                else {
                    "text": f"{100 * r['win_rate']:.0f}%",
                    "votes": r["votes"],
                    "rate": r["win_rate"],
                    "colour": charts.win_rate_colour(r["win_rate"]),
                    "text_colour": charts.text_colour(r["win_rate"]),
                    "lower": r["lower"],
                    "upper": r["upper"],
                    "href": link(model=model, **{column: group}),
                }
            )
        body.append({"group": group, "n_group": n_group, "cells": row_cells})
    return {"column": column, "models": models, "rows": body}


def _metric_rows(results: dict, metric_names: list[str]) -> list[dict]:
    values = results["metrics"]["values"]
    rows = []
    for entry in results["leaderboard"]:
        rows.append(
            {
                "model": entry["model"],
                "score": entry["score"],
                "rank": entry["rank"],
                "values": [values[k].get(entry["model"]) for k in metric_names],
            }
        )
    return rows


def filter_votes(votes, campaign: Campaign, params) -> tuple:
    """The votes behind one number on the dashboard, and the filters applied (for the page's heading)."""
    unknown = set(params) - set(DRILLDOWN_FILTERS) - {"page"}
    if unknown:
        raise BadOption(f"unknown filter(s) {sorted(unknown)}; use {', '.join(DRILLDOWN_FILTERS)}")
    criterion = params.get("criterion") or "all"
    selected = votes
    if criterion != "all":
        selected = selected[selected["criterion"] == criterion]
    if params.get("gold", "exclude") != "include":
        selected = selected[~selected["is_gold"].astype(bool)]
    if params.get("flagged", "exclude") != "include":
        raters = rater_table(campaign, votes)
        excluded = set(raters.loc[raters["flagged"], "rater"]) if len(raters) else set()
        selected = selected[~selected["rater"].isin(excluded)]
    model, opponent = params.get("model"), params.get("opponent")
    if opponent and not model:
        raise BadOption("opponent needs model")
    if model:
        selected = selected[(selected["model_a"] == model) | (selected["model_b"] == model)]
    if opponent:
        selected = selected[(selected["model_a"] == opponent) | (selected["model_b"] == opponent)]
    for column in ("category", "challenge", "rater"):
        if params.get(column):
            selected = selected[selected[column] == params[column]]
    return selected, {k: params[k] for k in DRILLDOWN_FILTERS if params.get(k)}


@staff_required
def votes_page(request, campaign_id: int):
    campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
    votes = votes_frame(campaign, for_export=False)
    try:
        selected, filters = filter_votes(votes, campaign, request.GET.dict())
    except BadOption as exc:
        return render(request, "dashboards/message.html", {"message": str(exc)}, status=400)
    paginator = Paginator(selected.to_dict(orient="records"), VOTES_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    rows = []
    for vote in page.object_list:
        chosen = {"model_a": vote["model_a"], "model_b": vote["model_b"]}.get(vote["winner"])
        rows.append(
            {
                **vote,
                "chosen": chosen,
                "left_url": reverse("rating:image", args=[vote["image_left"]]),
                "right_url": reverse("rating:image", args=[vote["image_right"]]),
            }
        )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboards/votes.html",
        {
            "campaign": campaign,
            "rows": rows,
            "page": page,
            "filters": filters,
            "total": len(selected),
            "query": query.urlencode(),
            "back": reverse("dashboards:campaign", args=[campaign.pk])
            + "?"
            + urlencode({k: v for k, v in filters.items() if k in ("criterion", "flagged") and v != "all"}),
        },
    )


@staff_required
def export(request, campaign_id: int, table: str, fmt: str):
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if table not in exports.TABLES or fmt not in exports.FORMATS:
        raise Http404("unknown export")
    return exports.download(exports.export_frame(campaign, table), fmt, exports.filename(campaign, table, fmt))


@staff_required
@require_POST
def compute_metrics(request, run_id: int):
    from evalsite.dashboards.tasks import compute_run_metrics

    run = get_object_or_404(ComparisonRun, pk=run_id)
    compute_run_metrics.delay_on_commit(run.pk)
    messages.info(request, f"CLIP score and FID for run “{run.name}” are being computed by a worker.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("dashboards:campaigns")
    return redirect(target)


SNAPSHOTS_LISTED = 10


def _snapshot_rows(campaign: Campaign) -> list[dict]:
    """The newest snapshots, newest first, with their export and refit links."""
    rows = []
    for snapshot in ResultSnapshot.objects.filter(campaign=campaign).order_by("-taken_at", "-id")[:SNAPSHOTS_LISTED]:
        rows.append(
            {
                "snapshot": snapshot,
                "exports": [
                    {"table": t, "fmt": f, "url": reverse("dashboards:snapshot-export", args=[snapshot.pk, t, f])}
                    for t in snapshots.SNAPSHOT_TABLES
                    for f in ("csv", "parquet")
                ],
                "refit": reverse("dashboards:api-snapshot-refit", args=[snapshot.pk]),
            }
        )
    return rows


@staff_required
@require_POST
def take_snapshot(request, campaign_id: int):
    """Freeze the campaign's results now (on demand), then back to its page."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    snapshot = snapshots.take_snapshot(campaign, user=request.user)
    messages.success(
        request, f"Snapshot {snapshot.pk} taken: {snapshot.n_votes} votes, hash {snapshot.content_hash[:12]}."
    )
    return redirect(f"{reverse('dashboards:campaign', args=[campaign.pk])}#history")


@staff_required
def snapshot_export(request, snapshot_id: int, table: str, fmt: str):
    """A snapshot's votes or results; every row and the file name carry the snapshot's id."""
    snapshot = get_object_or_404(ResultSnapshot, pk=snapshot_id)
    if table not in snapshots.SNAPSHOT_TABLES or fmt not in exports.FORMATS:
        raise Http404("unknown export")
    name = f"campaign-{snapshot.campaign_id}-snapshot-{snapshot.pk}-{table}.{fmt}"
    return exports.download(snapshots.snapshot_export(snapshot, table), fmt, name)
