from django.contrib import admin

from evalsite.dashboards.models import MetricResult


@admin.register(MetricResult)
class MetricResultAdmin(admin.ModelAdmin):
    list_display = ("run", "model", "metric", "value", "n", "computed_at")
    list_filter = ("metric", "run")
    search_fields = ("model__name", "run__name")
    readonly_fields = ("computed_at",)
