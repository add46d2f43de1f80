"""Import pairwise preference data gathered elsewhere as a preference set, analysed like a campaign.

    manage.py import_votes campaign-3-votes.parquet --name "Lab B, Demo campaign"
    manage.py import_votes outside/judgements.csv --criterion aesthetics

Two shapes are read: a votes export of a T2I Arena instance (.csv, .json or .parquet) and a pairwise CSV
(prompt, image_a, image_b, winner[, criterion][, model_a, model_b]); see evalsite/preferences/imports.py.
Nothing is imported when any row is broken; the error lists each broken row with its line number. The same
file imported again changes nothing.
"""

from django.core.management.base import BaseCommand, CommandError

from evalsite.preferences.imports import PreferenceFileError, import_file


class Command(BaseCommand):
    help = "Import a votes export or a pairwise preference CSV as a preference set."

    def add_arguments(self, parser):
        parser.add_argument("file", help="a .csv, .json, .jsonl or .parquet file")
        parser.add_argument("--name", help="the set's name (default: the file's name without its extension)")
        parser.add_argument("--criterion", help="criterion of rows that name none (a pairwise CSV without one)")
        parser.add_argument("--description", default="", help="where the data came from, in your words")

    def handle(self, *args, **opts):
        try:
            result = import_file(
                opts["file"], name=opts["name"], default_criterion=opts["criterion"], description=opts["description"]
            )
        except PreferenceFileError as exc:
            raise CommandError(str(exc)) from None
        found = result.preference_set
        if result.created:
            self.stdout.write(f"Imported {found.n_votes} vote(s) as preference set {found.pk} {found.name!r}.")
        else:
            self.stdout.write(
                f"Unchanged: this file was imported before as preference set {found.pk} {found.name!r} "
                f"({found.n_votes} votes)."
            )
