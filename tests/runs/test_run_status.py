"""A run's status is derived from its jobs; workers finishing its last jobs at once must not leave it 'running'."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from tests.support import wait_until_a_lock_waits

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite", reason="needs PostgreSQL row locks (DATABASE_URL=postgres://...)"
    ),
]


def test_a_refresh_that_waits_for_another_reads_after_it_and_marks_the_run_done(make_prompt_set):
    """Two workers finish the run's last two jobs at the same moment; each refreshes the run after its own commit.
    The refresh reading before the other job's commit must not write its stale 'running' after that job's 'done':
    the refreshes take turns on the run's row, and the one that waited reads the jobs after the wait."""
    model = ImageModel.objects.create(name="m", kind="inhouse", source="/models/m")
    run = services.create_run(
        name="race", prompt_set=make_prompt_set(), image_models=[model], seeds=[0], batch_size=1, dispatch=False
    ).run
    first, *rest = list(run.jobs.order_by("id"))
    assert rest, "the test needs two jobs"
    Image.objects.filter(run=run).update(status=Image.Status.DONE)
    GenerationJob.objects.filter(run=run).update(status=GenerationJob.Status.DONE)
    GenerationJob.objects.filter(pk=first.pk).update(status=GenerationJob.Status.RUNNING)
    Image.objects.filter(job=first).update(status=Image.Status.RUNNING)
    assert run.refresh_status() == ComparisonRun.Status.RUNNING
    outcome = {}

    def refresh_elsewhere():
        from django.db import connection as thread_connection

        try:
            outcome["status"] = ComparisonRun.objects.get(pk=run.pk).refresh_status()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome["error"] = exc
        finally:
            thread_connection.close()

    thread = threading.Thread(target=refresh_elsewhere)
    with transaction.atomic():  # the other worker: its last job done, its refresh of the run in flight
        Image.objects.filter(job=first).update(status=Image.Status.DONE)
        GenerationJob.objects.filter(pk=first.pk).update(status=GenerationJob.Status.DONE)
        ComparisonRun.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        thread.start()
        wait_until_a_lock_waits("the refresh")  # until the refresh queues behind this transaction
    thread.join(timeout=30)
    assert outcome == {"status": ComparisonRun.Status.DONE}
    assert ComparisonRun.objects.get(pk=run.pk).status == ComparisonRun.Status.DONE
