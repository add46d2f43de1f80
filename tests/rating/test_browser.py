"""A real browser (Debian's chromium through Playwright) logs in as a rater, reads the instructions and votes
on three pairs with the keyboard only; the database then holds exactly those votes. Screenshots of the
rating page at a phone and a desktop viewport go to test-artifacts/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.utils import timezone

from evalsite.rating.models import Vote

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"),
]

# What the rater presses for pairs 1-3, one key per question in order (a third key for typography).
KEYS = [["1", "2", "t"], ["ArrowRight", "b", "ArrowLeft"], ["t", "ArrowLeft", "2"]]
KEY_CHOICE = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "t": "tie", "b": "both_bad"}


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(20_000)
        yield page
        browser.close()


def wait_for_focus(page, selector):
    page.wait_for_function("sel => document.activeElement && document.activeElement.matches(sel)", arg=selector)


def ready_rater(make_rater, campaign, username):
    """A new rater in `campaign` who has seen the instructions (password pw-<username>-1, as make_rater sets)."""
    rater = make_rater(username)
    rater.instructions_seen_at = timezone.now()
    rater.save()
    campaign.raters.add(rater)
    return rater


def sign_in_to_rate(page, live_server, campaign, username):
    """`username` signs in on the login page and lands on the campaign's rating page."""
    page.goto(f"{live_server.url}/accounts/login/?next=/rate/{campaign.pk}/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"pw-{username}-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"**/rate/{campaign.pk}/")


def wait_for_pair(page, previous_id=""):
    page.wait_for_function(
        """prev => { const r = document.getElementById('rater');
                     return r && r.dataset.state === 'ready' && r.dataset.assignment
                            && r.dataset.assignment !== prev; }""",
        arg=previous_id,
    )
    page.wait_for_function(
        "() => ['image-left', 'image-right'].every(id => document.getElementById(id).naturalWidth > 0)"
    )
    return page.get_attribute("#rater", "data-assignment")


def stored_votes(rater):
    """{assignment id: {criterion: choice}} of the rater's votes, and whether every vote has a time.

    Inside Playwright's sync API the test runs in a greenlet with its own context, where Django opens a
    connection of its own; it is closed here, or PostgreSQL refuses to drop the test database."""
    from django.db import connection

    try:
        stored: dict[str, dict[str, str]] = {}
        votes = list(Vote.objects.filter(rater=rater))
        for vote in votes:
            stored.setdefault(str(vote.assignment_id), {})[vote.criterion] = vote.choice
        return stored, all(v.time_taken_ms is not None for v in votes)
    finally:
        connection.close()


def assert_one_screen(page, width: int, height: int) -> None:
    """The prompt, both images (side by side, each at least a third of the width), the question being answered
    with its four choices, and the submit button are all inside the viewport."""
    boxes = {
        name: page.locator(selector).bounding_box()
        for name, selector in {
            "prompt": "#prompt",
            "left": "#image-left",
            "right": "#image-right",
            "question": ".question.active",
            "submit": "#submit",
        }.items()
    }
    for name, box in boxes.items():
        assert box is not None, f"{name} is not shown"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, (name, box)
    assert abs(boxes["left"]["y"] - boxes["right"]["y"]) < 1  # side by side
    assert min(boxes["left"]["width"], boxes["right"]["width"]) >= width / 3
    choices = page.locator(".question.active .choice")
    assert choices.count() == 4
    for i in range(4):
        box = choices.nth(i).bounding_box()
        assert box is not None and box["y"] + box["height"] <= height and box["height"] >= 40, box


def test_a_rater_votes_on_three_pairs_with_the_keyboard_only(live_server, campaign, make_rater, browser_page):
    page = browser_page
    rater = make_rater("keyboard-rater")
    campaign.raters.add(rater)
    asked = []  # the page's API requests: after the first pair and its preload, each answer brings the next pair
    page.on("request", lambda request: "/api/" in request.url and asked.append((request.method, request.url)))
    page.goto(f"{live_server.url}/accounts/login/?next=/rate/{campaign.pk}/")
    wait_for_focus(page, "input[name=username]")  # autofocus lands at a later rendering update
    page.keyboard.type("keyboard-rater")
    page.keyboard.press("Tab")
    page.keyboard.type("pw-keyboard-rater-1")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/rate/{campaign.pk}/instructions")
    wait_for_focus(page, "button[type=submit].primary")  # "Start rating"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/rate/{campaign.pk}/")

    expected: dict[str, dict[str, str]] = {}
    shown = ""
    for pair_keys in KEYS:
        shown = wait_for_pair(page, shown)
        if not expected:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "rater-desktop-1280x800.png"), full_page=True)
        criteria = page.eval_on_selector_all(".question", "boxes => boxes.map(b => b.dataset.criterion)")
        answers = {}
        for criterion, key in zip(criteria, pair_keys, strict=False):
            page.keyboard.press(key)
            answers[criterion] = KEY_CHOICE[key]
        assert page.is_enabled("#submit")
        expected[shown] = answers
        page.keyboard.press("Enter")
    fourth = wait_for_pair(page, shown)  # the fourth pair is on screen: the third vote was acknowledged

    stored, timed = stored_votes(rater)
    assert stored == expected
    assert timed
    assert page.text_content("#progress-text") == "3 pairs rated"
    page.wait_for_load_state("networkidle")
    gets = [url for method, url in asked if method == "GET"]
    posts = [url for method, url in asked if method == "POST"]
    assert len(gets) == 2 and all("/api/assignments/next" in url for url in gets), asked
    assert len(posts) == 3 and all("?next=1&exclude=" in url for url in posts), asked
    assert f"exclude={fourth}" in posts[-1]  # the third answer brought the pair after the fourth, preloaded

    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    assert_one_screen(page, 390, 844)
    page.screenshot(path=str(ARTIFACTS / "rater-phone-390x844.png"), full_page=True)
    # answering on the phone moves to the next question, which must be on screen too, without scrolling
    for _ in range(len(page.query_selector_all(".question"))):
        page.locator(".question.active .choice").first.click()
        assert page.evaluate("window.scrollY") == 0
        assert_one_screen(page, 390, 844)
    page.wait_for_load_state("networkidle")  # the preload of the next pair finishes before the server stops


def test_the_rater_page_waits_out_an_outage_and_sends_the_same_answer_once(
    live_server, campaign, make_rater, browser_page
):
    """The first two tries of a vote meet a 503 (what the site answers while the database restarts); the
    page says so, waits Retry-After, sends the same answer with the same key, and it is stored once."""
    page = browser_page
    rater = ready_rater(make_rater, campaign, "patient-rater")
    sign_in_to_rate(page, live_server, campaign, "patient-rater")

    sent_keys = []

    def outage(route, request):
        sent_keys.append(request.post_data_json["idempotency_key"])
        if len(sent_keys) <= 2:
            body = '{"error": "unavailable", "detail": "briefly unavailable", "retry_after_seconds": 1}'
            route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="application/json", body=body)
        else:
            route.continue_()

    page.route("**/api/assignments/*/votes*", outage)
    shown = wait_for_pair(page)
    criteria = page.eval_on_selector_all(".question", "boxes => boxes.map(b => b.dataset.criterion)")
    for _ in criteria:
        page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('briefly away')")
    wait_for_pair(page, shown)  # acknowledged after the outage: the next pair is on screen

    assert len(sent_keys) == 3 and len(set(sent_keys)) == 1
    stored, _ = stored_votes(rater)
    assert stored == {shown: dict.fromkeys(criteria, "left")}
    page.unroute("**/api/assignments/*/votes*")
    page.wait_for_load_state("networkidle")


def test_the_rater_page_moves_on_from_a_pair_whose_image_cannot_be_loaded(
    live_server, campaign, make_rater, browser_page
):
    """Every image of one model has a broken file: each pair with it answers 404 and is withdrawn, the page says
    so and moves on by itself, and the rater ends up voting on a pair of the two other models."""
    import numpy as np
    from django.core.files.base import ContentFile

    from evalsite.rating import engine
    from evalsite.rating.models import Assignment
    from evalsite.runs.models import Image

    page = browser_page
    rater = ready_rater(make_rater, campaign, "unlucky-rater")
    first = engine.next_assignment(rater, campaign, rng=np.random.default_rng(0))  # the page resumes it
    broken_model = first.image_left.model
    for image in Image.objects.filter(run=campaign.run, model=broken_model):
        image.file.save("broken.png", ContentFile(b"not a picture at all"), save=True)
    sign_in_to_rate(page, live_server, campaign, "unlucky-rater")
    page.set_default_timeout(60_000)
    shown = wait_for_pair(page)  # a pair whose two images both loaded

    from django.db import connection

    try:
        assignment = Assignment.objects.select_related("image_left", "image_right").get(pk=shown)
        assert broken_model.id not in (assignment.image_left.model_id, assignment.image_right.model_id)
        withdrawn = Image.objects.filter(model=broken_model, status=Image.Status.FAILED).count()
    finally:
        connection.close()
    assert withdrawn >= 1 and shown != str(first.pk)  # the page met the broken pair first, and moved on
    criteria = page.eval_on_selector_all(".question", "boxes => boxes.map(b => b.dataset.criterion)")
    for _ in criteria:
        page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.getElementById('rater').dataset.assignment !== '{shown}'")
    stored, _ = stored_votes(rater)
    assert stored == {shown: dict.fromkeys(criteria, "right")}
