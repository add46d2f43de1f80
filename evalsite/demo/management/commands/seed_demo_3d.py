"""The text-to-3D demo (issue 17, item 4): two 3D settings compared on a few prompts, rated like images.

    manage.py seed_demo_3d                  # models, prompts, run (jobs to the gpu queue), campaign; idempotent
    manage.py seed_demo_3d --inline         # ... and make the assets in this process (the gpu task's own body)
    manage.py seed_demo_3d --report         # per prompt and model: views the checker reads right, consistency,
                                            # CPU seconds per asset (from each asset file)

The two settings are score distillation from the demo MM-DiT (demo_models/mmdit-demo) and from its early
snapshot (demo_models/mmdit-demo-step2000), guidance 30, on three shape prompts held out of the demo model's
training, seed 0: 6 assets of 63-70 CPU seconds each (one thread) at the default 800 steps (docs/text-to-3d.md).
`--steps N` makes a quicker, weaker demo under another run name. The campaign "Text-to-3D demo campaign" asks
prompt following, visual quality and multi-view consistency; the simulated crowd rates it through
`bin/process crowd` with CROWD_CAMPAIGN set to that name (EVALSITE_DEMO_3D=1 bin/up does both).
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.catalog.prompt_files import PromptRow
from evalsite.catalog.services import create_prompt_set
from evalsite.rating.models import Campaign, Rater
from evalsite.runs.models import ComparisonRun, Image
from evalsite.runs.services import create_run
from generation import contract

DEMO_3D_SET = "Text-to-3D demo prompts"
# Held out of the demo checkpoint's training (generation.demo_domain's held-out colour combinations), as in
# bench/threed_sds.py.
DEMO_3D_PROMPTS = (
    "a red circle on a blue background",
    "a white square on a green background",
    "a green triangle on a yellow background",
)
DEMO_3D_PRIORS = (("mmdit-demo", "final checkpoint"), ("mmdit-demo-step2000", "early snapshot, step 2000"))
DEMO_3D_RUN = "Text-to-3D demo"
DEMO_3D_CAMPAIGN = "Text-to-3D demo campaign"
DEMO_3D_SEEDS = [0]


def demo_3d_run_name(steps: int) -> str:
    default = int(contract.DEFAULT_THREED_SETTINGS["steps"])
    return DEMO_3D_RUN if steps == default else f"{DEMO_3D_RUN} ({steps} steps)"


class Command(BaseCommand):
    help = "Create (and optionally make and report) the text-to-3D demo: two 3D settings, a run and a campaign."

    def add_arguments(self, parser):
        parser.add_argument("--steps", type=int, default=int(contract.DEFAULT_THREED_SETTINGS["steps"]))
        parser.add_argument("--guidance", type=float, default=float(contract.DEFAULT_THREED_SETTINGS["guidance_scale"]))
        parser.add_argument("--models-dir", default=str(Path(settings.BASE_DIR) / "demo_models"))
        parser.add_argument("--inline", action="store_true", help="make the assets here instead of on a worker")
        parser.add_argument("--report", action="store_true", help="print the checker's figures and CPU times")

    def handle(self, *args, **options):
        if options["steps"] < 1:
            raise CommandError("--steps must be at least 1")
        prompt_set = self._prompt_set()
        models = self._models(Path(options["models_dir"]), options["steps"], options["guidance"])
        run = self._run(prompt_set, models, options["steps"], dispatch=not options["inline"])
        self._campaign(run)
        if options["inline"]:
            self._make_inline(run)
        if options["report"]:
            self.stdout.write(demo_3d_report(run))

    def _prompt_set(self) -> PromptSet:
        existing = PromptSet.objects.filter(name=DEMO_3D_SET).first()
        if existing is not None:
            return existing
        rows = [PromptRow(line=i + 1, text=text, category="shape (held out)") for i, text in enumerate(DEMO_3D_PROMPTS)]
        return create_prompt_set(
            DEMO_3D_SET, rows, source_file="generation.demo_domain", description="Held-out shapes for 3D assets."
        )

    def _models(self, directory: Path, steps: int, guidance: float) -> list[ImageModel]:
        models = []
        for folder, what in DEMO_3D_PRIORS:
            source = (directory / folder).resolve()
            if not (source / contract.CONFIG_FILE).is_file():
                raise CommandError(f"the demo prior {source} is missing")
            sampler = {"steps": steps, "guidance_scale": guidance, "view_size": 64}
            name = f"3D from {folder}, guidance {guidance:g}, {steps} steps"
            model, created = ImageModel.objects.get_or_create(
                name=name,
                defaults={
                    "kind": contract.TEXT_TO_3D,
                    "source": str(source),
                    "sampler_settings": sampler,
                    "description": f"Score distillation from the demo MM-DiT ({what}).",
                },
            )
            self.stdout.write(f"model {name!r} {'registered' if created else 'present'}")
            models.append(model)
        return models

    def _run(self, prompt_set: PromptSet, models: list[ImageModel], steps: int, dispatch: bool) -> ComparisonRun:
        name = demo_3d_run_name(steps)
        existing = ComparisonRun.objects.filter(name=name).first()
        if existing is not None:
            progress = existing.progress()
            self.stdout.write(
                f"3D run {existing.pk} exists: {existing.status}, {progress.get('done', 0)}/{progress['total']}"
            )
            return existing
        planned = create_run(
            name=name, prompt_set=prompt_set, image_models=models, seeds=DEMO_3D_SEEDS, batch_size=1, dispatch=dispatch
        )
        self.stdout.write(
            f"3D run {planned.run.pk} created: {planned.new_images} assets in {len(planned.job_ids)} jobs"
            + (" on the gpu queue" if dispatch else "")
        )
        return planned.run

    def _campaign(self, run: ComparisonRun) -> None:
        name = DEMO_3D_CAMPAIGN if run.name == DEMO_3D_RUN else f"{run.name} campaign"
        campaign, created = Campaign.objects.get_or_create(
            name=name, run=run, defaults={"votes_per_pair": 3, "gold_rate": 0.1}
        )
        campaign.raters.add(*Rater.objects.filter(user__username="rater"))
        self.stdout.write(
            f"campaign {campaign.pk} {'created' if created else 'present'} ({', '.join(campaign.criteria)}): "
            f"rate at /rate/{campaign.pk}/"
        )

    def _make_inline(self, run: ComparisonRun) -> None:
        from evalsite.runs.gpu_tasks import run_job

        for job in run.jobs.exclude(status="done").order_by("id"):
            t0 = time.perf_counter()
            result = run_job(job.pk, task_id=f"inline-{job.pk}-{time.time_ns()}", worker="seed_demo_3d")
            self.stdout.write(f"job {job.pk} ({job.model.name}): {result} in {time.perf_counter() - t0:.1f} s")


def demo_3d_report(run: ComparisonRun) -> str:
    """Per prompt and model: turntable views the checker reads right (background and object colour; and with the
    prompt's shape too), the judge's multi-view consistency, and the asset's CPU seconds (recorded in its file)."""
    from PIL import Image as PILImage

    from generation.checker import check_image
    from generation.demo_judge import SIDE_VIEW_CHECKS, judge_turntable, turntable_views
    from generation.threed import load_asset

    lines = [
        f"{'prompt':<42} {'model':<52} {'views right':>11} {'with shape':>10} {'consistency':>11} "
        f"{'CPU s':>7} {'wall s':>7}"
    ]
    images = run.all_images().filter(status=Image.Status.DONE).select_related("prompt", "model")
    for image in images.order_by("prompt__position", "model__name"):
        with image.file.open("rb") as f:
            picture = PILImage.open(f).convert("RGB")
        views = turntable_views(picture)
        checks = [check_image(v, image.prompt.text) for v in views]
        right = sum(all(r.checks[c] for c in SIDE_VIEW_CHECKS) for r in checks)
        with_shape = sum(r.correct for r in checks)  # the shape too, as a flat picture would show it
        consistency = judge_turntable(picture, image.prompt.text).multiview_consistency or 0.0
        cpu, wall = float("nan"), float("nan")
        if image.asset:
            asset = load_asset(Path(image.asset.path))
            cpu, wall = asset.cpu_seconds, asset.wall_seconds
        lines.append(
            f"{image.prompt.text:<42} {image.model.name:<52} {right:>5}/{len(views):<5} "
            f"{with_shape:>4}/{len(views):<5} {consistency:>11.2f} {cpu:>7.1f} {wall:>7.1f}"
        )
    return "\n".join(lines)
