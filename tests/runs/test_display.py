"""What a rater is shown: every image of a run at the run's one size and in one encoding, whatever model or
outside system made it, so that the response's length and headers cannot name the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from PIL import Image as PILImage

from evalsite.runs import display
from evalsite.runs.models import ComparisonRun, Image


def striped(width: int, height: int) -> PILImage.Image:
    """Left third red, middle green, right third blue: shows what a crop keeps and a letterbox adds."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 3] = (255, 0, 0)
    pixels[:, width // 3 : 2 * width // 3] = (0, 255, 0)
    pixels[:, 2 * width // 3 :] = (0, 0, 255)
    return PILImage.fromarray(pixels)


def test_crop_keeps_the_centre_square_and_letterbox_keeps_everything_on_grey():
    wide = striped(300, 100)
    cropped = display.fit_square(wide, 50, display.CROP)
    assert cropped.size == (50, 50) and cropped.mode == "RGB"
    assert cropped.getpixel((25, 25)) == (0, 255, 0)  # the middle stripe fills the square
    boxed = display.fit_square(wide, 60, display.LETTERBOX)
    assert boxed.size == (60, 60)
    assert boxed.getpixel((30, 2)) == display.LETTERBOX_GREY  # bands above and below
    red, blue = boxed.getpixel((2, 30)), boxed.getpixel((57, 30))
    assert red[0] > 200 and blue[2] > 200  # both outer stripes are still there
    with pytest.raises(ValueError, match="unknown fit"):
        display.fit_square(wide, 50, "stretch")


def test_the_uniform_encoding_has_a_length_that_depends_on_the_size_only():
    rng = np.random.default_rng(0)
    noise = PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    flat = PILImage.new("RGB", (64, 64), (10, 200, 30))
    with_text = PILImage.new("RGB", (64, 64))
    with_text.info["parameters"] = "secret-sampler"
    encoded = [display.uniform_png(p) for p in (noise, flat, with_text)]
    assert len({len(e) for e in encoded}) == 1  # a normal PNG of noise is ~6x the flat one
    for data in encoded:
        png = PILImage.open(io.BytesIO(data))
        assert png.size == (64, 64) and png.info == {} and b"secret" not in data
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(encoded[0]))), np.asarray(noise))  # lossless


@pytest.fixture
def mixed_run(make_prompt_set, media_root):
    """One run, three shapes of image: 32x32, 96x32 and 64x64."""
    from evalsite.catalog.models import ImageModel

    prompt_set = make_prompt_set()
    run = ComparisonRun.objects.create(name="mixed", prompt_set=prompt_set, seeds=[0], status="done")
    made = []
    for (width, height), name in [((32, 32), "a"), ((32, 32), "b"), ((96, 32), "c"), ((64, 64), "d")]:
        model = ImageModel.objects.create(name=name, kind="external", source="m.csv", sampler_settings={})
        image = Image(
            run=run, model=model, prompt=prompt_set.prompts.first(), seed=0, status="done", sampler_settings={}
        )
        image.width, image.height = width, height
        buffer = io.BytesIO()
        striped(width, height).save(buffer, "PNG")
        image.file.save("x.png", ContentFile(buffer.getvalue()), save=False)
        image.save()
        made.append(image)
    return run, made


def test_a_run_shows_every_image_at_its_common_width_unless_it_names_a_size(mixed_run):
    run, images = mixed_run
    assert display.display_size(run) == 32  # two of four images are 32 wide
    shown = [display.shown_png(image, run) for image in images]
    assert len({len(data) for data in shown}) == 1
    assert {PILImage.open(io.BytesIO(data)).size for data in shown} == {(32, 32)}

    run.image_size, run.image_fit = 48, display.LETTERBOX
    run.save()
    wide = PILImage.open(io.BytesIO(display.shown_png(images[2], run)))
    assert wide.size == (48, 48) and wide.getpixel((24, 2)) == display.LETTERBOX_GREY


def test_every_uniform_png_of_a_size_has_the_length_the_head_answer_announces():
    rng = np.random.default_rng(1)
    for size in (16, 32, 100):
        noise = PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        assert len(display.uniform_png(noise)) == display.uniform_length(size)
