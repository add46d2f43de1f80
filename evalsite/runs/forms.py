"""The form a researcher fills in to start a comparison run."""

from __future__ import annotations

from django import forms

from evalsite.catalog.models import ImageModel, Prompt, PromptSet
from evalsite.runs import services
from evalsite.runs.models import IMAGE_FITS, IMAGE_SIZE_RANGE


def parse_numbers(text: str, what: str = "prompt numbers") -> list[int]:
    """'0-3, 7, 9' -> [0, 1, 2, 3, 7, 9]; ValueError with a readable message otherwise."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a number or a range like 3-7") from None
        if first < 0 or last < first:
            raise ValueError(f"{what}: {part!r} is not a valid range")
        if last - first > 100_000:
            raise ValueError(f"{what}: the range {part!r} is too long")
        out.extend(range(first, last + 1))
    return list(dict.fromkeys(out))


def select_prompts(
    prompt_set: PromptSet, numbers: list[int] | None = None, categories: list[str] | None = None
) -> list[Prompt]:
    """The prompts of a set picked by position numbers and/or categories (both empty: [] = the whole set)."""
    if not numbers and not categories:
        return []
    prompts = prompt_set.prompts.all()
    if numbers:
        prompts = prompts.filter(position__in=numbers)
        found = set(prompts.values_list("position", flat=True))
        missing = [n for n in numbers if n not in found]
        if missing:
            raise ValueError(
                f"the prompt set {prompt_set.name!r} has no prompt number(s) "
                f"{', '.join(map(str, missing[:10]))} (numbers go from 0 to "
                f"{prompt_set.prompts.count() - 1})"
            )
    if categories:
        known = {c.lower(): c for c in prompt_set.prompts.values_list("category", flat=True).distinct()}
        unknown = [c for c in categories if c.lower() not in known]
        if unknown:
            raise ValueError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; this set "
                f"has {', '.join(sorted(known.values())) or 'none'}"
            )
        prompts = prompts.filter(category__in=[known[c.lower()] for c in categories])
    chosen = list(prompts.order_by("position"))
    if not chosen:
        raise ValueError("no prompt matches both the numbers and the categories")
    return chosen


class RunForm(forms.Form):
    name = forms.CharField(max_length=200)
    image_models = forms.ModelMultipleChoiceField(
        label="Models", queryset=ImageModel.objects.filter(is_active=True), widget=forms.CheckboxSelectMultiple
    )
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    prompt_numbers = forms.CharField(required=False, help_text="Optional subset by position, e.g. 0-9, 15, 20.")
    categories = forms.CharField(required=False, help_text="Optional, comma-separated, e.g. Animals, Vehicles.")
    seeds_per_prompt = forms.IntegerField(min_value=1, max_value=64, initial=2)
    first_seed = forms.IntegerField(min_value=0, initial=0)
    resolution = forms.IntegerField(
        required=False, min_value=8, max_value=4096, help_text="Height = width in pixels; blank keeps each model's own."
    )
    steps = forms.IntegerField(required=False, min_value=1, max_value=1000, help_text="Blank keeps each model's own.")
    guidance_scale = forms.FloatField(required=False, min_value=0, max_value=100)
    shift = forms.FloatField(required=False, min_value=0.01, max_value=100, help_text="Timestep shift (flow models).")
    batch_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1024,
        help_text="Images per generation job; blank uses the platform default.",
    )

    def overrides(self) -> dict:
        data = self.cleaned_data
        out = {}
        if data.get("resolution"):
            out["height"] = out["width"] = data["resolution"]
        for key in ("steps", "guidance_scale", "shift"):
            if data.get(key) is not None:
                out[key] = data[key]
        return out

    def seeds(self) -> list[int]:
        first = self.cleaned_data["first_seed"]
        return list(range(first, first + self.cleaned_data["seeds_per_prompt"]))

    def clean(self):
        data = super().clean()
        prompt_set = data.get("prompt_set")
        if prompt_set is not None:
            try:
                numbers = parse_numbers(data.get("prompt_numbers") or "")
                categories = [c.strip() for c in (data.get("categories") or "").split(",") if c.strip()]
                data["prompts"] = select_prompts(prompt_set, numbers, categories)
            except ValueError as e:
                self.add_error("prompt_numbers" if "number" in str(e) else "categories", str(e))
        if not self.errors:
            for model in data.get("image_models") or []:
                try:
                    services.effective_settings(model, self.overrides())
                except services.RunError as e:
                    raise forms.ValidationError(str(e)) from None
        return data


class ImportForm(forms.Form):
    """A .zip of images made elsewhere, with a manifest.csv or manifest.jsonl (evalsite.runs.imports)."""

    archive = forms.FileField(
        label="Archive (.zip)",
        help_text="A manifest.csv or manifest.jsonl (model, prompt, seed, path, provenance) and the images it names.",
    )
    run_name = forms.CharField(max_length=200, label="Run", help_text="An existing run's name, or a new one.")
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.all(), required=False, help_text="Needed only when the run is new."
    )
    image_size = forms.IntegerField(
        required=False,
        min_value=IMAGE_SIZE_RANGE[0],
        max_value=IMAGE_SIZE_RANGE[1],
        help_text="Show the run's images as squares of this side.",
    )
    image_fit = forms.ChoiceField(
        required=False,
        choices=[("", "(keep the run's)"), *IMAGE_FITS],
        help_text="How an image of another aspect ratio becomes a square.",
    )
