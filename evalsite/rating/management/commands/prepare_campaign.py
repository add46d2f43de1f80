"""Pair a campaign's finished images and top up its gold checks (the engine also does this lazily)."""

from django.core.management.base import BaseCommand, CommandError

from evalsite.rating import engine
from evalsite.rating.models import Campaign


class Command(BaseCommand):
    help = "Build the image pairs and gold checks of a rating campaign."

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)
        parser.add_argument(
            "--gold",
            type=int,
            default=engine.DEFAULT_GOLD_POOL,
            help="Size of the gold-check pool (default %(default)s).",
        )

    def handle(self, campaign_id, gold, **options):
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            raise CommandError(f"No campaign with id {campaign_id}.")
        made = engine.prepare_campaign(campaign)
        if campaign.gold_rate > 0 and gold != engine.DEFAULT_GOLD_POOL:
            made["new_gold_checks"] += engine.create_gold_checks(campaign, n=gold)
        self.stdout.write(
            f"campaign {campaign.pk}: {made['images']} finished images, {made['new_pairs']} new image "
            f"pairs, {made['new_gold_checks']} new gold checks"
        )
