from django.urls import path

from evalsite.runs import views

app_name = "runs"
urlpatterns = [
    path("", views.run_list, name="list"),
    path("new", views.run_new, name="new"),
    path("import", views.run_import, name="import"),
    path("<int:run_id>/", views.run_detail, name="detail"),
    path("<int:run_id>/progress.json", views.run_progress, name="progress"),
    path("<int:run_id>/retry", views.run_retry, name="retry"),
    path("images/<str:token>.png", views.image_file, name="image"),
    path("assets/<str:token>.safetensors", views.asset_file, name="asset"),
    path("images/<str:token>.gif", views.turntable_animation, name="animation"),
]
