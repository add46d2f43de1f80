"""Import images made elsewhere (an API, another lab's model) into a comparison run.

    manage.py import_images outside/manifest.csv --run "SD3-style study"
    manage.py import_images outside/manifest.jsonl --run "new run" --prompt-set "Demo shapes, positions and words"

The manifest's format and the checks every row goes through are in evalsite/runs/imports.py. Nothing is
imported when any row is broken; the error lists each broken row with its line number.
"""

from django.core.management.base import BaseCommand, CommandError

from evalsite.runs.display import FITS
from evalsite.runs.imports import ManifestError, import_manifest


class Command(BaseCommand):
    help = "Import a manifest's images (CSV or JSON Lines) into a run; unknown models become external models."

    def add_arguments(self, parser):
        parser.add_argument("manifest", help="a .csv (with a header row) or .jsonl file")
        parser.add_argument("--run", required=True, help="the run's name; created when --prompt-set is given")
        parser.add_argument("--prompt-set", help="the prompt set of a run that does not exist yet")
        parser.add_argument("--image-size", type=int, help="show the run's images as squares of this many pixels")
        parser.add_argument("--fit", choices=FITS, help="how other aspect ratios become squares")

    def handle(self, *args, **opts):
        try:
            result = import_manifest(
                opts["manifest"],
                opts["run"],
                prompt_set_name=opts["prompt_set"],
                image_size=opts["image_size"],
                image_fit=opts["fit"],
            )
        except ManifestError as exc:
            raise CommandError(str(exc)) from None
        run = result.run
        lines = [
            f"{'Created' if result.run_created else 'Updated'} run {run.pk} {run.name!r}: "
            f"{result.imported} image(s) imported, {result.reused} reused from other runs, "
            f"{result.unchanged} unchanged.",
        ]
        if result.models_created:
            lines.append(f"New external model(s): {', '.join(result.models_created)}.")
        self.stdout.write("\n".join(lines))
