"""Send again the generation jobs whose dispatch or worker was lost (what beat runs every minute)."""

from django.core.management.base import BaseCommand

from evalsite.runs import services


class Command(BaseCommand):
    help = "Re-send queued/running generation jobs whose lease ran out; fail those started too often."

    def handle(self, *args, **opts):
        result = services.sweep_lost_jobs()
        self.stdout.write(f"re-sent {result['resent']}, failed {result['failed']}")
