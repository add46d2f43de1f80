"""Scheduled runs: "the newest checkpoint in DIRECTORY against a baseline model on a prompt set".

Celery beat (django-celery-beat, schedules stored in the database) calls `runs.check_checkpoint_schedules` with a
schedule's id at the schedule's crontab. A check finds the newest complete checkpoint in the directory (a
sub-folder holding config.json; newest by the training step recorded in config.json, then by modification
time), registers it as an ImageModel (one per source path) and starts a run against the baseline. The
ScheduledCheckpoint row, unique per (schedule, checkpoint path), is created in the same transaction as the
run: the same checkpoint never gets a second run, however often or concurrently the check runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import CheckpointSchedule, ScheduledCheckpoint
from generation.contract import CONFIG_FILE

log = logging.getLogger(__name__)
CHECK_TASK = "runs.check_checkpoint_schedules"


@dataclass
class Checkpoint:
    path: Path
    step: int | None
    mtime: float

    @property
    def sort_key(self) -> tuple:
        return (self.step if self.step is not None else -1, self.mtime)


def _step_of(config_file: Path) -> int | None:
    """The training step a checkpoint's config.json records (recipe.steps_done, or a top-level step)."""
    try:
        meta = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    recipe = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else {}
    for value in (recipe.get("steps_done"), meta.get("step"), meta.get("global_step")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def find_checkpoints(directory: str | Path, kind: str = ImageModel.Kind.INHOUSE) -> list[Checkpoint]:
    """Complete checkpoints directly inside `directory`, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {root} does not exist")
    # diffusers writes model_index.json; our checkpoint writers write CONFIG_FILE last, once the weights are complete
    marker = "model_index.json" if kind == ImageModel.Kind.DIFFUSERS else CONFIG_FILE
    found = []
    for sub in root.iterdir():
        config = sub / marker
        if sub.is_dir() and config.is_file():
            found.append(Checkpoint(path=sub.resolve(), step=_step_of(config), mtime=config.stat().st_mtime))
    return sorted(found, key=lambda c: c.sort_key)


def newest_checkpoint(directory: str | Path, kind: str = ImageModel.Kind.INHOUSE) -> Checkpoint | None:
    found = find_checkpoints(directory, kind)
    return found[-1] if found else None


def register_checkpoint(path: Path, kind: str, schedule: CheckpointSchedule) -> ImageModel:
    """The ImageModel for this checkpoint path (created once; the source path identifies it)."""
    source = str(path)
    existing = ImageModel.objects.filter(kind=kind, source=source).first()
    if existing:
        return existing
    base = f"{schedule.name}/{path.name}"[:110]
    name, n = base, 1
    while ImageModel.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return ImageModel.objects.create(
        name=name,
        kind=kind,
        source=source,
        sampler_settings=dict(schedule.baseline_model.sampler_settings or {}),
        description=f"Registered by the checkpoint schedule {schedule.name!r} on {timezone.now():%Y-%m-%d %H:%M} UTC.",
    )


def check_schedule(schedule: CheckpointSchedule) -> ScheduledCheckpoint | None:
    """Start a run for the newest checkpoint if it has none yet. Returns the new ScheduledCheckpoint or None."""
    now = timezone.now()
    try:
        newest = newest_checkpoint(schedule.directory, schedule.checkpoint_kind)
    except OSError as e:
        CheckpointSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_error=str(e))
        log.warning("schedule %s: %s", schedule.name, e)
        return None
    CheckpointSchedule.objects.filter(pk=schedule.pk).update(last_checked_at=now, last_error="")
    if newest is None:
        return None
    if ScheduledCheckpoint.objects.filter(schedule=schedule, checkpoint_path=str(newest.path)).exists():
        return None
    try:
        with transaction.atomic():
            model = register_checkpoint(newest.path, schedule.checkpoint_kind, schedule)
            taken = ScheduledCheckpoint.objects.create(
                schedule=schedule, checkpoint_path=str(newest.path), image_model=model
            )
            planned = services.create_run(
                name=f"{schedule.name}: {newest.path.name} vs {schedule.baseline_model.name}",
                prompt_set=schedule.prompt_set,
                image_models=[model, schedule.baseline_model],
                seeds=schedule.seeds or [0],
                sampler_overrides=schedule.sampler_overrides,
                created_by=schedule.created_by,
            )
            taken.run = planned.run
            taken.save(update_fields=["run"])
    except IntegrityError:  # a concurrent check took this checkpoint first
        return None
    except services.RunError as e:
        CheckpointSchedule.objects.filter(pk=schedule.pk).update(last_error=str(e))
        log.warning("schedule %s: %s", schedule.name, e)
        return None
    log.info("schedule %s: new checkpoint %s -> run %s", schedule.name, newest.path, taken.run_id)
    return taken


def check_schedules(schedule_id: int | None = None) -> list[int]:
    """Check one schedule (by id) or every enabled one; returns the ids of the runs started."""
    schedules = CheckpointSchedule.objects.filter(enabled=True).select_related("baseline_model", "prompt_set")
    if schedule_id is not None:
        schedules = schedules.filter(pk=schedule_id)
    started = []
    for schedule in schedules:
        taken = check_schedule(schedule)
        if taken is not None:
            started.append(taken.run_id)
    return started


def parse_crontab(expression: str) -> dict:
    """'0 3 * * *' -> the fields of a django_celery_beat CrontabSchedule; ValueError if it is not 5 fields."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"a crontab has 5 fields (minute hour day-of-month month day-of-week), got {expression!r}")
    from celery.schedules import crontab

    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        crontab(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
        )
    except Exception as e:
        raise ValueError(f"invalid crontab {expression!r}: {e}") from e
    return {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
    }


def install_periodic_task(schedule: CheckpointSchedule) -> None:
    """Create or update the beat entry (a django_celery_beat PeriodicTask) that checks this schedule."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    fields = parse_crontab(schedule.crontab)
    with transaction.atomic():
        cron, _ = CrontabSchedule.objects.get_or_create(**fields, timezone="UTC")
        values = {
            "task": CHECK_TASK,
            "crontab": cron,
            "interval": None,
            "enabled": schedule.enabled,
            "kwargs": json.dumps({"schedule_id": schedule.pk}),
            "description": f"Newest checkpoint in {schedule.directory} vs {schedule.baseline_model.name}",
        }
        task = schedule.periodic_task
        if task is None:
            task = PeriodicTask.objects.create(
                name=f"checkpoint schedule {schedule.pk}: {schedule.name}"[:200], **values
            )
            CheckpointSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
            schedule.periodic_task = task
        else:
            for key, value in values.items():
                setattr(task, key, value)
            task.save()


def create_schedule(**fields) -> CheckpointSchedule:
    """Create a CheckpointSchedule and its beat entry together."""
    parse_crontab(fields.get("crontab", "0 3 * * *"))
    services._check_seeds(fields.get("seeds") or [0])
    with transaction.atomic():
        schedule = CheckpointSchedule.objects.create(**fields)
        install_periodic_task(schedule)
    return schedule
