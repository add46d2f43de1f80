"""A real Celery worker process consumes the configured broker and completes a task."""

import time

import pytest

from evalsite.runs.models import WorkerHeartbeat
from evalsite.runs.tasks import ping


@pytest.mark.worker
def test_a_real_worker_process_completes_a_task_through_the_broker(celery_worker_process, tmp_path):
    result = ping.delay("hello-from-test")
    assert result.get(timeout=90) == "hello-from-test"
    deadline = time.monotonic() + 10
    while not WorkerHeartbeat.objects.filter(payload="hello-from-test").exists():
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(0.2)
    assert celery_worker_process.alive()
