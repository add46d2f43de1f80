"""Writing prompt sets to the database."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from evalsite.catalog.models import Prompt, PromptSet
from evalsite.catalog.prompt_files import PromptRow


class PromptSetExists(ValueError):
    pass


@transaction.atomic
def create_prompt_set(
    name: str, rows: Iterable[PromptRow], *, source_file: str = "", description: str = "", replace: bool = False
) -> PromptSet:
    """Create a prompt set from parsed rows, all at once or not at all."""
    existing = PromptSet.objects.filter(name=name).first()
    if existing is not None:
        if not replace:
            raise PromptSetExists(f"A prompt set named {name!r} already exists (use --replace to overwrite).")
        if existing.runs.exists():
            raise PromptSetExists(f"Prompt set {name!r} is used by comparison runs and cannot be replaced.")
        existing.delete()
    prompt_set = PromptSet.objects.create(name=name, source_file=source_file, description=description)
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set,
            position=i,
            text=row.text,
            category=row.category,
            challenge=row.challenge,
            note=row.note,
            detected_needs_text=row.needs_text,
            needs_text_override=row.needs_text_override,
            rendered_text=row.rendered_text,
        )
        for i, row in enumerate(rows)
    )
    return prompt_set
