from django.core.management.base import BaseCommand, CommandError

from evalsite.catalog.prompt_files import PromptFileError, read_prompt_file
from evalsite.catalog.services import PromptSetExists, create_prompt_set


class Command(BaseCommand):
    help = "Import a prompt set: PartiPrompts TSV, .txt (one prompt per line) or .csv (a 'prompt' column)."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--name", required=True, help="Name of the new prompt set.")
        parser.add_argument("--description", default="")
        parser.add_argument("--replace", action="store_true", help="Replace a prompt set of the same name.")

    def handle(self, path, name, description, replace, **options):
        try:
            rows = read_prompt_file(path)
            prompt_set = create_prompt_set(name, rows, source_file=str(path), description=description, replace=replace)
        except (PromptFileError, PromptSetExists) as exc:
            raise CommandError(str(exc)) from None
        prompts = prompt_set.prompts
        flagged = sum(1 for p in prompts.all() if p.needs_text)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {prompts.count()} prompts into {name!r}: "
                f"{prompts.order_by().values('category').distinct().count()} categories, "
                f"{prompts.order_by().values('challenge').distinct().count()} challenges, "
                f"{flagged} ask for rendered text."
            )
        )
