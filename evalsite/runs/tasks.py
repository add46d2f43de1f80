"""Celery tasks of the default queue for runs: the lost-job sweeper, the checkpoint schedules and the worker
health round trip.

The sweeper and the schedules are installed as django-celery-beat entries: the sweeper by migration 0003 (every
minute), each CheckpointSchedule by `schedules.install_periodic_task` (its crontab).
"""

import socket

from celery import shared_task

from evalsite.runs import schedules, services
from evalsite.runs.models import WorkerHeartbeat


@shared_task(name="runs.sweep_lost_jobs", time_limit=300, soft_time_limit=240)
def sweep_lost_jobs() -> dict:
    return services.sweep_lost_jobs()


@shared_task(name=schedules.CHECK_TASK, time_limit=600, soft_time_limit=540)
def check_checkpoint_schedules(schedule_id: int | None = None) -> list[int]:
    return schedules.check_schedules(schedule_id)


@shared_task(name="evalsite.ping")
def ping(payload: str = "pong") -> str:
    """Round trip used by health checks and by the test that runs a real worker: records that a worker consumed
    the broker and reached the database."""
    WorkerHeartbeat.objects.create(payload=payload[:200], hostname=socket.gethostname())
    return payload
