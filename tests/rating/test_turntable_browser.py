"""A real browser (Debian's chromium through Playwright) rates a text-to-3D pair: both turntables turn by
themselves, each slider turns its object to the chosen view (and stops it there), the three 3D questions fit a
390x844 phone screen with both objects side by side, and the votes are stored. Screenshots at a desktop and a
phone viewport go to test-artifacts/ (copies of a run are in docs/images/)."""

from __future__ import annotations

import io
import os

import pytest
import torch
from django.core.files.base import ContentFile

from evalsite.catalog.models import ImageModel
from evalsite.rating.models import Campaign, Vote
from evalsite.runs.models import ComparisonRun, Image
from generation import contract
from generation.backends import turntable_strip
from generation.threed import Asset, AssetSettings, FieldConfig, VoxelField, render_turntable
from generation.threed.field import grid_coordinates
from tests.rating.test_browser import (  # noqa: F401 - browser_page is a fixture
    ARTIFACTS,
    CHROMIUM,
    browser_page,
    ready_rater,
    sign_in_to_rate,
    wait_for_pair,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"),
]
VIEWS = contract.TURNTABLE_VIEWS
PROMPT = "a red circle on a blue background"


def constructed_turntable(shape: str) -> bytes:
    """The turntable PNG of a constructed field: a red L-shaped block (it looks different from every side) or a
    red ball, on blue, rendered by generation.threed at 64x64 per view."""
    vox = VoxelField(FieldConfig(resolution=32), generator=torch.Generator().manual_seed(0))
    x, y, z = grid_coordinates(32, 1.0).unbind(-1)
    if shape == "block":
        bar = (x > -0.6) & (x < 0.5) & (y > -0.5) & (y < -0.2) & (z.abs() < 0.3)
        post = (x > 0.2) & (x < 0.5) & (y > -0.5) & (y < 0.6) & (z.abs() < 0.3)
        solid = bar | post
    else:
        solid = x**2 + y**2 + z**2 < 0.5**2
    vox.set_density(30.0 * solid.float())
    with torch.no_grad():
        vox.albedo_logit.copy_(torch.tensor([4.0, -4.0, -4.0]).view(3, 1, 1, 1).expand_as(vox.albedo_logit))
        vox.background_logit.copy_(torch.tensor([-4.0, -4.0, 4.0]))
    asset = Asset(field=vox, settings=AssetSettings(field=FieldConfig(resolution=32)), prompt=PROMPT, seed=0)
    out = io.BytesIO()
    turntable_strip(render_turntable(asset, n_views=VIEWS, size=64)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def campaign_3d(db, media_root, make_prompt_set):
    prompt_set = make_prompt_set(texts=[PROMPT])
    prompt = prompt_set.prompts.get()
    run = ComparisonRun.objects.create(name="3d", prompt_set=prompt_set, seeds=[0], status=ComparisonRun.Status.DONE)
    for shape in ("block", "ball"):
        model = ImageModel.objects.create(name=f"3d {shape}", kind=contract.TEXT_TO_3D, source="/priors/x")
        run.image_models.add(model)
        image = Image(
            run=run,
            model=model,
            prompt=prompt,
            seed=0,
            sampler_settings=model.sampler_settings,
            status=Image.Status.DONE,
            width=VIEWS * 64,
            height=64,
        )
        image.file.save("ignored.png", ContentFile(constructed_turntable(shape)), save=False)
        image.save()
    return Campaign.objects.create(name="3d campaign", run=run, gold_rate=0.0)


def frames(page) -> list[int]:
    return page.eval_on_selector_all(".pair figure", "figs => figs.map(f => Number(f.dataset.frame))")


def shown_offset(page, side: str) -> float:
    """How many view widths the strip is moved left inside its window: the view on screen."""
    return page.evaluate(
        """([side, views]) => { const img = document.getElementById('image-' + side).getBoundingClientRect();
                     const viewer = document.querySelector('#figure-' + side + ' .viewer').getBoundingClientRect();
                     return (viewer.left - img.left) / (img.width / views); }""",
        [side, VIEWS],
    )


def assert_fits(page, width: int, height: int) -> None:
    """Prompt, both square viewers side by side, both sliders, all three questions (the active one with its
    four choices) and the submit button inside the viewport, without scrolling."""
    selectors = {
        "prompt": "#prompt",
        "left": "#figure-left .viewer",
        "right": "#figure-right .viewer",
        "turn-left": "#turn-left",
        "turn-right": "#turn-right",
        "submit": "#submit",
    }
    boxes = {name: page.locator(sel).bounding_box() for name, sel in selectors.items()}
    questions = page.locator(".question")
    assert questions.count() == 3
    boxes.update({f"question {i}": questions.nth(i).bounding_box() for i in range(3)})
    choices = page.locator(".question.active .choice")
    assert choices.count() == 4
    boxes.update({f"choice {i}": choices.nth(i).bounding_box() for i in range(4)})
    for name, box in boxes.items():
        assert box is not None, f"{name} is not shown"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (name, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= height + 0.5, (name, box)
    assert abs(boxes["left"]["y"] - boxes["right"]["y"]) < 1  # side by side
    assert abs(boxes["left"]["width"] - boxes["left"]["height"]) < 1  # one square view, not the strip
    assert min(boxes["left"]["width"], boxes["right"]["width"]) >= width / 3


def test_a_rater_turns_both_turntables_and_answers_the_three_3d_questions(
    live_server,
    campaign_3d,
    make_rater,
    browser_page,  # noqa: F811 - the fixture imported above
):
    page = browser_page
    rater = ready_rater(make_rater, campaign_3d, "turntable-rater")
    sign_in_to_rate(page, live_server, campaign_3d, "turntable-rater")
    shown = wait_for_pair(page)

    labels = page.eval_on_selector_all(".question legend", "ls => ls.map(l => l.textContent)")
    assert len(labels) == 3 and "Seen from all sides" in labels[0] and "Turning all the way round" in labels[2]
    assert page.is_visible("#turn-left") and page.is_visible("#turn-right")
    # both turn by themselves, in step, and what is on screen is the view the figure says
    page.wait_for_function("() => [...document.querySelectorAll('.pair figure')].every(f => f.dataset.frame >= 2)")
    first = frames(page)
    page.wait_for_timeout(1000)
    assert frames(page) != first
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "rater-3d-desktop-1280x800.png"), full_page=True)

    # the left slider turns the left object to view 5 and stops it there; the right one keeps turning
    page.fill("#turn-left", "5")
    page.wait_for_timeout(1200)
    left, right = frames(page)
    assert left == 5 and shown_offset(page, "left") == pytest.approx(5, abs=0.01)
    right_before = right
    page.wait_for_timeout(600)
    assert frames(page)[1] != right_before
    # with the slider focused its arrow keys turn the object (and answer nothing); the answer keys still answer
    page.focus("#turn-left")
    page.keyboard.press("ArrowRight")
    assert frames(page)[0] == 6 and page.locator(".question.answered").count() == 0
    page.keyboard.press("1")
    assert page.locator(".question.answered").count() == 1
    # tapping the object lets it turn again
    page.click("#figure-left .viewer")
    page.wait_for_function("() => document.getElementById('figure-left').dataset.frame !== '5'")

    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    page.fill("#turn-right", "2")
    assert_fits(page, 390, 844)
    page.screenshot(path=str(ARTIFACTS / "rater-3d-phone-390x844.png"), full_page=True)
    expected = {"prompt_following": "left"}  # answered with the key "1" above
    for choice in ("tie", "right"):
        criterion = page.get_attribute(".question.active", "data-criterion")
        page.locator(f".question.active .choice[data-choice={choice}]").click()
        expected[criterion] = choice
        assert page.evaluate("window.scrollY") == 0
    assert set(expected) == {"prompt_following", "aesthetics", "multiview_consistency"}
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('rater').dataset.state === 'done'")

    from django.db import connection

    try:
        assert dict(Vote.objects.filter(rater=rater).values_list("criterion", "choice")) == expected
        assert Vote.objects.get(rater=rater, criterion="prompt_following").assignment_id.hex == shown.replace("-", "")
    finally:
        connection.close()
