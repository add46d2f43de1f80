"""Staff API of imported preference data (documented at /api/schema/).

GET /preferences/api/sets/                           the sets with their vote counts
GET /preferences/api/sets/<id>/results?criterion=&flagged=include|exclude    what the set's page shows
GET /preferences/api/sets/<id>/votes?format=csv|parquet|json                 its votes, export schema
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from evalsite.dashboards.api import (
    FORMAT_PARAMETER,
    CSVRenderer,
    JSONTableRenderer,
    ParquetRenderer,
    StaffAPIView,
)
from evalsite.preferences.models import PreferenceSet
from evalsite.preferences.results import set_results, set_votes_frame


class PreferenceSetSerializer(serializers.ModelSerializer):
    class Meta:
        model = PreferenceSet
        fields = ["id", "name", "source", "filename", "sha256", "description", "n_votes", "imported_at"]


class PreferenceSetListView(StaffAPIView):
    @extend_schema(responses=PreferenceSetSerializer(many=True))
    def get(self, request):
        return Response(PreferenceSetSerializer(PreferenceSet.objects.all(), many=True).data)


class PreferenceSetResultsView(StaffAPIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("criterion", str, description="Criterion of the leaderboard (default: the first)."),
            OpenApiParameter("flagged", str, enum=["exclude", "include"], default="exclude"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, set_id: int):
        preference_set = get_object_or_404(PreferenceSet, pk=set_id)
        try:
            results = set_results(
                preference_set,
                criterion=request.query_params.get("criterion") or None,
                exclude_flagged=request.query_params.get("flagged", "exclude") != "include",
            )
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(results)


class PreferenceVotesView(StaffAPIView):
    renderer_classes = [JSONTableRenderer, CSVRenderer, ParquetRenderer]

    @extend_schema(parameters=[FORMAT_PARAMETER], responses={(200, "text/csv"): OpenApiTypes.BINARY})
    def get(self, request, set_id: int):
        return Response(set_votes_frame(get_object_or_404(PreferenceSet, pk=set_id)))
