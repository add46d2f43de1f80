"""Scheduled runs: the newest checkpoint in a directory is registered and compared with the baseline, once."""

from __future__ import annotations

import json
import os
import time

import pytest
from django_celery_beat.models import PeriodicTask

from evalsite.catalog.models import ImageModel
from evalsite.runs import schedules
from evalsite.runs.models import CheckpointSchedule, ScheduledCheckpoint


def write_checkpoint(directory, name, step=None, mtime=None):
    """A checkpoint directory as generation.train writes it (config.json with recipe.steps_done, weights)."""
    path = directory / name
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "config.json").write_text(json.dumps({"format": "t2i-arena/mmdit", "recipe": {"steps_done": step}}))
    if mtime is not None:
        os.utime(path / "config.json", (mtime, mtime))
    return path


@pytest.fixture
def schedule(db, tmp_path, make_prompt_set):
    baseline = ImageModel.objects.create(
        name="baseline",
        kind="unet_baseline",
        source="/models/unet",
        sampler_settings={"steps": 8, "height": 32, "width": 32},
    )
    return schedules.create_schedule(
        name="nightly",
        directory=str(tmp_path / "ckpts"),
        baseline_model=baseline,
        prompt_set=make_prompt_set(),
        seeds=[0, 1],
        crontab="30 2 * * *",
        sampler_overrides={"guidance_scale": 3.0},
    )


def test_a_schedule_is_a_beat_entry_stored_in_the_database(schedule):
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "runs.check_checkpoint_schedules" and json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "2", "*")
    assert task.enabled and task.interval is None
    schedule.crontab, schedule.enabled = "0 4 * * 1", False
    schedule.save()
    schedules.install_periodic_task(schedule)
    task.refresh_from_db()
    assert (task.crontab.hour, task.crontab.day_of_week, task.enabled) == ("4", "1", False)
    with pytest.raises(ValueError, match="5 fields"):
        schedules.parse_crontab("every night")
    with pytest.raises(ValueError, match="invalid crontab"):
        schedules.parse_crontab("99 * * * *")


def test_the_newest_checkpoint_gets_one_run_against_the_baseline_and_never_a_second(
    schedule, tmp_path, broker, django_capture_on_commit_callbacks
):
    ckpts = tmp_path / "ckpts"
    now = time.time()
    write_checkpoint(ckpts, "step-001000", step=1000, mtime=now - 100)
    newest = write_checkpoint(ckpts, "step-002000", step=2000, mtime=now - 200)  # by step, not by mtime
    (ckpts / "half-written").mkdir()  # no config.json yet: not a checkpoint
    with django_capture_on_commit_callbacks(execute=True):
        assert len(schedules.check_schedules()) == 1
    taken = ScheduledCheckpoint.objects.get()
    assert taken.checkpoint_path == str(newest.resolve())
    model = taken.image_model
    assert (model.kind, model.source, model.name) == ("inhouse", str(newest.resolve()), "nightly/step-002000")
    run = taken.run
    assert set(run.image_models.all()) == {model, schedule.baseline_model}
    assert run.seeds == [0, 1] and run.sampler_overrides == {"guidance_scale": 3.0}
    assert run.images.count() == 2 * 3 * 2 and len(broker.messages()) == run.jobs.count()

    for _ in range(2):  # beat fires again, nothing new
        assert schedules.check_schedules(schedule.pk) == []
    assert ScheduledCheckpoint.objects.count() == 1 and ImageModel.objects.filter(kind="inhouse").count() == 1

    later = write_checkpoint(ckpts, "step-003000", step=3000)
    with django_capture_on_commit_callbacks(execute=True):
        (run_id,) = schedules.check_schedules(schedule.pk)
    second = ScheduledCheckpoint.objects.get(checkpoint_path=str(later.resolve()))
    assert second.run_id == run_id and second.run.name == "nightly: step-003000 vs baseline"
    # The baseline's images are the same images: reused, not made again.
    assert second.run.reused_images.count() == 6 and second.run.images.count() == 6


def test_without_step_numbers_the_newest_by_time_wins(tmp_path):
    now = time.time()
    write_checkpoint(tmp_path, "b", mtime=now - 50)
    write_checkpoint(tmp_path, "a", mtime=now - 10)
    assert schedules.newest_checkpoint(tmp_path).path.name == "a"
    assert schedules.newest_checkpoint(tmp_path / "a") is None  # no sub-folders with a config
    with pytest.raises(FileNotFoundError):
        schedules.newest_checkpoint(tmp_path / "missing")


def test_a_checkpoint_already_taken_is_never_taken_again(schedule, tmp_path):
    path = write_checkpoint(tmp_path / "ckpts", "step-5", step=5).resolve()
    model = ImageModel.objects.create(name="by-hand", kind="inhouse", source=str(path))
    ScheduledCheckpoint.objects.create(schedule=schedule, checkpoint_path=str(path), image_model=model)
    assert schedules.check_schedules() == []
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError):  # the database refuses a second row for the same checkpoint
        with transaction.atomic():
            ScheduledCheckpoint.objects.create(schedule=schedule, checkpoint_path=str(path), image_model=model)


def test_a_missing_directory_is_recorded_on_the_schedule(schedule):
    assert schedules.check_schedules() == []
    schedule = CheckpointSchedule.objects.get(pk=schedule.pk)
    assert "does not exist" in schedule.last_error and schedule.last_checked_at is not None


def test_the_beat_task_is_registered_under_its_name():
    from evalsite.celery import app

    app.loader.import_default_modules()
    assert {"runs.check_checkpoint_schedules", "runs.sweep_lost_jobs", "generation.generate_batch"} <= set(app.tasks)
    route = app.amqp.router.route({}, "runs.check_checkpoint_schedules", (), {})
    assert route["queue"].name == "default"
    assert app.amqp.router.route({}, "generation.generate_batch", (), {})["queue"].name == "gpu"


def test_the_sweeper_beat_entry_is_installed_by_migration(db):
    task = PeriodicTask.objects.get(task="runs.sweep_lost_jobs")
    assert task.enabled and task.interval.every == 60 and task.interval.period == "seconds"
