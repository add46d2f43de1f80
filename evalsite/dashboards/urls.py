from django.urls import path, re_path

from evalsite.dashboards import api, views

app_name = "dashboards"
urlpatterns = [
    path("", views.campaign_list, name="campaigns"),
    path("campaign/<int:campaign_id>/", views.campaign_detail, name="campaign"),
    path("campaign/<int:campaign_id>/votes/", views.votes_page, name="votes"),
    re_path(
        r"^campaign/(?P<campaign_id>\d+)/export/(?P<table>votes|images|results)\.(?P<fmt>csv|parquet|json)$",
        views.export,
        name="export",
    ),
    path("run/<int:run_id>/metrics", views.compute_metrics, name="compute-metrics"),
    path("campaign/<int:campaign_id>/snapshots", views.take_snapshot, name="take-snapshot"),
    re_path(
        r"^snapshot/(?P<snapshot_id>\d+)/export/(?P<table>votes|results)\.(?P<fmt>csv|parquet|json)$",
        views.snapshot_export,
        name="snapshot-export",
    ),
    path("api/campaigns/", api.CampaignListView.as_view(), name="api-campaigns"),
    path("api/campaigns/<int:campaign_id>/results", api.CampaignResultsView.as_view(), name="api-results"),
    path("api/campaigns/<int:campaign_id>/decisions", api.CampaignDecisionsView.as_view(), name="api-decisions"),
    path("api/campaigns/<int:campaign_id>/votes", api.VotesTableView.as_view(), name="api-votes"),
    path("api/campaigns/<int:campaign_id>/images", api.ImagesTableView.as_view(), name="api-images"),
    path("api/campaigns/<int:campaign_id>/results-table", api.ResultsTableView.as_view(), name="api-results-table"),
    path("api/runs/<int:run_id>/metrics", api.RunMetricsView.as_view(), name="api-run-metrics"),
    path("api/campaigns/<int:campaign_id>/snapshots", api.SnapshotListView.as_view(), name="api-snapshots"),
    path("api/snapshots/<int:snapshot_id>", api.SnapshotDetailView.as_view(), name="api-snapshot"),
    path("api/snapshots/<int:snapshot_id>/refit", api.SnapshotRefitView.as_view(), name="api-snapshot-refit"),
]
