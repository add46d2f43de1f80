from django.urls import path, re_path

from evalsite.preferences import api, views

app_name = "preferences"
urlpatterns = [
    path("", views.preference_list, name="list"),
    path("<int:set_id>/", views.preference_detail, name="detail"),
    re_path(r"^(?P<set_id>\d+)/votes\.(?P<fmt>csv|parquet|json)$", views.export, name="export"),
    path("api/sets/", api.PreferenceSetListView.as_view(), name="api-sets"),
    path("api/sets/<int:set_id>/results", api.PreferenceSetResultsView.as_view(), name="api-results"),
    path("api/sets/<int:set_id>/votes", api.PreferenceVotesView.as_view(), name="api-votes"),
]
