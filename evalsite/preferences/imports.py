"""Importing pairwise preference data gathered elsewhere: another instance's votes export, or a plain CSV.

Two file shapes are read, told apart by their columns:

1. A votes export of a T2I Arena instance (the campaign dashboard's "votes" export, or the API's
   /dashboards/api/campaigns/<id>/votes) in any of its formats: .csv, .json (records) or .parquet. The
   schema is evalsite.dashboards.data.VOTE_COLUMNS; required are model_a, model_b, criterion and winner
   (or choice: left / right / tie / both_bad). Everything else the export carries (rater, flags, gold
   checks, prompt, category, challenge, seed, seconds, created_at, vote_id) comes along when present.

2. Preference data from anywhere else, a CSV with a header row:

       prompt     the prompt's text
       image_a    the first image (the one shown on the left, if there was a left): a file name, URL or id
       image_b    the second image
       winner     a / b / tie / both_bad   (image_a / image_b and model_a / model_b are read as a / b)
       criterion  optional: aesthetics, prompt_following, typography, or your own word (default: --criterion)
       model_a, model_b   optional: the models that made image_a and image_b
       rater, seed        optional

   Without model_a/model_b, each image is looked up on this instance: an image token (the images export's
   image_token) or, for a file next to the CSV, the file whose content was imported with import_images
   (matched by its sha256). An image that names no model is a broken row.

Importing is all-or-nothing, like prompt files and image manifests: every row is checked first, and any
broken row raises PreferenceFileError listing each problem with its line (CSV) or record number; nothing is
stored. The same file imported twice is one set (matched by its sha256): the second import changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from django.db import IntegrityError, transaction

from evalsite.preferences.models import PreferenceSet, PreferenceVote
from evalsite.runs.models import Image

FORMATS = ("csv", "json", "jsonl", "parquet")
MAX_BYTES = 512 * 1024 * 1024
MAX_ROWS = 2_000_000
MAX_LISTED_ERRORS = 50
EXPORT_REQUIRED = ("model_a", "model_b", "criterion")
PAIRS_REQUIRED = ("prompt", "image_a", "image_b", "winner")
CHOICE_WINNER = {"left": "model_a", "right": "model_b", "tie": "tie", "both_bad": "both_bad"}
WINNER_VALUES = ("model_a", "model_b", "tie", "both_bad")
PAIRS_WINNER = {
    "a": "model_a",
    "image_a": "model_a",
    "model_a": "model_a",
    "b": "model_b",
    "image_b": "model_b",
    "model_b": "model_b",
    "tie": "tie",
    "both_bad": "both_bad",
}
CRITERION_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TRUE, FALSE = {"true", "1", "yes", "t"}, {"false", "0", "no", "f"}
MODEL_LENGTH = PreferenceVote._meta.get_field("model_a").max_length
IMAGE_LENGTH = PreferenceVote._meta.get_field("image_a").max_length
TEXT_LENGTHS = {
    f: PreferenceVote._meta.get_field(f).max_length for f in ("rater", "participant", "category", "challenge")
}


class PreferenceFileError(ValueError):
    """The file cannot be imported; `errors` are (where, message), where "" for the file as a whole."""

    def __init__(self, name: str, errors: list[tuple[str, str]]):
        self.name = name
        self.errors = errors
        shown = errors[:MAX_LISTED_ERRORS]
        lines = [f"  {where}: {message}" if where else f"  {message}" for where, message in shown]
        if len(errors) > len(shown):
            lines.append(f"  ... and {len(errors) - len(shown)} more")
        super().__init__(f"{name}: {len(errors)} problem(s); nothing was imported.\n" + "\n".join(lines))


class RowError(ValueError):
    pass


@dataclass
class ImportResult:
    preference_set: PreferenceSet
    created: bool  # False: this very file was imported before, as preference_set

    @property
    def n_votes(self) -> int:
        return self.preference_set.n_votes


# ---- reading the file -------------------------------------------------------------------------------------


def file_format(name: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise PreferenceFileError(name, [("", f"unknown file type {suffix!r}; use one of .{', .'.join(FORMATS)}")])
    return suffix


def read_rows(data: bytes, name: str) -> tuple[list[str], Iterator[tuple[str, int, dict]]]:
    """(columns, rows): each row as (where, number, {column: value}); `where` names it in messages."""
    fmt = file_format(name)
    if fmt == "csv":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PreferenceFileError(name, [("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns

        def csv_rows():
            for row in reader:
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    row["__extra__"] = extra
                yield f"line {reader.line_num}", reader.line_num, row

        return columns, csv_rows()
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        elif fmt == "jsonl":
            frame = pd.read_json(io.BytesIO(data), lines=True, orient="records", dtype=False)
        else:
            frame = pd.read_json(io.BytesIO(data), orient="records", dtype=False)
    except (ValueError, OSError) as exc:  # pyarrow's and json's errors are ValueError / OSError subclasses
        raise PreferenceFileError(name, [("", f"cannot be read as {fmt}: {exc}")]) from None
    records = frame.to_dict(orient="records")
    return [str(c) for c in frame.columns], ((f"record {i}", i, r) for i, r in enumerate(records, start=1))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def text(value, limit: int | None = None, what: str = "") -> str:
    out = "" if _missing(value) else str(value).strip()
    if limit is not None and len(out) > limit:
        raise RowError(f"{what} is longer than {limit} characters")
    return out


def boolean(value, what: str, default: bool | None = None) -> bool | None:
    if _missing(value) or value == "":
        return default
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise RowError(f"{what} {value!r} is not true or false")


def integer(value, what: str) -> int | None:
    if _missing(value) or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, int) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        result = int(number)
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"{what} {value!r} is not a whole number") from None
    if not -(2**63) <= result < 2**63:
        raise RowError(f"{what} {value!r} is out of range")
    return result


def seconds_of(row: dict) -> float | None:
    for column, scale in (("seconds", 1.0), ("time_taken_ms", 1000.0)):
        value = row.get(column)
        if _missing(value) or value == "":
            continue
        try:
            number = float(value) / scale
        except (TypeError, ValueError):
            raise RowError(f"{column} {value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise RowError(f"{column} {value!r} is not a duration")
        return number
    return None


def timestamp(value) -> datetime | None:
    if _missing(value) or value == "":
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise RowError(f"created_at {value!r} is not a date and time") from None
    if pd.isna(stamp):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(UTC)
    return stamp.to_pydatetime()


def criterion_of(value, default: str | None) -> str:
    criterion = text(value).lower() or (default or "")
    if not criterion:
        raise RowError("criterion is empty")
    if not CRITERION_PATTERN.match(criterion):
        raise RowError(f"criterion {criterion!r} must be a lower-case word of letters, digits and _ (at most 40)")
    return criterion


def model_name(value, what: str) -> str:
    name = text(value, MODEL_LENGTH, what)
    if not name:
        raise RowError(f"{what} is empty")
    return name


# ---- the two shapes ---------------------------------------------------------------------------------------


def export_vote(row: dict, number: int, default_criterion: str | None) -> PreferenceVote:
    """One row of a votes export."""
    winner = text(row.get("winner"))
    choice = text(row.get("choice"))
    if choice and choice not in CHOICE_WINNER:
        raise RowError(f"choice {choice!r} is not one of {', '.join(CHOICE_WINNER)}")
    if winner and winner not in WINNER_VALUES:
        raise RowError(f"winner {winner!r} is not one of {', '.join(WINNER_VALUES)}")
    if not winner and not choice:
        raise RowError("neither winner nor choice is given")
    if winner and choice and CHOICE_WINNER[choice] != winner:
        raise RowError(f"choice {choice!r} and winner {winner!r} disagree")
    is_gold = bool(boolean(row.get("is_gold"), "is_gold", False))
    model_a, model_b = model_name(row.get("model_a"), "model_a"), model_name(row.get("model_b"), "model_b")
    if model_a == model_b and not is_gold:  # a gold check may show two images of one model
        raise RowError(f"compares model {model_a!r} with itself")
    criterion = criterion_of(row.get("criterion"), default_criterion)
    image_a = text(row.get("image_left", row.get("image_a")), IMAGE_LENGTH, "image_left")
    image_b = text(row.get("image_right", row.get("image_b")), IMAGE_LENGTH, "image_right")
    side = text(row.get("gold_correct_side"))
    if side not in ("", "left", "right"):
        raise RowError(f"gold_correct_side {side!r} is not left or right")
    return PreferenceVote(
        line=number,
        source_vote_id=integer(row.get("vote_id"), "vote_id"),
        criterion=criterion,
        winner=winner or CHOICE_WINNER[choice],
        model_a=model_a,
        model_b=model_b,
        image_a=image_a,
        image_b=image_b,
        item=text(row.get("item"), 600, "item") or pair_item(image_a or model_a, image_b or model_b, criterion),
        prompt=text(row.get("prompt")),
        category=text(row.get("category"), TEXT_LENGTHS["category"], "category") or "(none)",
        challenge=text(row.get("challenge"), TEXT_LENGTHS["challenge"], "challenge") or "(none)",
        seed=integer(row.get("seed"), "seed"),
        rater=text(row.get("rater"), TEXT_LENGTHS["rater"], "rater"),
        participant=text(row.get("participant"), TEXT_LENGTHS["participant"], "participant"),
        # a rater the other instance held for review or rejected counts nowhere there, and so nowhere here
        rater_flagged=bool(boolean(row.get("rater_flagged"), "rater_flagged", False))
        or bool(boolean(row.get("rater_held"), "rater_held", False)),
        rater_simulated=bool(boolean(row.get("rater_simulated"), "rater_simulated", False)),
        is_gold=is_gold,
        gold_correct=boolean(row.get("gold_correct"), "gold_correct"),
        gold_correct_side=side,
        seconds=seconds_of(row),
        created_at=timestamp(row.get("created_at")),
    )


def pair_item(image_a: str, image_b: str, criterion: str) -> str:
    """The judged question: the unordered image pair on one criterion (so a swapped showing is the same)."""
    first, second = sorted((image_a, image_b))
    return f"{first}|{second}:{criterion}"[:600]


class ImageModels:
    """Which model made an image named in a pairs CSV: by image token, or by the content of a file next to
    the CSV that import_images stored (its original sha256)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.cache: dict[str, str | None] = {}

    def model_of(self, reference: str) -> str | None:
        if reference not in self.cache:
            self.cache[reference] = self._look_up(reference)
        return self.cache[reference]

    def _look_up(self, reference: str) -> str | None:
        found = Image.objects.filter(token=reference).values_list("model__name", flat=True).first()
        if found is None and self.folder is not None:
            path = (self.folder / reference).resolve()
            if path.is_relative_to(self.folder.resolve()) and path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                names = set(Image.objects.filter(original_sha256=digest).values_list("model__name", flat=True))
                found = names.pop() if len(names) == 1 else None
        return found


def pairs_vote(row: dict, number: int, default_criterion: str | None, images: ImageModels) -> PreferenceVote:
    """One row of a pairwise CSV."""
    prompt = text(row.get("prompt"))
    if not prompt:
        raise RowError("prompt is empty")
    image_a = text(row.get("image_a"), IMAGE_LENGTH, "image_a")
    image_b = text(row.get("image_b"), IMAGE_LENGTH, "image_b")
    if not image_a or not image_b:
        raise RowError("image_a and image_b must both be given")
    if image_a == image_b:
        raise RowError(f"image_a and image_b are the same image {image_a!r}")
    raw_winner = text(row.get("winner")).lower()
    if raw_winner not in PAIRS_WINNER:
        raise RowError(f"winner {raw_winner!r} is not one of a, b, tie, both_bad")
    criterion = criterion_of(row.get("criterion"), default_criterion)
    models = []
    for side, image in (("a", image_a), ("b", image_b)):
        given = text(row.get(f"model_{side}"), MODEL_LENGTH, f"model_{side}")
        found = given or images.model_of(image)
        if not found:
            raise RowError(
                f"image_{side} {image!r} names no image this instance knows (an image token, or a file next to "
                f"the CSV that import_images stored); add model_a and model_b columns"
            )
        models.append(found)
    if models[0] == models[1]:
        raise RowError(f"both images are by model {models[0]!r}: a pair of one model says nothing about models")
    return PreferenceVote(
        line=number,
        criterion=criterion,
        winner=PAIRS_WINNER[raw_winner],
        model_a=models[0],
        model_b=models[1],
        image_a=image_a,
        image_b=image_b,
        item=pair_item(image_a, image_b, criterion),
        prompt=prompt,
        seed=integer(row.get("seed"), "seed"),
        rater=text(row.get("rater"), TEXT_LENGTHS["rater"], "rater"),
    )


def detect_source(columns: list[str], name: str) -> str:
    have = set(columns)
    if {"image_a", "image_b"} <= have:
        missing = [c for c in PAIRS_REQUIRED if c not in have]
        if missing:
            raise PreferenceFileError(name, [("", f"a pairwise CSV needs column(s) {missing}; it has {columns}")])
        return PreferenceSet.Source.PAIRS
    if {"model_a", "model_b"} <= have:
        missing = [c for c in EXPORT_REQUIRED if c not in have]
        if not ({"winner", "choice"} & have):
            missing.append("winner (or choice)")
        if missing:
            raise PreferenceFileError(name, [("", f"a votes export needs column(s) {missing}; it has {columns}")])
        return PreferenceSet.Source.EXPORT
    raise PreferenceFileError(
        name,
        [
            (
                "",
                f"columns {columns} are neither a votes export (model_a, model_b, criterion, winner, ...) nor a "
                f"pairwise CSV (prompt, image_a, image_b, winner[, criterion])",
            )
        ],
    )


def parse(
    data: bytes, name: str, *, default_criterion: str | None = None, folder: Path | None = None
) -> tuple[str, list[PreferenceVote]]:
    """(source, votes) of a file, or PreferenceFileError with every broken row."""
    if len(data) > MAX_BYTES:
        raise PreferenceFileError(name, [("", f"larger than {MAX_BYTES // 2**20} MiB")])
    columns, rows = read_rows(data, name)
    source = detect_source(columns, name)
    images = ImageModels(folder)
    votes: list[PreferenceVote] = []
    errors: list[tuple[str, str]] = []
    seen_ids: dict[int, str] = {}
    for where, number, row in rows:
        if len(votes) + len(errors) >= MAX_ROWS:
            errors.append(("", f"more than {MAX_ROWS:,} rows; split the file"))
            break
        try:
            if row.get("__extra__"):
                raise RowError("has more fields than the header")
            if source == PreferenceSet.Source.EXPORT:
                vote = export_vote(row, number, default_criterion)
            else:
                vote = pairs_vote(row, number, default_criterion, images)
            if vote.source_vote_id is not None:
                if vote.source_vote_id in seen_ids:
                    raise RowError(f"vote_id {vote.source_vote_id} is also on {seen_ids[vote.source_vote_id]}")
                seen_ids[vote.source_vote_id] = where
        except RowError as exc:
            errors.append((where, str(exc)))
            continue
        votes.append(vote)
    if errors:
        raise PreferenceFileError(name, errors)
    if not votes:
        raise PreferenceFileError(name, [("", "holds no votes")])
    return source, votes


# ---- storing ----------------------------------------------------------------------------------------------


def import_preferences(
    data: bytes,
    filename: str,
    *,
    name: str | None = None,
    description: str = "",
    default_criterion: str | None = None,
    folder: Path | None = None,
    user=None,
) -> ImportResult:
    """Check every row of `data` (the file's bytes; `filename` gives its type), then store it as one set.

    folder: where the file lies (a pairs CSV may name image files next to it); None for an upload."""
    digest = hashlib.sha256(data).hexdigest()
    existing = PreferenceSet.objects.filter(sha256=digest).first()
    if existing is not None:
        return ImportResult(existing, created=False)
    name = (name or Path(filename).stem).strip()
    if not name:
        raise PreferenceFileError(filename, [("", "the set needs a name")])
    if PreferenceSet.objects.filter(name=name).exists():
        raise PreferenceFileError(
            filename, [("", f"a preference set named {name!r} already holds another file; choose another name")]
        )
    source, votes = parse(data, filename, default_criterion=default_criterion, folder=folder)
    try:
        with transaction.atomic():
            preference_set = PreferenceSet.objects.create(
                name=name,
                source=source,
                filename=Path(filename).name[:255],
                sha256=digest,
                description=description,
                n_votes=len(votes),
                imported_by=user if user is not None and user.is_authenticated else None,
            )
            for vote in votes:
                vote.preference_set = preference_set
            PreferenceVote.objects.bulk_create(votes, batch_size=5000)
    except IntegrityError:  # the same file or name imported at the same moment by someone else
        existing = PreferenceSet.objects.filter(sha256=digest).first()
        if existing is not None:
            return ImportResult(existing, created=False)
        raise PreferenceFileError(filename, [("", f"a preference set named {name!r} was just created")]) from None
    return ImportResult(preference_set, created=True)


def import_file(path: str | Path, **options) -> ImportResult:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PreferenceFileError(str(path), [("", f"cannot be read: {exc.strerror or exc}")]) from None
    return import_preferences(data, path.name, folder=path.parent, **options)
