"""Staff-only HTTP API for results and exports (documented at /api/schema/ by drf-spectacular).

    GET /dashboards/api/campaigns/                                 campaigns with their vote counts
    GET /dashboards/api/campaigns/<id>/results?criterion=&flagged=&alpha=   everything the dashboard shows
    GET /dashboards/api/campaigns/<id>/votes?format=csv|parquet|json        the votes table
    GET /dashboards/api/campaigns/<id>/images?format=csv|parquet|json       the images table
    GET /dashboards/api/campaigns/<id>/results-table?format=csv|parquet|json   the flat results table
    GET /dashboards/api/runs/<id>/metrics                          CLIP score / FID / OCR rows of a run
    POST /dashboards/api/runs/<id>/metrics                         queue their computation

`format` picks the renderer (DRF's URL format override), so the file formats are real renderers.
"""

from __future__ import annotations

import pandas as pd
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.dashboards import exports, snapshots
from evalsite.dashboards.data import votes_frame
from evalsite.dashboards.models import MetricResult, ResultSnapshot
from evalsite.dashboards.results import campaign_decisions_now, campaign_results
from evalsite.dashboards.views import BadOption, read_options
from evalsite.rating.models import Campaign
from evalsite.runs.models import ComparisonRun


class FrameRenderer(BaseRenderer):
    """Renders a pandas DataFrame (or an error dict, as JSON) in one file format."""

    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, pd.DataFrame):
            return exports.to_bytes(data, self.format)
        return JSONRenderer().render(data)  # errors (403, 404, 400) stay readable


class CSVRenderer(FrameRenderer):
    media_type, format = "text/csv", "csv"


class ParquetRenderer(FrameRenderer):
    media_type, format = "application/vnd.apache.parquet", "parquet"


class JSONTableRenderer(FrameRenderer):
    media_type, format = "application/json", "json"


FORMAT_PARAMETER = OpenApiParameter(
    "format", str, enum=list(exports.FORMATS), default="json", description="File format of the table."
)


class StaffAPIView(APIView):
    permission_classes = [IsAdminUser]


class CampaignListView(StaffAPIView):
    @extend_schema(
        responses=inline_serializer(
            "CampaignSummary",
            {
                "id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "run_id": serializers.IntegerField(),
                "run": serializers.CharField(),
                "criteria": serializers.ListField(child=serializers.CharField()),
                "votes": serializers.IntegerField(),
                "is_open": serializers.BooleanField(),
            },
            many=True,
        )
    )
    def get(self, request):
        rows = Campaign.objects.select_related("run").annotate(n_votes=Count("votes")).order_by("-created_at")
        return Response(
            [
                {
                    "id": c.pk,
                    "name": c.name,
                    "run_id": c.run_id,
                    "run": c.run.name,
                    "criteria": c.criteria,
                    "votes": c.n_votes,
                    "is_open": c.is_open,
                }
                for c in rows
            ]
        )


def results_response(request, campaign_id: int, compute) -> Response:
    """`compute(campaign, options, votes=...)` on one campaign's votes with the request's options; 400 on a bad one."""
    campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
    votes = votes_frame(campaign, for_export=False)
    try:
        options = read_options(request, campaign, votes)
    except BadOption as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    return Response(compute(campaign, options, votes=votes))


class CampaignResultsView(StaffAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("criterion", str, description="Leaderboard criterion (default: the first)."),
            OpenApiParameter(
                "flagged",
                str,
                enum=["exclude", "include"],
                default="exclude",
                description="Leave flagged raters' votes out of every number.",
            ),
            OpenApiParameter("alpha", float, default=0.05, description="Error rate of the decisions."),
            OpenApiParameter("model", str, description="Model of the SD3-style win-rate chart."),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad option")},
        description="Leaderboard (Bradley-Terry scores, 95% intervals, ranks), win-rate matrix, SD3-style win "
        "rates, breakdowns, rater quality, metrics with their Spearman correlation, progress and "
        "the campaign decisions with their plain-words explanations, how many votes would change each decision "
        "(fragility) and the leaderboard with and without style control (per-image covariates) side by side. "
        '"Certified best" in fragility is computed by a worker, never in the request: each fragility block\'s '
        '"refresh" says whether it is "current" (these votes), "stale" (computed on computed_votes at computed_at; '
        'a refresh is queued) or "computing" (no answer yet; its entry has state "computing"); "asked_at" is when the '
        'pending refresh was asked for, and "overdue" says no worker has answered it for 90 seconds.',
    )
    def get(self, request, campaign_id: int):
        return results_response(request, campaign_id, campaign_results)


class CampaignDecisionsView(StaffAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "flagged",
                str,
                enum=["exclude", "include"],
                default="exclude",
                description="Leave flagged raters' votes out of every number.",
            ),
            OpenApiParameter("alpha", float, default=0.05, description="Error rate of the decisions."),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad option")},
        description="What the votes already decide on every criterion (top model certified, ranking settled, "
        "each with the models in Bradley-Terry order; the top model by the rule named in top_rule, replayed "
        "from the counted votes in stored order, with the older Bonferroni rule's answer in "
        "top_model.bonferroni), the progress, and every rater's quality flags with "
        "whether the rater is simulated: the results without bootstrap or projections, cheap enough to poll "
        "while a campaign runs.",
    )
    def get(self, request, campaign_id: int):
        return results_response(request, campaign_id, campaign_decisions_now)


class TableView(StaffAPIView):
    renderer_classes = [JSONTableRenderer, CSVRenderer, ParquetRenderer]
    table = ""

    def get(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign.objects.select_related("run"), pk=campaign_id)
        response = Response(exports.export_frame(campaign, self.table))
        fmt = request.accepted_renderer.format
        response["Content-Disposition"] = f'attachment; filename="{exports.filename(campaign, self.table, fmt)}"'
        return response


def _table_view(table: str, description: str):
    view = type(f"{table.title().replace('-', '')}TableView", (TableView,), {"table": table})
    view.get = extend_schema(
        parameters=[FORMAT_PARAMETER],
        description=description,
        responses={
            (200, f): OpenApiTypes.BINARY for f in ("text/csv", "application/vnd.apache.parquet", "application/json")
        },
    )(TableView.get)
    return view


VotesTableView = _table_view(
    "votes",
    "Every vote: criterion, choice, models left and right, rater, prompt, image tokens, gold checks, time taken.",
)
ImagesTableView = _table_view("images", "Every image of the campaign's run with model, prompt, seed and settings.")
ResultsTableView = _table_view(
    "results",
    "Leaderboard of every criterion with metric values, one row per criterion and model (flagged raters excluded).",
)


class MetricResultSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")

    class Meta:
        model = MetricResult
        fields = ["model", "metric", "value", "n", "details", "computed_at"]


class RunMetricsView(StaffAPIView):
    @extend_schema(responses=MetricResultSerializer(many=True))
    def get(self, request, run_id: int):
        run = get_object_or_404(ComparisonRun, pk=run_id)
        return Response(MetricResultSerializer(run.metric_results.select_related("model"), many=True).data)

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, run_id: int):
        from evalsite.dashboards.tasks import compute_run_metrics

        run = get_object_or_404(ComparisonRun, pk=run_id)
        compute_run_metrics.delay_on_commit(run.pk)
        return Response({"queued": "dashboards.compute_run_metrics", "run": run.pk}, status=status.HTTP_202_ACCEPTED)


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = ResultSnapshot
        fields = [
            "id",
            "campaign",
            "kind",
            "taken_at",
            "n_votes",
            "content_hash",
            "votes_sha256",
            "settings",
            "software",
        ]


class SnapshotListView(StaffAPIView):
    """GET: the campaign's snapshots, oldest first. POST: take one now."""

    @extend_schema(responses=SnapshotSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        return Response(SnapshotSerializer(campaign.snapshots.order_by("taken_at", "id"), many=True).data)

    @extend_schema(request=None, responses={201: SnapshotSerializer})
    def post(self, request, campaign_id: int):
        snapshot = snapshots.take_snapshot(get_object_or_404(Campaign, pk=campaign_id), user=request.user)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDetailView(StaffAPIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, description="The snapshot with its numbers per criterion.")
    def get(self, request, snapshot_id: int):
        snapshot = get_object_or_404(ResultSnapshot, pk=snapshot_id)
        return Response({**SnapshotSerializer(snapshot).data, "results": snapshot.results})


class SnapshotRefitView(StaffAPIView):
    @extend_schema(
        responses=OpenApiTypes.OBJECT,
        description="Fit the snapshot's stored votes again with its stored settings; `identical` says whether "
        "every number came out the same.",
    )
    def get(self, request, snapshot_id: int):
        snapshot = get_object_or_404(ResultSnapshot, pk=snapshot_id)
        try:
            return Response(snapshots.refit(snapshot))
        except ValueError as exc:  # the stored votes file changed
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
