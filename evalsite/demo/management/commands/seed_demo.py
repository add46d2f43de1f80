"""Create the demo data: a researcher account, a rater account, the demo prompt sets, the demo models and
the demo comparison run.

Idempotent: running it again changes nothing that exists. Passwords come from DEMO_ADMIN_PASSWORD /
DEMO_RATER_PASSWORD (defaults are for a local demo only and are printed).

Demo models: every checkpoint directly inside demo_models/ (or --models-dir) whose config.json "format" is one
of generation.contract's checkpoint formats (an in-house MM-DiT or a UNet baseline) is registered under its
folder name. With at least two of them, the demo comparison run (all of them on the demo prompt set, seeds
0 and 1, 28 steps, guidance 4, 32x32) is created once and its jobs are sent to the gpu queue.
"""

import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.catalog.prompt_files import PromptRow, read_prompt_file
from evalsite.catalog.services import create_prompt_set
from evalsite.rating.models import Campaign, Rater
from evalsite.runs.models import ComparisonRun
from evalsite.runs.services import create_run
from generation import contract

PARTI_PROMPTS = Path(settings.BASE_DIR) / "data" / "PartiPrompts.tsv"
DEMO_SET = "Demo shapes, positions and words"
DEMO_MODELS_DIR = Path(settings.BASE_DIR) / "demo_models"
DEMO_RUN = "Demo comparison"
DEMO_RUN_SEEDS = [0, 1]
DEMO_CAMPAIGN = "Demo campaign"
# Steps and size are the run's; the guidance stays each model's own (its recipe's sampler defaults): the MM-DiTs
# sample at 4, the UNet baseline at 1, and forced to 4 the baseline draws no background at all (0% on held-out
# shapes, docs/demo-model.md), which would make the demo's baseline worse than it is.
DEMO_RUN_SETTINGS = {"steps": 28, "height": 32, "width": 32}


def demo_checkpoints(directory: Path) -> list[tuple[str, str, Path, dict]]:
    """(name, kind, path, meta) of every image-model checkpoint directly inside `directory`, by name."""
    found = []
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        config = path / contract.CONFIG_FILE
        if not config.is_file():
            continue
        try:
            meta = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        kind = contract.KIND_OF_CHECKPOINT_FORMAT.get(meta.get("format")) if isinstance(meta, dict) else None
        if kind is not None:
            found.append((path.name, kind, path.resolve(), meta))
    return found


def sampler_settings_from(meta: dict) -> dict:
    """A checkpoint's own sampler defaults (recipe.sampler_defaults) at its training resolution."""
    recipe = meta.get("recipe") or {}
    size = int(recipe.get("image_size") or (meta.get("config") or {}).get("sample_size") or 32)
    recommended = recipe.get("sampler_defaults") or {}
    defaults = {k: v for k, v in recommended.items() if k in contract.RECIPE_SAMPLER_KEYS}
    return {**contract.DEFAULT_SAMPLER_SETTINGS, **defaults, "height": size, "width": size}


def demo_prompt_rows() -> list[PromptRow]:
    """Prompts of the procedural demo domain, whose images the checker can score from pixels."""
    from generation.demo_domain import demo_prompt_rows as rows

    return [
        PromptRow(
            line=i + 1,
            text=r["text"],
            category=r["category"],
            challenge=r["challenge"],
            note=r["note"],
            needs_text=r["needs_text"],
            rendered_text=r["rendered_text"],
        )
        for i, r in enumerate(rows())
    ]


class Command(BaseCommand):
    help = "Create demo users, prompt sets, models and the demo comparison run (safe to run more than once)."

    def add_arguments(self, parser):
        parser.add_argument("--models-dir", default=str(DEMO_MODELS_DIR), help="where the demo checkpoints are")
        parser.add_argument("--no-run", action="store_true", help="register the demo models, start no run")

    def handle(self, **options):
        with transaction.atomic():
            self._users()
            if not PromptSet.objects.filter(name="PartiPrompts").exists():
                create_prompt_set(
                    "PartiPrompts",
                    read_prompt_file(PARTI_PROMPTS),
                    source_file=str(PARTI_PROMPTS),
                    description="PartiPrompts (Yu et al. 2022), Apache 2.0.",
                )
            if not PromptSet.objects.filter(name=DEMO_SET).exists():
                create_prompt_set(
                    DEMO_SET,
                    demo_prompt_rows(),
                    source_file="generation.demo_domain",
                    description="Procedural demo domain; prompts marked held-out were never trained on.",
                )
        for prompt_set in PromptSet.objects.all():
            self.stdout.write(f"prompt set {prompt_set.name!r}: {prompt_set.prompts.count()} prompts")
        models = self._models(Path(options.get("models_dir") or DEMO_MODELS_DIR))
        if not options.get("no_run"):
            self._demo_run(models)
            self._demo_campaign()

    def _models(self, directory: Path) -> list[ImageModel]:
        models = []
        for name, kind, path, meta in demo_checkpoints(directory):
            recipe = meta.get("recipe") or {}
            description = f"Demo checkpoint {path.name}: {recipe.get('objective', kind)}"
            if recipe.get("steps_done"):
                description += f", {recipe['steps_done']} training steps"
            model, created = ImageModel.objects.get_or_create(
                name=name,
                defaults={
                    "kind": kind,
                    "source": str(path),
                    "sampler_settings": sampler_settings_from(meta),
                    "description": description,
                },
            )
            if not created and (model.kind, model.source) != (kind, str(path)):
                self.stderr.write(f"model {name!r} exists with another source ({model.source}); left as it is")
                continue
            models.append(model)
            self.stdout.write(f"model {name!r} ({kind}) {'registered' if created else 'present'}: {path}")
        return models

    def _demo_run(self, models: list[ImageModel]) -> None:
        existing = ComparisonRun.objects.filter(name=DEMO_RUN).first()
        if existing is not None:
            progress = existing.progress()
            self.stdout.write(
                f"demo run {existing.pk} exists: {existing.status}, "
                f"{progress.get('done', 0)}/{progress['total']} images"
            )
            return
        if len(models) < 2:
            self.stdout.write(f"demo run not started: {len(models)} demo model(s) found in demo_models/, 2 needed")
            return
        planned = create_run(
            name=DEMO_RUN,
            prompt_set=PromptSet.objects.get(name=DEMO_SET),
            image_models=models,
            seeds=DEMO_RUN_SEEDS,
            sampler_overrides=DEMO_RUN_SETTINGS,
        )
        self.stdout.write(
            f"demo run {planned.run.pk} started: {len(models)} models, {planned.new_images} images "
            f"in {len(planned.job_ids)} jobs on the gpu queue (progress: /runs/{planned.run.pk}/)"
        )

    def _demo_campaign(self) -> None:
        """A rating campaign on the demo run that the demo rater can vote on as soon as images exist."""
        run = ComparisonRun.objects.filter(name=DEMO_RUN).first()
        if run is None:
            return
        campaign, created = Campaign.objects.get_or_create(
            name=DEMO_CAMPAIGN, run=run, defaults={"votes_per_pair": 3, "gold_rate": 0.1}
        )
        campaign.raters.add(*Rater.objects.filter(user__username="rater"))
        self.stdout.write(
            f"campaign {campaign.pk} {'created' if created else 'present'}: rate at "
            f"/rate/{campaign.pk}/, invite link /join/{campaign.invite_token}"
        )

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
