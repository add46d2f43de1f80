"""Send a run's failed generation jobs again (after fixing a broken checkpoint, for example)."""

from django.core.management.base import BaseCommand, CommandError

from evalsite.inputs import numeric_id
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun


class Command(BaseCommand):
    help = "Reset a run's failed jobs and images and dispatch them again."

    def add_arguments(self, parser):
        parser.add_argument("run", help="run id or exact name")

    def handle(self, *args, **opts):
        key = opts["run"]
        run_id = numeric_id(key)
        runs = ComparisonRun.objects.filter(pk=run_id) if run_id is not None else ComparisonRun.objects.filter(name=key)
        if runs.count() != 1:
            raise CommandError(f"{key!r} matches {runs.count()} runs; give the run id")
        run = runs.get()
        count = services.retry_failed(run)
        self.stdout.write(f"run {run.pk}: sent {count} failed job(s) again")
