"""Install the beat entry that re-sends generation jobs whose dispatch or worker was lost (every minute)."""
from django.db import migrations

SWEEPER_NAME = "runs: re-send lost generation jobs"


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=SWEEPER_NAME,
        defaults={"task": "runs.sweep_lost_jobs", "interval": every_minute, "enabled": True,
                  "description": "Jobs queued or running past their lease are sent to the gpu queue again."},
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEPER_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_generation_jobs_and_schedules"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
