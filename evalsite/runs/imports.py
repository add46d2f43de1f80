"""Importing images made elsewhere (an API, another lab's model) into a comparison run, from a manifest.

A manifest is CSV (a header row) or JSON Lines (one object per line) with these fields:

    model       the model's name; a name the catalog does not know becomes a new model of kind `external`
    prompt      the prompt's text exactly as in the prompt set, or its id
    seed        optional whole number (default 0): a model's images of one prompt are told apart by seed, and
                campaigns pair images of the same prompt and seed first
    path        the image file, relative to the manifest's folder
    provenance  optional, where the image came from in your words, e.g. "API, 2026-11, quality=hd"

Importing is all-or-nothing, like prompt files (evalsite.catalog.prompt_files): every row is checked first
(the file exists and is a readable PNG / JPEG / WebP / GIF / BMP / TIFF of at most MAX_PIXELS pixels, the
prompt is in the run's prompt set, no model/prompt/seed twice, nothing already imported with other content),
and any broken row raises ManifestError listing each problem with its line number; nothing is stored. Then,
in one transaction, each image is stored as the platform's own PNG (RGB, pixels only) under an unguessable
name, as a done Image row with no job, empty sampler settings, the sha256 of the original file and its
provenance. An image already imported from the same file is left alone, so importing a manifest again
changes nothing.

Imports only catalog and runs (and Pillow): no torch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageCms, UnidentifiedImageError

from evalsite.catalog.models import ImageModel, Prompt, PromptSet
from evalsite.runs.display import FITS
from evalsite.runs.models import IMAGE_SIZE_RANGE, ComparisonRun, Image, settings_hash
from evalsite.runs.services import write_image_file

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("model", "prompt", "path")
OPTIONAL_FIELDS = ("seed", "provenance")
MAX_PIXELS = 8192 * 8192  # larger images are refused as possible decompression bombs
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # what Pillow may open (never EPS, which runs gs)
IMPORTED_SETTINGS: dict = {}  # imported images record no sampler settings; this is part of their identity
MAX_SEED = 2**63
MIN_DISPLAY_SIZE, MAX_DISPLAY_SIZE = IMAGE_SIZE_RANGE
SRGB = ImageCms.createProfile("sRGB")
NAME_LENGTH = ImageModel._meta.get_field("name").max_length
PROVENANCE_LENGTH = Image._meta.get_field("provenance").max_length


@dataclass(frozen=True)
class ManifestRow:
    line: int
    model: str
    prompt: str | int  # the prompt's text, or its id
    seed: int
    path: str
    provenance: str = ""


class ManifestError(ValueError):
    """The manifest cannot be imported; `errors` are (line, message), line 0 for the manifest as a whole."""

    def __init__(self, path: str, errors: list[tuple[int, str]]):
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  line {line}: {message}" if line else f"  {message}" for line, message in errors)
        super().__init__(f"{path}: {len(errors)} problem(s); nothing was imported.\n{lines}")


@dataclass
class ImportResult:
    run: ComparisonRun
    run_created: bool = False
    models_created: list[str] = field(default_factory=list)
    imported: int = 0  # new images stored
    reused: int = 0  # images imported into another run before, now part of this one too
    unchanged: int = 0  # rows already in this run with the same file


# ------------------------------------------------------------------------------------------------------------
# Reading the manifest


def _seed(value) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to 2**63-1, got {value!r}")
    return value


def _row(line: int, record: dict) -> ManifestRow:
    """One manifest row from its fields; ValueError says what is wrong with it."""
    missing = [name for name in REQUIRED_FIELDS if record.get(name) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    model, prompt, path = record["model"], record["prompt"], record["path"]
    provenance = record.get("provenance") or ""
    if not isinstance(model, str) or not isinstance(path, str) or not isinstance(provenance, str):
        raise ValueError("model, path and provenance must be text")
    if not isinstance(prompt, str) and (not isinstance(prompt, int) or isinstance(prompt, bool)):
        raise ValueError(f"prompt must be the prompt's text or its id, got {prompt!r}")
    model, provenance = model.strip(), provenance.strip()
    if len(model) > NAME_LENGTH:
        raise ValueError(f"model names have at most {NAME_LENGTH} characters")
    if len(provenance) > PROVENANCE_LENGTH:
        raise ValueError(f"provenance has at most {PROVENANCE_LENGTH} characters")
    text = prompt.strip() if isinstance(prompt, str) else prompt
    return ManifestRow(line, model, text, _seed(record.get("seed")), path.strip(), provenance)


def _check_fields(names) -> str | None:
    unknown = [n for n in names if n not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
    if unknown:
        fields = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
        return f"unknown field(s) {', '.join(map(repr, unknown))}; a row has {fields}"
    return None


def _csv_records(content: str) -> Iterator[tuple[int, dict | str]]:
    """(line, fields by name) per row, or (line, problem)."""
    reader = csv.reader(io.StringIO(content), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        yield 1, f"cannot parse the header: {exc}"
        return
    problem = _check_fields(header) or next(
        (f"the header has no {name!r} column (found {header})" for name in REQUIRED_FIELDS if name not in header), None
    )
    if problem:
        yield 1, problem
        return
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, f"malformed CSV: {exc}"
            return
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield reader.line_num, f"expected {len(header)} fields, found {len(fields)}"
        else:
            yield reader.line_num, dict(zip(header, fields, strict=True))


def _jsonl_records(content: str) -> Iterator[tuple[int, dict | str]]:
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:
            yield number, f"not JSON: {exc}"
            continue
        if not isinstance(record, dict):
            yield number, "a JSON Lines row must be an object"
            continue
        yield number, _check_fields(record) or record


READERS = {".csv": _csv_records, ".jsonl": _jsonl_records, ".ndjson": _jsonl_records}


def parse_manifest(path: str | Path) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    """The well-formed rows and (line, problem) for the others; ManifestError when the file cannot be read."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ManifestError(str(path), [(0, f"unknown manifest type {path.suffix!r}; use .csv or .jsonl")])
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ManifestError(str(path), [(0, f"cannot read the manifest: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ManifestError(str(path), [(line, "not valid UTF-8")]) from None
    rows, errors = [], []
    for line, record in reader(content):
        if isinstance(record, str):
            errors.append((line, record))
            continue
        try:
            rows.append(_row(line, record))
        except ValueError as exc:
            errors.append((line, str(exc)))
    if not errors and not rows:
        errors = [(1, "no rows in the manifest")]
    return rows, errors


# ------------------------------------------------------------------------------------------------------------
# Reading the images


def decode_image(data: bytes) -> PILImage.Image:
    """The image as RGB pixels; ValueError with a readable reason when it is not an image, too large or broken."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            image = PILImage.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:
            raise ValueError(f"not an image (readable formats: {', '.join(IMAGE_FORMATS)})") from None
        except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
            raise ValueError(f"more than {MAX_PIXELS:,} pixels: refused as a possible decompression bomb") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # e.g. cut off inside its header
            raise ValueError(f"unreadable image: {exc}") from None
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ValueError(
                f"{width}x{height} is more than {MAX_PIXELS:,} pixels: refused as a possible decompression bomb"
            )
        try:
            image.load()
            return _srgb(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ValueError(f"unreadable image: {exc}") from None


def _srgb(image: PILImage.Image) -> PILImage.Image:
    """RGB pixels with the embedded colour profile applied (to sRGB) and nothing else: no profile, EXIF or text
    goes along, since what a file carries besides its pixels can name the system that made it."""
    profile = image.info.get("icc_profile")
    rgb = None
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            rgb = ImageCms.profileToProfile(image, source, SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            log.warning("could not apply an embedded colour profile; the pixels are taken as sRGB")
    if rgb is None:
        rgb = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA", "PA") else image.convert("RGB")
    clean = PILImage.new("RGB", rgb.size)
    clean.paste(rgb)
    return clean


def png_of(image: PILImage.Image) -> bytes:
    """The platform's own PNG of the image: RGB pixels only (no metadata names where it came from)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _file_of(folder: Path, relative: str) -> Path:
    """The manifest row's file, which must lie inside the manifest's folder."""
    if Path(relative).is_absolute():
        raise ValueError(f"path {relative!r} must be relative to the manifest's folder")
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ValueError(f"path {relative!r} leads outside the manifest's folder")
    if not target.exists():
        raise ValueError(f"file not found: {relative}")
    if not target.is_file():
        raise ValueError(f"not a file: {relative}")
    return target


def _read(target: Path, relative: str) -> bytes:
    try:
        return target.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {relative}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------------------------
# Checking every row against the database


@dataclass
class _Checked:
    row: ManifestRow
    file: Path
    prompt: Prompt
    sha256: str
    existing: Image | None  # the same image imported before from the same file


def _find_run(run_name: str, prompt_set_name: str | None) -> tuple[ComparisonRun | None, PromptSet]:
    """The run named run_name (None: it is to be created) and the prompt set its images belong to."""
    runs = list(ComparisonRun.objects.filter(name=run_name).select_related("prompt_set")[:2])
    if len(runs) > 1:
        raise ValueError(f"more than one run is named {run_name!r}; give the run a unique name")
    run = runs[0] if runs else None
    if run is not None:
        if prompt_set_name and prompt_set_name != run.prompt_set.name:
            raise ValueError(
                f"the run {run_name!r} is on the prompt set {run.prompt_set.name!r}, not {prompt_set_name!r}"
            )
        return run, run.prompt_set
    if not prompt_set_name:
        raise ValueError(f"there is no run named {run_name!r}: give its prompt set (--prompt-set) to create it")
    prompt_set = PromptSet.objects.filter(name=prompt_set_name).first()
    if prompt_set is None:
        raise ValueError(f"no prompt set named {prompt_set_name!r}")
    return None, prompt_set


class _Prompts:
    """The prompts a row may name: by exact text or by id."""

    def __init__(self, run: ComparisonRun | None, prompt_set: PromptSet):
        allowed = run.selected_prompts() if run is not None else prompt_set.prompts.all()
        self.by_id = {p.pk: p for p in allowed}
        self.by_text: dict[str, list[Prompt]] = {}
        for p in self.by_id.values():
            self.by_text.setdefault(p.text.strip(), []).append(p)
        self.where = f"the run {run.name!r}" if run is not None else f"the prompt set {prompt_set.name!r}"

    def find(self, wanted: str | int) -> Prompt:
        matches = self.by_text.get(wanted, []) if isinstance(wanted, str) else []
        if len(matches) > 1:
            ids = ", ".join(str(p.pk) for p in matches)
            raise ValueError(f"{len(matches)} prompts of {self.where} have this text (ids {ids}); give the id")
        if matches:
            return matches[0]
        key = int(wanted) if isinstance(wanted, str) and wanted.isascii() and wanted.isdigit() else wanted
        if isinstance(key, int) and key in self.by_id:
            return self.by_id[key]
        shown = wanted if isinstance(wanted, int) else repr(wanted[:80])
        raise ValueError(f"unknown prompt: {shown} is neither the text nor the id of a prompt of {self.where}")


def _check_rows(
    rows: list[ManifestRow], folder: Path, run: ComparisonRun | None, prompt_set: PromptSet
) -> tuple[list[_Checked], list[tuple[int, str]]]:
    prompts = _Prompts(run, prompt_set)
    known = {m.name: m for m in ImageModel.objects.filter(name__in={r.model for r in rows})}
    digest = settings_hash(IMPORTED_SETTINGS)
    before = {
        (i.model.name, i.prompt_id, i.seed): i
        for i in Image.objects.filter(model__in=known.values(), settings_hash=digest).select_related("model", "run")
    }
    checked, errors, seen = [], [], {}
    for row in rows:
        try:
            model = known.get(row.model)
            if model is not None and model.generates:
                raise ValueError(
                    f"model {row.model!r} is a {model.get_kind_display()} model; only external models take imported "
                    f"images (name the imported model differently)"
                )
            prompt = prompts.find(row.prompt)
            key = (row.model, prompt.pk, row.seed)
            if key in seen:
                raise ValueError(
                    f"model {row.model!r}, this prompt and seed {row.seed} are already on line {seen[key]}"
                )
            seen[key] = row.line
            target = _file_of(folder, row.path)
            data = _read(target, row.path)
            sha = hashlib.sha256(data).hexdigest()
            existing = before.get(key)
            if existing is None or existing.original_sha256 != sha:  # the same file decoded when it came first
                decode_image(data)
            if existing is not None and existing.original_sha256 != sha:
                raise ValueError(
                    f"model {row.model!r}, this prompt and seed {row.seed} are already imported with other content "
                    f"(in the run {existing.run.name!r})"
                )
            checked.append(_Checked(row, target, prompt, sha, existing))
        except ValueError as exc:
            errors.append((row.line, str(exc)))
    return checked, errors


# ------------------------------------------------------------------------------------------------------------
# Importing


def import_manifest(
    path: str | Path,
    run_name: str,
    *,
    prompt_set_name: str | None = None,
    created_by=None,
    source: str | None = None,
    image_size: int | None = None,
    image_fit: str | None = None,
) -> ImportResult:
    """Import the manifest's images into the run named run_name, or into a new run on prompt_set_name.

    Raises ManifestError (nothing stored) when anything is wrong. `source` is what a new external model records
    as its source (default: the manifest's path). `image_size` and `image_fit`, when given, become the run's way
    of showing its images (evalsite.runs.display: the square side, crop or letterbox)."""
    path = Path(path)
    run_name = (run_name or "").strip()
    if not run_name:
        raise ManifestError(str(path), [(0, "give the run's name")])
    if image_size is not None and not MIN_DISPLAY_SIZE <= image_size <= MAX_DISPLAY_SIZE:
        raise ManifestError(str(path), [(0, f"the image size must be {MIN_DISPLAY_SIZE} to {MAX_DISPLAY_SIZE} pixels")])
    if image_fit is not None and image_fit not in FITS:
        raise ManifestError(str(path), [(0, f"the fit must be one of {', '.join(FITS)}, not {image_fit!r}")])
    rows, malformed = parse_manifest(path)
    try:
        run, prompt_set = _find_run(run_name, prompt_set_name)
    except ValueError as exc:
        raise ManifestError(str(path), [(0, str(exc))]) from None
    checked, errors = _check_rows(rows, path.parent, run, prompt_set)
    if malformed or errors:  # every broken row at once, in file order
        raise ManifestError(str(path), sorted(malformed + errors))
    written: list[str] = []
    try:
        with transaction.atomic():
            result = _store(checked, run, run_name, prompt_set, created_by, source or str(path), written)
            shown = {"image_size": image_size, "image_fit": image_fit}
            shown = {field: value for field, value in shown.items() if value is not None}
            if shown:
                ComparisonRun.objects.filter(pk=result.run.pk).update(**shown)
    except IntegrityError:
        _remove(written)
        raise ManifestError(
            str(path), [(0, "another import stored some of these models or images at the same time; import again")]
        ) from None
    except BaseException:
        _remove(written)
        raise
    log.info(
        "import %s into run %s: %d images imported, %d reused, %d unchanged",
        path,
        result.run.pk,
        result.imported,
        result.reused,
        result.unchanged,
    )
    return result


def _store(checked, run, run_name, prompt_set, created_by, source, written) -> ImportResult:
    """Create the run and models that are missing and the images that are new; `written` collects file names."""
    if run is None:
        run = ComparisonRun.objects.create(
            name=run_name,
            prompt_set=prompt_set,
            seeds=sorted({c.row.seed for c in checked}),
            created_by=created_by,
        )
        used = {c.prompt.pk for c in checked}
        if used != set(prompt_set.prompts.values_list("id", flat=True)):
            run.prompts.set(used)
        result = ImportResult(run, run_created=True)
    else:
        result = ImportResult(run)
    models = {m.name: m for m in ImageModel.objects.filter(name__in={c.row.model for c in checked})}
    for name in dict.fromkeys(c.row.model for c in checked):
        if name not in models:
            models[name] = ImageModel.objects.create(
                name=name,
                kind=ImageModel.Kind.EXTERNAL,
                source=source[:500],
                sampler_settings={},
                description=f"External model: images imported with manage.py import_images from {source}",
            )
            result.models_created.append(name)
    new_models = set(models.values()) - set(run.image_models.all())
    if new_models:
        run.image_models.add(*new_models)
    in_run = set(run.all_images().filter(model__in=models.values()).values_list("id", flat=True))
    now, digest, new_images, reused = timezone.now(), settings_hash(IMPORTED_SETTINGS), [], []
    for c in checked:
        if c.existing is not None:
            if c.existing.pk in in_run:
                result.unchanged += 1
            else:
                reused.append(c.existing.pk)
            continue
        # Decoded again rather than kept from the check: holding every decoded image of a large manifest until
        # all rows pass would cost memory in proportion to the whole import.
        image = decode_image(c.file.read_bytes())
        row = Image(
            run=run,
            model=models[c.row.model],
            prompt=c.prompt,
            seed=c.row.seed,
            sampler_settings=IMPORTED_SETTINGS,
            settings_hash=digest,
            width=image.width,
            height=image.height,
            status=Image.Status.DONE,
            finished_at=now,
            original_sha256=c.sha256,
            provenance=c.row.provenance,
        )
        row.file.name = write_image_file(row, png_of(image))
        written.append(row.file.name)
        new_images.append(row)
    Image.objects.bulk_create(new_images)
    if reused:
        run.reused_images.add(*reused)
    result.imported, result.reused = len(new_images), len(reused)
    if result.run_created or new_models or new_images or reused:
        run.refresh_status()
    return result


def _remove(names: list[str]) -> None:
    storage = Image._meta.get_field("file").storage
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            log.exception("could not remove %s after a failed import", name)


# ------------------------------------------------------------------------------------------------------------
# A .zip upload (the runs pages): the manifest and its images in one archive

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
MAX_ZIP_MEMBERS = 20_000


def import_zip(
    upload,
    run_name: str,
    *,
    prompt_set_name: str | None = None,
    created_by=None,
    max_bytes: int | None = None,
    image_size: int | None = None,
    image_fit: str | None = None,
) -> ImportResult:
    """Import an uploaded .zip that holds one manifest.csv or manifest.jsonl (at its root or in one folder) and the
    images it names, relative to the manifest. The archive is unpacked into a temporary folder with its sizes
    counted as it is read (at most max_bytes in all: a zip bomb is refused, whatever its headers claim); members
    that would land outside that folder are refused. Raises ManifestError, with nothing stored, like
    import_manifest."""
    label = getattr(upload, "name", None) or "the upload"
    limit = max_bytes if max_bytes is not None else settings.EVALSITE_IMPORT_MAX_BYTES
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ManifestError(label, [(0, "not a .zip file")]) from None
    with archive, tempfile.TemporaryDirectory(prefix="evalsite-import-") as folder:
        manifest = _unpack(archive, Path(folder), label, limit)
        return import_manifest(
            manifest,
            run_name,
            prompt_set_name=prompt_set_name,
            created_by=created_by,
            source=f"upload {label}",
            image_size=image_size,
            image_fit=image_fit,
        )


def _unpack(archive: zipfile.ZipFile, folder: Path, label: str, limit: int) -> Path:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise ManifestError(label, [(0, f"more than {MAX_ZIP_MEMBERS:,} files in the archive")])
    manifests = [m for m in members if PurePosixPath(m.filename).name.lower() in MANIFEST_NAMES]
    if len(manifests) != 1:
        found = ", ".join(m.filename for m in manifests) or "none"
        wanted = " or ".join(MANIFEST_NAMES)
        raise ManifestError(label, [(0, f"the archive must hold exactly one {wanted}; found {found}")])
    total = 0
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise ManifestError(label, [(0, f"{member.filename!r} would be unpacked outside the archive's folder")])
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise ManifestError(label, [(0, f"{member.filename!r} is a symbolic link; give the file itself")])
        target = folder.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.open(member) as source, target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise ManifestError(label, [(0, f"the archive unpacks to more than {limit:,} bytes")])
                    out.write(chunk)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
            # e.g. a CRC mismatch, an encrypted member or an unsupported compression method
            raise ManifestError(label, [(0, f"cannot unpack {member.filename!r}: {exc}")]) from None
    return folder.joinpath(*PurePosixPath(manifests[0].filename).parts)
