"""Lost jobs are sent again once their lease runs out; jobs started too often fail; failed jobs can be retried."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import GenerationJob, Image


def make_run(make_prompt_set, name="run", seeds=(0,), **kwargs):
    model = ImageModel.objects.create(name=f"{name}-model", kind="inhouse", source=f"/models/{name}")
    return services.create_run(
        name=name,
        prompt_set=make_prompt_set(name=f"{name} prompts"),
        image_models=[model],
        seeds=list(seeds),
        dispatch=False,
        **kwargs,
    ).run


def test_the_sweeper_resends_jobs_whose_lease_ran_out_and_leaves_live_ones_alone(db, make_prompt_set, broker):
    run = make_run(make_prompt_set, seeds=(0, 1, 2), batch_size=3)
    jobs = list(run.jobs.order_by("id"))  # 3 prompts x 3 seeds in jobs of 3 images
    assert len(jobs) == 3
    past, future = timezone.now() - timedelta(seconds=5), timezone.now() + timedelta(minutes=5)
    GenerationJob.objects.filter(pk=jobs[0].pk).update(status="queued", task_id="lost-message", lease_expires_at=past)
    GenerationJob.objects.filter(pk=jobs[1].pk).update(
        status="running", task_id="killed-worker", attempts=1, lease_expires_at=past
    )
    GenerationJob.objects.filter(pk=jobs[2].pk).update(
        status="running", task_id="busy-worker", attempts=1, lease_expires_at=future
    )
    assert services.sweep_lost_jobs() == {"resent": 2, "failed": 0}
    resent = {m["id"]: m for m in broker.messages()}
    for job in jobs[:2]:
        job.refresh_from_db()
        assert job.status == "queued" and job.task_id in resent and job.lease_expires_at > timezone.now()
    jobs[2].refresh_from_db()
    assert jobs[2].task_id == "busy-worker" and jobs[2].status == "running"
    assert services.sweep_lost_jobs() == {"resent": 0, "failed": 0}  # leases renewed by the re-send


def test_a_job_whose_on_commit_send_was_lost_is_sent_by_the_sweeper(db, make_prompt_set, broker):
    run = make_run(make_prompt_set)
    job = run.jobs.get()
    assert job.status == "pending" and broker.messages() == []
    assert services.sweep_lost_jobs(now=timezone.now() + timedelta(minutes=2)) == {"resent": 1, "failed": 0}
    job.refresh_from_db()
    assert job.status == "queued" and [m["id"] for m in broker.messages()] == [job.task_id]


def test_a_job_lost_too_often_fails_with_a_reason(db, make_prompt_set, broker, settings):
    settings.EVALSITE_JOB_MAX_ATTEMPTS = 3
    run = make_run(make_prompt_set)
    job = run.jobs.get()
    GenerationJob.objects.filter(pk=job.pk).update(
        status="running", attempts=3, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.sweep_lost_jobs() == {"resent": 0, "failed": 1}
    job.refresh_from_db()
    assert job.status == "failed" and "gave up after 3 attempts" in job.error
    assert set(Image.objects.filter(job=job).values_list("status", flat=True)) == {"failed"}
    run.refresh_from_db()
    assert run.status == "failed" and broker.messages() == []


def test_retry_resets_failed_jobs_and_images_and_sends_them(
    db, make_prompt_set, broker, django_capture_on_commit_callbacks
):
    run = make_run(make_prompt_set, seeds=(0, 1), batch_size=3)
    failed, ok = list(run.jobs.order_by("id"))
    services.mark_job_failed(failed.pk, "model m: cannot load inhouse model from /models/run: does not exist")
    run.refresh_from_db()
    assert run.status == "running" and run.progress()["failed"] == 3  # the other job is still open
    with django_capture_on_commit_callbacks(execute=True):
        assert services.retry_failed(run) == 1
    failed.refresh_from_db()
    assert failed.status == "queued" and failed.error == "" and failed.attempts == 0
    assert set(Image.objects.filter(job=failed).values_list("status", "error")) == {("pending", "")}
    assert [m["id"] for m in broker.messages()] == [failed.task_id]
    run.refresh_from_db()
    assert run.status == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        assert services.retry_failed(run) == 0  # nothing failed any more
    ok.refresh_from_db()
    assert ok.status == "pending"
