from django import forms
from django.contrib import admin, messages

from evalsite.runs import schedules, services
from evalsite.runs.models import (
    CheckpointSchedule,
    ComparisonRun,
    GenerationJob,
    Image,
    ScheduledCheckpoint,
    WorkerHeartbeat,
)


@admin.register(ComparisonRun)
class ComparisonRunAdmin(admin.ModelAdmin):
    list_display = ("name", "prompt_set", "status", "created_at")
    list_filter = ("status",)
    filter_horizontal = ("image_models",)
    raw_id_fields = ("prompts", "reused_images")
    actions = ["retry_failed_jobs"]

    @admin.action(description="Retry failed generation jobs")
    def retry_failed_jobs(self, request, queryset):
        count = sum(services.retry_failed(run) for run in queryset)
        self.message_user(request, f"Sent {count} failed job(s) again.", messages.SUCCESS)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("token", "model", "prompt", "seed", "status", "generation_seconds")
    list_filter = ("status", "model", "run")
    raw_id_fields = ("prompt", "job")
    readonly_fields = ("token", "settings_hash", "software_versions")


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "model", "batch_index", "status", "attempts", "worker", "lease_expires_at")
    list_filter = ("status", "model")
    search_fields = ("task_id", "error")
    readonly_fields = ("task_id", "attempts", "dispatched_at", "started_at", "finished_at", "lease_expires_at")


class CheckpointScheduleForm(forms.ModelForm):
    class Meta:
        model = CheckpointSchedule
        exclude = ("periodic_task",)

    def clean_crontab(self):
        try:
            schedules.parse_crontab(self.cleaned_data["crontab"])
        except ValueError as e:
            raise forms.ValidationError(str(e)) from None
        return self.cleaned_data["crontab"]


@admin.register(CheckpointSchedule)
class CheckpointScheduleAdmin(admin.ModelAdmin):
    form = CheckpointScheduleForm
    list_display = ("name", "directory", "baseline_model", "prompt_set", "crontab", "enabled", "last_checked_at")
    readonly_fields = ("last_checked_at", "last_error")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        schedules.install_periodic_task(obj)  # the beat entry follows the crontab and the enabled flag


@admin.register(ScheduledCheckpoint)
class ScheduledCheckpointAdmin(admin.ModelAdmin):
    list_display = ("schedule", "checkpoint_path", "image_model", "run", "created_at")
    readonly_fields = ("schedule", "checkpoint_path", "image_model", "run")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("payload", "hostname", "seen_at")
