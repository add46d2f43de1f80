"""Celery tasks of the default queue for runs: the lost-job sweeper and the checkpoint schedules.

Both are installed as django-celery-beat entries: the sweeper by migration 0003 (every minute), each
CheckpointSchedule by `schedules.install_periodic_task` (its crontab).
"""

from celery import shared_task

from evalsite.runs import schedules, services


@shared_task(name="runs.sweep_lost_jobs", time_limit=300, soft_time_limit=240)
def sweep_lost_jobs() -> dict:
    return services.sweep_lost_jobs()


@shared_task(name=schedules.CHECK_TASK, time_limit=600, soft_time_limit=540)
def check_checkpoint_schedules(schedule_id: int | None = None) -> list[int]:
    return schedules.check_schedules(schedule_id)
