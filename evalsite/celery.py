"""The Celery application. Settings come from Django settings under the CELERY_ namespace.

Queues: `default` for light work (sweepers, metrics bookkeeping, schedules) and `gpu` for image
generation, consumed by workers started with `--concurrency 1 --prefetch-multiplier 1 -Q gpu`.
Tasks: each app's `tasks` module (default queue; `evalsite.ping`, the worker health round trip, is in
evalsite/runs/tasks.py) and `evalsite/runs/gpu_tasks.py`, the gpu queue's task. This module imports no app.

Every site process imports this module first (`evalsite/__init__.py` loads it for manage.py, gunicorn and
celery alike), so the process-wide defaults are set here, once: the Django settings module, and
HF_HUB_OFFLINE=1 because no process of the platform downloads model weights (an explicit value wins).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = Celery("evalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["evalsite.runs"], related_name="gpu_tasks")
