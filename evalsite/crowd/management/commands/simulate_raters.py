"""manage.py simulate_raters: a simulated crowd votes on a campaign through the site's public HTTP API.

    manage.py simulate_raters --campaign 3 --raters 20 --minutes 5
    manage.py simulate_raters --campaign 3 --raters 50 --minutes 10 --bad-share 0.2 --seed 7
    manage.py simulate_raters --invite-url https://arena.example/join/<simulation token> --raters 10 --minutes 2

The raters join through the campaign's simulation invite link, so every vote they give is labelled simulated
on the dashboards and in the exports. They only speak HTTP to --site; this command reads the database only
to find the campaign's simulation invite link (with --campaign) and, at the end, to print what quality control
made of them (by the participant id each rater joined with: sim-<kind>-<n>).
"""

from __future__ import annotations

import time
from collections import defaultdict

import requests
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from evalsite.crowd.behaviour import KINDS
from evalsite.crowd.crowd import Crowd, crowd_mix


class Command(BaseCommand):
    help = "Simulated raters vote on a campaign through the public HTTP API, judging the images by their pixels."

    def add_arguments(self, parser):
        parser.add_argument("--campaign", type=int, help="campaign id (its simulation invite link is read here)")
        parser.add_argument("--campaign-name", help="the newest open campaign of this name (bin/up: the demo's)")
        parser.add_argument("--invite-url", help="a simulation invite link, for a site whose database is not ours")
        parser.add_argument("--site", default="http://127.0.0.1:8000", help="where the site answers")
        parser.add_argument("--raters", type=int, default=10)
        parser.add_argument("--minutes", type=float, default=5.0)
        parser.add_argument("--mix", help=f"kind=share pairs of {', '.join(KINDS)} (default careful=0.7,casual=0.3)")
        parser.add_argument("--bad-share", type=float, help="share of bad raters (random, always_left, fast)")
        parser.add_argument("--think-scale", type=float, default=1.0, help="multiplies every think time")
        parser.add_argument("--max-pairs", type=int, help="pairs per rater at most")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--wait", type=float, default=120.0, help="seconds to wait for the site to answer at all (bin/up)"
        )

    def handle(self, *args, **opts):
        invite_url = self.invite_url(opts)
        try:
            mix = crowd_mix(opts["mix"], opts["bad_share"])
        except ValueError as e:
            raise CommandError(str(e)) from None
        if opts["raters"] < 1 or opts["minutes"] <= 0:
            raise CommandError("--raters must be >= 1 and --minutes > 0")
        crowd = Crowd(
            invite_url,
            opts["raters"],
            mix,
            seed=opts["seed"],
            think_scale=opts["think_scale"],
            max_pairs_per_rater=opts["max_pairs"],
        )
        self.stdout.write(
            f"{opts['raters']} simulated raters ({dict(crowd.kinds)}) for {opts['minutes']} min on {invite_url}"
        )
        self.wait_for_site(invite_url, opts["wait"])
        summary = crowd.run(opts["minutes"])
        self.stdout.write(summary.table())
        self.stdout.write(f"{summary.pairs} pairs answered")
        if opts["campaign"]:
            self.stdout.write(self.quality_verdict(opts["campaign"]))
        for reason in summary.stopped:
            self.stderr.write(f"stopped by the site: {reason}")
        if summary.refused:
            raise CommandError("raters refused to vote: " + "; ".join(summary.refused))

    def invite_url(self, opts) -> str:
        from evalsite.rating.models import Campaign

        if sum(bool(opts[k]) for k in ("campaign", "campaign_name", "invite_url")) != 1:
            raise CommandError("give one of --campaign ID, --campaign-name NAME or --invite-url URL")
        if opts["invite_url"]:
            return opts["invite_url"]
        if opts["campaign_name"]:
            named = Campaign.objects.filter(name=opts["campaign_name"], is_open=True).order_by("-created_at").first()
            if named is None:
                raise CommandError(f"no open campaign named {opts['campaign_name']!r}")
            opts["campaign"] = named.pk
        campaign = Campaign.objects.filter(pk=opts["campaign"]).first()
        if campaign is None:
            raise CommandError(f"no campaign {opts['campaign']}")
        if not campaign.is_open:
            raise CommandError(f"campaign {campaign.pk} is closed")
        return opts["site"].rstrip("/") + reverse("rating:join", args=[campaign.simulation_token])

    def wait_for_site(self, url: str, seconds: float) -> None:
        """Poll until the site answers anything (bin/up starts the crowd beside the web server)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                requests.head(url, timeout=5)
                return
            except requests.RequestException as e:
                if time.monotonic() >= deadline:
                    raise CommandError(f"the site did not answer at {url} within {seconds:.0f} s: {e}") from None
                time.sleep(1.0)

    def quality_verdict(self, campaign_id: int) -> str:
        """How many raters of each kind quality control flags, as the dashboards compute it."""
        from evalsite.dashboards.data import votes_frame
        from evalsite.dashboards.results import rater_table
        from evalsite.rating.models import Campaign

        campaign = Campaign.objects.get(pk=campaign_id)
        raters = rater_table(campaign, votes_frame(campaign, for_export=False))
        flagged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in raters.itertuples():
            kind = str(row.participant).split("-")[1] if str(row.participant).startswith("sim-") else "people"
            flagged[kind][0] += int(bool(row.flagged))
            flagged[kind][1] += 1
        return "quality control flags: " + ", ".join(f"{kind} {f}/{n}" for kind, (f, n) in sorted(flagged.items()))
