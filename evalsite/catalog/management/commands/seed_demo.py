"""Create the demo data: a researcher account, a rater account and the demo prompt sets.

Idempotent: running it again changes nothing that exists. Passwords come from DEMO_ADMIN_PASSWORD /
DEMO_RATER_PASSWORD (defaults are for a local demo only and are printed).
"""
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from evalsite.catalog.models import PromptSet
from evalsite.catalog.prompt_files import PromptRow, read_prompt_file
from evalsite.catalog.services import create_prompt_set
from evalsite.rating.models import Rater

PARTI_PROMPTS = Path(settings.BASE_DIR) / "data" / "PartiPrompts.tsv"
DEMO_SET = "Demo shapes, positions and words"


def demo_prompt_rows() -> list[PromptRow]:
    """Prompts of the procedural demo domain, whose images the checker can score from pixels."""
    from generation.demo_domain import demo_prompt_rows as rows

    return [PromptRow(line=i + 1, text=r["text"], category=r["category"], challenge=r["challenge"],
                      note=r["note"], needs_text=r["needs_text"], rendered_text=r["rendered_text"])
            for i, r in enumerate(rows())]


class Command(BaseCommand):
    help = "Create demo users and prompt sets (safe to run more than once)."

    def handle(self, **options):
        with transaction.atomic():
            self._users()
            if not PromptSet.objects.filter(name="PartiPrompts").exists():
                create_prompt_set("PartiPrompts", read_prompt_file(PARTI_PROMPTS), source_file=str(PARTI_PROMPTS),
                                  description="PartiPrompts (Yu et al. 2022), Apache 2.0.")
            if not PromptSet.objects.filter(name=DEMO_SET).exists():
                create_prompt_set(DEMO_SET, demo_prompt_rows(), source_file="generation.demo_domain",
                                  description="Procedural demo domain; prompts marked held-out were never trained on.")
        for prompt_set in PromptSet.objects.all():
            self.stdout.write(f"prompt set {prompt_set.name!r}: {prompt_set.prompts.count()} prompts")

    def _users(self):
        User = get_user_model()
        admin_password = os.environ.get("DEMO_ADMIN_PASSWORD", "admin-demo-password")
        rater_password = os.environ.get("DEMO_RATER_PASSWORD", "rater-demo-password")
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.invalid", admin_password)
            self.stdout.write(f"created staff user admin / {admin_password}")
        if not User.objects.filter(username="rater").exists():
            user = User.objects.create_user("rater", password=rater_password)
            Rater.objects.create(user=user)
            self.stdout.write(f"created rater user rater / {rater_password}")
