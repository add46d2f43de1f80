"""The Celery application. Settings come from Django settings under the CELERY_ namespace.

Queues: `default` for light work (sweepers, metrics bookkeeping, schedules) and `gpu` for image
generation, consumed by workers started with `--concurrency 1 --prefetch-multiplier 1 -Q gpu`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")

app = Celery("evalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["generation"], related_name="tasks")


@app.task(name="evalsite.ping")
def ping(payload: str = "pong") -> str:
    """Round trip used by health checks and by the test that runs a real worker."""
    from evalsite.health import record_worker_heartbeat

    record_worker_heartbeat(payload)
    return payload
