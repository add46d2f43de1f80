"""Schedule "the newest checkpoint in DIRECTORY against BASELINE on PROMPT SET" (a django-celery-beat entry).

    manage.py add_checkpoint_schedule --name nightly --directory /checkpoints/mmdit \
        --baseline unet-baseline --prompt-set "Demo shapes, positions and words" --cron "0 3 * * *" --seeds 2
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalsite.catalog.models import GENERATING_KIND_CHOICES, ImageModel, PromptSet
from evalsite.runs import schedules
from evalsite.runs.models import CheckpointSchedule


class Command(BaseCommand):
    help = "Create a checkpoint schedule and its beat entry (optionally check it once right away)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--directory", required=True, help="folder whose sub-folders are checkpoints")
        parser.add_argument("--kind", default=ImageModel.Kind.INHOUSE, choices=[k for k, _ in GENERATING_KIND_CHOICES])
        parser.add_argument("--baseline", required=True, help="name of the baseline model")
        parser.add_argument("--prompt-set", required=True)
        parser.add_argument("--cron", default="0 3 * * *", help="minute hour day month weekday, UTC")
        parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
        parser.add_argument("--steps", type=int)
        parser.add_argument("--guidance", type=float)
        parser.add_argument("--resolution", type=int)
        parser.add_argument("--check-now", action="store_true", help="look for a checkpoint immediately")

    def handle(self, *args, **opts):
        baseline = ImageModel.objects.filter(name=opts["baseline"]).first()
        prompt_set = PromptSet.objects.filter(name=opts["prompt_set"]).first()
        if baseline is None or prompt_set is None:
            raise CommandError(f"unknown {'baseline model' if baseline is None else 'prompt set'}")
        if CheckpointSchedule.objects.filter(name=opts["name"]).exists():
            raise CommandError(f"a schedule named {opts['name']!r} exists")
        if opts["seeds"] < 1:
            raise CommandError("--seeds must be at least 1")
        overrides = {k: v for k, v in [("steps", opts["steps"]), ("guidance_scale", opts["guidance"])] if v is not None}
        if opts["resolution"]:
            overrides["height"] = overrides["width"] = opts["resolution"]
        try:
            schedule = schedules.create_schedule(
                name=opts["name"],
                directory=str(Path(opts["directory"]).resolve()),
                checkpoint_kind=opts["kind"],
                baseline_model=baseline,
                prompt_set=prompt_set,
                seeds=list(range(opts["seeds"])),
                sampler_overrides=overrides,
                crontab=opts["cron"],
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(
            f"schedule {schedule.pk} {schedule.name!r}: {schedule.crontab} (UTC), "
            f"beat entry {schedule.periodic_task.name!r}"
        )
        if opts["check_now"]:
            started = schedules.check_schedules(schedule.pk)
            self.stdout.write(f"started run(s) {started}" if started else "no new checkpoint")
