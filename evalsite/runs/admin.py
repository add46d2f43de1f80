from django.contrib import admin

from evalsite.runs.models import ComparisonRun, Image, WorkerHeartbeat


@admin.register(ComparisonRun)
class ComparisonRunAdmin(admin.ModelAdmin):
    list_display = ("name", "prompt_set", "status", "created_at")
    list_filter = ("status",)
    filter_horizontal = ("image_models",)
    raw_id_fields = ("prompts",)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("token", "model", "prompt", "seed", "status", "generation_seconds")
    list_filter = ("status", "model", "run")
    raw_id_fields = ("prompt",)
    readonly_fields = ("token", "settings_hash", "software_versions")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("payload", "hostname", "seen_at")
