from django.urls import path

from evalsite.rating import api, views

app_name = "rating"
urlpatterns = [
    path("join/<str:invite_token>", views.join, name="join"),
    path("rate/<int:campaign_id>/", views.rate, name="rate"),
    path("rate/<int:campaign_id>/complete", views.complete, name="complete"),
    path("rate/<int:campaign_id>/instructions", views.instructions, name="instructions"),
    path("i/<str:assignment_id>/<str:side>.png", views.assignment_image, name="assignment-image"),
    path("i/<str:token>.png", views.image, name="image"),
    path("api/assignments/next", api.NextAssignmentView.as_view(), name="next-assignment"),
    path("api/assignments/<str:assignment_id>/votes", api.VoteView.as_view(), name="votes"),
    path("staff/campaigns/", views.staff_campaigns, name="staff-campaigns"),
    path("staff/campaigns/<int:campaign_id>/raters", views.staff_campaign_raters, name="staff-campaign-raters"),
]
