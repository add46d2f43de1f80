"""Create a comparison run and send its jobs to the gpu queue.

    manage.py create_run --name "demo" --prompt-set "Demo shapes, positions and words" \
        --models mmdit-demo,unet-baseline --seeds 4 --steps 28 --guidance 4 --resolution 32
"""

from django.core.management.base import BaseCommand, CommandError

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.runs import services
from evalsite.runs.forms import parse_numbers, select_prompts


class Command(BaseCommand):
    help = "Create a comparison run (models x prompts x seeds) and dispatch its generation jobs."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--prompt-set", required=True, help="name of the prompt set")
        parser.add_argument("--models", required=True, help="comma-separated model names")
        parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
        parser.add_argument("--first-seed", type=int, default=0)
        parser.add_argument("--prompts", default="", help="subset by position, e.g. 0-9,15")
        parser.add_argument("--categories", default="", help="subset by category, comma-separated")
        parser.add_argument("--steps", type=int)
        parser.add_argument("--guidance", type=float, help="classifier-free guidance scale")
        parser.add_argument("--shift", type=float, help="timestep shift (flow models)")
        parser.add_argument("--resolution", type=int, help="height = width in pixels")
        parser.add_argument("--batch-size", type=int, help="images per generation job")
        parser.add_argument("--no-dispatch", action="store_true", help="create the rows only (the sweeper sends later)")

    def handle(self, *args, **opts):
        prompt_set = PromptSet.objects.filter(name=opts["prompt_set"]).first()
        if prompt_set is None:
            known = ", ".join(PromptSet.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no prompt set named {opts['prompt_set']!r} (known: {known})")
        names = [n.strip() for n in opts["models"].split(",") if n.strip()]
        models = {m.name: m for m in ImageModel.objects.filter(name__in=names)}
        missing = [n for n in names if n not in models]
        if missing:
            raise CommandError(f"unknown model(s): {', '.join(missing)}")
        if opts["seeds"] < 1 or opts["first_seed"] < 0:
            raise CommandError("--seeds must be at least 1 and --first-seed not negative")
        overrides = {}
        if opts["resolution"]:
            overrides["height"] = overrides["width"] = opts["resolution"]
        for key, option in [("steps", "steps"), ("guidance_scale", "guidance"), ("shift", "shift")]:
            if opts[option] is not None:
                overrides[key] = opts[option]
        try:
            prompts = select_prompts(
                prompt_set,
                parse_numbers(opts["prompts"]),
                [c.strip() for c in opts["categories"].split(",") if c.strip()],
            )
            planned = services.create_run(
                name=opts["name"],
                prompt_set=prompt_set,
                image_models=[models[n] for n in names],
                prompts=prompts or None,
                seeds=list(range(opts["first_seed"], opts["first_seed"] + opts["seeds"])),
                sampler_overrides=overrides,
                batch_size=opts["batch_size"],
                dispatch=not opts["no_dispatch"],
            )
        except ValueError as e:  # RunError and bad prompt selections
            raise CommandError(str(e)) from None
        self.stdout.write(
            f"run {planned.run.pk} {planned.run.name!r}: {planned.new_images} images in "
            f"{len(planned.job_ids)} jobs, {planned.reused_images} reused"
        )
