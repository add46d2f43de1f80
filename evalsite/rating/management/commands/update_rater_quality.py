"""Recompute rater quality figures and flags (also the Celery task rating.update_rater_quality)."""

from django.core.management.base import BaseCommand, CommandError

from evalsite.rating import quality
from evalsite.rating.models import Campaign


class Command(BaseCommand):
    help = "Recompute gold accuracy, speed and left share per rater; flag raters below the gold threshold."

    def add_arguments(self, parser):
        parser.add_argument("--campaign", type=int, help="One campaign id (default: every open campaign).")

    def handle(self, campaign=None, **options):
        campaigns = Campaign.objects.filter(pk=campaign) if campaign else Campaign.objects.filter(is_open=True)
        if campaign and not campaigns.exists():
            raise CommandError(f"No campaign with id {campaign}.")
        for c in campaigns:
            stats = quality.update_rater_quality(c)
            flagged = [str(s.rater) for s in stats if s.flagged]
            held = len(quality.held_out_rater_ids(c, states=("held",)))
            self.stdout.write(
                f"campaign {c.pk}: {len(stats)} raters, {len(flagged)} flagged"
                + (f" ({', '.join(flagged)})" if flagged else "")
                + f", {held} held for review"
            )
