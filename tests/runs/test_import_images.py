"""Importing images made elsewhere: real files in the formats outside systems deliver (JPEG with EXIF and a
colour profile, PNG with text chunks, WebP, other sizes), an external model that never generates, a re-import
that changes nothing, every broken row refused with its line number and nothing stored, and imported and
generated models rated in one campaign through the rater API."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from PIL import Image as PILImage
from PIL import ImageCms, PngImagePlugin

from evalsite.catalog.models import ImageModel
from evalsite.rating.models import Assignment, Vote
from evalsite.runs.imports import ManifestError, import_manifest
from evalsite.runs.models import ComparisonRun, Image
from generation import backends, contract

RED_CIRCLE = "a red circle on a blue background"
GREEN_SQUARE = "a green square on a white background"


def picture(size=(64, 64), colour=(200, 30, 30)) -> PILImage.Image:
    image = PILImage.new("RGB", size, (20, 40, 200))
    w, h = size
    image.paste(colour, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return image


def jpeg_with_exif_and_profile(size=(1024, 1024)) -> bytes:
    exif = PILImage.Exif()
    exif[0x0131] = "OutsideSystem v6"  # Software
    exif[0x010F] = "Outside Lab"  # Make
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    picture(size).save(buffer, "JPEG", exif=exif, icc_profile=profile, quality=90)
    return buffer.getvalue()


def png_with_text(size=(1792, 1024)) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "prompt: a red circle, sampler: secret-sampler, model: outside-xl")
    buffer = io.BytesIO()
    picture(size, colour=(30, 200, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def webp(size=(512, 512)) -> bytes:
    buffer = io.BytesIO()
    picture(size).save(buffer, "WEBP", quality=80)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (what a decompression bomb looks like before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def write_manifest(folder: Path, rows: list[dict], kind="csv", files: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    if kind == "jsonl":
        path = folder / "manifest.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "prompt", "seed", "path", "provenance"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def prompt_set(make_prompt_set, media_root):
    return make_prompt_set()


@pytest.fixture
def outside(tmp_path):
    """Three outside systems' originals, each in its own format, size and metadata."""
    files = {"a.jpg": jpeg_with_exif_and_profile(), "b.png": png_with_text(), "c.webp": webp()}
    rows = [
        {"model": "outside-jpeg", "prompt": RED_CIRCLE, "seed": 0, "path": "a.jpg", "provenance": "API, 2026-11, hd"},
        {"model": "outside-png", "prompt": RED_CIRCLE, "seed": 0, "path": "b.png", "provenance": "web page"},
        {"model": "outside-webp", "prompt": GREEN_SQUARE, "seed": 1, "path": "c.webp"},
    ]
    return write_manifest(tmp_path / "outside", rows, files=files)


def stored_files(media_root: Path) -> list[Path]:
    return [p for p in Path(media_root).rglob("*") if p.is_file()]


def test_an_import_creates_the_run_and_external_models_and_stores_clean_pngs(prompt_set, outside, media_root):
    result = import_manifest(outside, "study", prompt_set_name=prompt_set.name)

    assert result.run_created and result.imported == 3 and result.reused == result.unchanged == 0
    assert sorted(result.models_created) == ["outside-jpeg", "outside-png", "outside-webp"]
    assert set(ImageModel.objects.values_list("kind", flat=True)) == {contract.EXTERNAL}
    run = ComparisonRun.objects.get(name="study")
    assert run.status == ComparisonRun.Status.DONE and run.seeds == [0, 1]
    assert sorted(run.image_models.values_list("name", flat=True)) == sorted(result.models_created)
    images = {i.model.name: i for i in Image.objects.in_run(run).select_related("model")}
    assert (images["outside-png"].width, images["outside-png"].height) == (1792, 1024)
    assert images["outside-jpeg"].provenance == "API, 2026-11, hd" and images["outside-webp"].provenance == ""
    assert images["outside-jpeg"].original_sha256 == hashlib.sha256((outside.parent / "a.jpg").read_bytes()).hexdigest()
    for image in images.values():
        assert image.status == Image.Status.DONE and image.job_id is None and image.sampler_settings == {}
        with image.file.open("rb") as handle:
            data = handle.read()
        served = PILImage.open(io.BytesIO(data))
        assert served.format == "PNG" and served.mode == "RGB"
        assert served.info == {} and not served.getexif(), f"metadata left in {image.model.name}: {served.info}"
        assert b"OutsideSystem" not in data and b"secret-sampler" not in data and b"iCCP" not in data
        assert served.getpixel((served.width // 2, served.height // 2))[2] < 100  # the object's pixels survive


def test_importing_the_same_manifest_again_changes_nothing(prompt_set, outside, media_root):
    import_manifest(outside, "study", prompt_set_name=prompt_set.name)
    files = sorted(stored_files(media_root))
    rows = list(Image.objects.order_by("pk").values_list("pk", "file", "original_sha256"))

    again = import_manifest(outside, "study")

    assert (again.run_created, again.models_created, again.imported, again.reused, again.unchanged) == (
        False,
        [],
        0,
        0,
        3,
    )
    assert sorted(stored_files(media_root)) == files
    assert list(Image.objects.order_by("pk").values_list("pk", "file", "original_sha256")) == rows
    assert ComparisonRun.objects.count() == 1 and ImageModel.objects.count() == 3


def test_a_second_run_reuses_the_images_already_imported(prompt_set, outside, media_root):
    import_manifest(outside, "first", prompt_set_name=prompt_set.name)
    second = import_manifest(outside, "second", prompt_set_name=prompt_set.name)
    assert (second.imported, second.reused) == (0, 3)
    assert Image.objects.count() == 3
    assert Image.objects.in_run(ComparisonRun.objects.get(name="second")).count() == 3


BROKEN = {
    "missing file": ({"path": "nowhere.png"}, {}, "file not found: nowhere.png"),
    "not an image": ({"path": "notes.png"}, {"notes.png": b"these are notes, not pixels"}, "not an image"),
    "unreadable image": ({"path": "cut.jpg"}, {"cut.jpg": jpeg_with_exif_and_profile((256, 256))[:400]}, "unreadable"),
    "decompression bomb": ({"path": "bomb.png"}, {"bomb.png": png_claiming(100_000, 100_000)}, "decompression bomb"),
    "unknown prompt": ({"prompt": "a purple hexagon"}, {}, "unknown prompt"),
    "outside the folder": ({"path": "../secret.png"}, {}, "outside the manifest's folder"),
    "bad seed": ({"seed": "-3"}, {}, "seed must be a whole number"),
    "missing model": ({"model": ""}, {}, "missing model"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_row_is_refused_with_its_line_number_and_nothing_is_stored(kind, prompt_set, tmp_path, media_root):
    change, extra_files, message = BROKEN[kind]
    good = {"model": "outside", "prompt": RED_CIRCLE, "seed": 0, "path": "good.webp"}
    rows = [good, {**good, "seed": 1, **change}, {**good, "prompt": GREEN_SQUARE}]
    manifest = write_manifest(tmp_path / "m", rows, files={"good.webp": webp((64, 64)), **extra_files})

    with pytest.raises(ManifestError) as caught:
        import_manifest(manifest, "study", prompt_set_name=prompt_set.name)

    assert [line for line, _ in caught.value.errors] == [3], caught.value.errors  # header is line 1
    assert message in caught.value.errors[0][1]
    assert "line 3" in str(caught.value) and "nothing was imported" in str(caught.value)
    assert not Image.objects.exists() and not ComparisonRun.objects.exists() and not ImageModel.objects.exists()
    assert stored_files(media_root) == []


def test_a_duplicate_model_prompt_seed_names_both_lines(prompt_set, tmp_path, media_root):
    good = {"model": "outside", "prompt": RED_CIRCLE, "seed": 0, "path": "good.webp"}
    rows = [good, {**good, "prompt": GREEN_SQUARE}, good]
    manifest = write_manifest(tmp_path / "m", rows, files={"good.webp": webp()})
    with pytest.raises(ManifestError) as caught:
        import_manifest(manifest, "study", prompt_set_name=prompt_set.name)
    assert caught.value.errors == [(4, "model 'outside', this prompt and seed 0 are already on line 2")]
    assert not Image.objects.exists()


def test_every_broken_row_is_listed_at_once_in_json_lines(prompt_set, tmp_path, media_root):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "good.webp").write_bytes(webp())
    (folder / "manifest.jsonl").write_text(
        json.dumps({"model": "outside", "prompt": RED_CIRCLE, "path": "good.webp"})
        + "\n{not json\n"
        + json.dumps({"model": "outside", "prompt": 999_999, "path": "good.webp", "seed": 2})
        + "\n"
        + json.dumps({"model": "outside", "prompt": RED_CIRCLE, "path": "good.webp", "colour": "red"})
        + "\n"
    )
    with pytest.raises(ManifestError) as caught:
        import_manifest(folder / "manifest.jsonl", "study", prompt_set_name=prompt_set.name)
    assert [line for line, _ in caught.value.errors] == [2, 3, 4]
    assert "not JSON" in caught.value.errors[0][1] and "unknown prompt: 999999" in caught.value.errors[1][1]
    assert "unknown field(s) 'colour'" in caught.value.errors[2][1]
    assert not Image.objects.exists()


def test_a_prompt_may_be_named_by_its_id(prompt_set, tmp_path, media_root):
    prompt = prompt_set.prompts.get(text=GREEN_SQUARE)
    rows = [{"model": "outside", "prompt": prompt.pk, "path": "x.webp"}]
    manifest = write_manifest(tmp_path / "m", rows, kind="jsonl", files={"x.webp": webp()})
    import_manifest(manifest, "study", prompt_set_name=prompt_set.name)
    assert Image.objects.get().prompt == prompt


def test_a_model_that_generates_cannot_take_imported_images(prompt_set, tmp_path, media_root):
    ImageModel.objects.create(name="mmdit", kind=ImageModel.Kind.INHOUSE, source="/checkpoints/mmdit")
    manifest = write_manifest(
        tmp_path / "m", [{"model": "mmdit", "prompt": RED_CIRCLE, "path": "x.webp"}], files={"x.webp": webp()}
    )
    with pytest.raises(ManifestError, match="only external models take imported images"):
        import_manifest(manifest, "study", prompt_set_name=prompt_set.name)


def test_an_external_model_never_loads_on_a_worker():
    with pytest.raises(backends.ModelLoadError, match="never generates"):
        backends.load_backend(contract.EXTERNAL, "manifest.csv")


def test_the_command_reports_what_it_did_and_refuses_a_broken_manifest(prompt_set, outside, tmp_path, media_root):
    out = io.StringIO()
    call_command("import_images", str(outside), "--run", "study", "--prompt-set", prompt_set.name, stdout=out)
    assert "3 image(s) imported" in out.getvalue() and "outside-jpeg, outside-png, outside-webp" in out.getvalue()

    broken = write_manifest(tmp_path / "broken", [{"model": "x", "prompt": RED_CIRCLE, "path": "gone.png"}])
    with pytest.raises(CommandError, match="line 2: file not found: gone.png"):
        call_command("import_images", str(broken), "--run", "study")
    with pytest.raises(CommandError, match="give its prompt set"):
        call_command("import_images", str(outside), "--run", "no such run")


def test_imported_and_generated_models_are_rated_in_one_campaign(make_run, tmp_path, media_root, rater_client):
    run = make_run(n_models=1, seeds=(0,), name="mixed")
    generated = run.image_models.get()
    prompts = list(run.prompt_set.prompts.order_by("position"))
    rows = [{"model": "outside", "prompt": p.text, "seed": 0, "path": "x.webp"} for p in prompts]
    manifest = write_manifest(tmp_path / "m", rows, kind="jsonl", files={"x.webp": webp((48, 48))})
    assert import_manifest(manifest, "mixed").imported == len(prompts)

    client, campaign = rater_client(run)
    seen_models = set()
    for index in range(len(prompts)):
        body = client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]
        choices = {c["key"]: "left" for c in body["criteria"]}
        vote = {"idempotency_key": f"key-{index:04d}", "choices": choices, "time_taken_ms": 4000}
        response = client.post(body["votes_url"], json.dumps(vote), content_type="application/json")
        assert response.status_code == 201, response.content
        assignment = Assignment.objects.get(pk=body["id"])
        seen_models |= {assignment.image_left.model.name, assignment.image_right.model.name}
    assert seen_models == {generated.name, "outside"}
    assert Vote.objects.filter(assignment__campaign=campaign).count() >= len(prompts) * 2


@pytest.fixture
def rater_client(make_rater, make_campaign):
    from django.test import Client
    from django.utils import timezone

    def make(run):
        rater = make_rater("rater")
        rater.instructions_seen_at = timezone.now()
        rater.save()
        campaign = make_campaign(raters=[rater], run=run, gold_rate=0.0, votes_per_pair=1)
        client = Client()
        client.force_login(rater.user)
        return client, campaign

    return make


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def upload(staff_client, data: bytes, run="uploaded", prompt_set=None):
    form = {"archive": SimpleUploadedFile("outside.zip", data), "run_name": run}
    if prompt_set is not None:
        form["prompt_set"] = prompt_set.pk
    return staff_client.post("/runs/import", form)


def test_staff_upload_a_zip_into_a_new_run(staff_client, prompt_set, outside, media_root):
    members = {f"outside/{p.name}": p.read_bytes() for p in outside.parent.iterdir()}
    response = upload(staff_client, zip_of(members), prompt_set=prompt_set)
    run = ComparisonRun.objects.get(name="uploaded")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert Image.objects.in_run(run).count() == 3
    assert ImageModel.objects.get(name="outside-webp").source == "upload outside.zip"
    page = staff_client.get(response["Location"]).content.decode()
    assert "Imported 3 images" in page and "outside-jpeg" in page
    assert "Import images made elsewhere" in staff_client.get("/runs/").content.decode()


@pytest.mark.parametrize(
    "members, message",
    [
        ({"manifest.csv": b"model,prompt,path\noutside,a purple hexagon,x.webp\n"}, "line 2: unknown prompt"),
        ({"x.webp": b"no manifest here"}, "exactly one manifest.csv or manifest.jsonl; found none"),
        ({"manifest.csv": b"model,prompt,path\n", "../escape.png": b"x"}, "outside the archive"),
        (None, "not a .zip file"),
    ],
    ids=["broken row", "no manifest", "path traversal", "not a zip"],
)
def test_a_broken_upload_lists_its_problems_and_stores_nothing(staff_client, prompt_set, media_root, members, message):
    data = zip_of(members) if members is not None else b"PK\x03\x04 but not really a zip"
    response = upload(staff_client, data, prompt_set=prompt_set)
    assert response.status_code == 400
    assert "Nothing was imported" in response.content.decode() and message in response.content.decode()
    assert not ComparisonRun.objects.exists() and not Image.objects.exists() and stored_files(media_root) == []


def test_a_zip_bomb_is_refused_while_it_unpacks(staff_client, prompt_set, media_root, settings):
    settings.EVALSITE_IMPORT_MAX_BYTES = 1_000_000
    bomb = zip_of({"manifest.csv": b"model,prompt,path\n", "zeros.bin": b"\0" * 5_000_000})
    assert len(bomb) < 20_000
    response = upload(staff_client, bomb, prompt_set=prompt_set)
    assert response.status_code == 400 and "unpacks to more than 1,000,000 bytes" in response.content.decode()


def test_only_staff_may_import(client, make_rater, prompt_set):
    rater = make_rater()
    client.force_login(rater.user)
    assert client.get("/runs/import").status_code == 403
    response = client.post("/runs/import", {"archive": SimpleUploadedFile("x.zip", zip_of({})), "run_name": "r"})
    assert response.status_code == 403 and not ComparisonRun.objects.exists()


def test_an_import_may_state_how_the_run_shows_its_images(prompt_set, outside, media_root):
    from evalsite.runs.display import LETTERBOX_GREY, shown_png

    out = io.StringIO()
    call_command(
        "import_images", str(outside), "--run", "study", "--prompt-set", prompt_set.name,
        "--image-size", "48", "--fit", "letterbox", stdout=out,
    )  # fmt: skip
    run = ComparisonRun.objects.get(name="study")
    assert (run.image_size, run.image_fit) == (48, "letterbox")
    wide = Image.objects.get(model__name="outside-png")  # 1792x1024
    shown = PILImage.open(io.BytesIO(shown_png(wide, run)))
    assert shown.size == (48, 48) and shown.getpixel((24, 1)) == LETTERBOX_GREY
    with pytest.raises(CommandError, match="the image size must be 8 to 4096 pixels"):
        call_command("import_images", str(outside), "--run", "study", "--image-size", "5")


def test_a_zip_upload_may_state_the_run_size(staff_client, prompt_set, outside, media_root):
    members = {f"outside/{p.name}": p.read_bytes() for p in outside.parent.iterdir()}
    form = {
        "archive": SimpleUploadedFile("outside.zip", zip_of(members)),
        "run_name": "sized",
        "prompt_set": prompt_set.pk,
        "image_size": 64,
        "image_fit": "crop",
    }
    assert staff_client.post("/runs/import", form).status_code == 302
    run = ComparisonRun.objects.get(name="sized")
    assert (run.image_size, run.image_fit) == (64, "crop")
