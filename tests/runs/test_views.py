"""Researcher pages: staff only, a run from the web form, progress per model as HTML and JSON, retry by POST."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun, GenerationJob


@pytest.fixture
def two_models(db):
    return [ImageModel.objects.create(name=n, kind="inhouse", source=f"/models/{n}") for n in ("alpha", "beta")]


def test_pages_are_for_staff_only(client, django_user_model, make_run):
    run = make_run(n_models=2)
    urls = [
        reverse("runs:list"),
        reverse("runs:new"),
        reverse("runs:detail", args=[run.pk]),
        reverse("runs:progress", args=[run.pk]),
        reverse("runs:image", args=[run.images.first().token]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("someone", password="pw-someone-1"))
    for url in urls:
        assert client.get(url).status_code == 403
    assert client.post(reverse("runs:retry", args=[run.pk])).status_code == 403


def test_a_researcher_creates_a_run_from_the_form(
    staff_client, make_prompt_set, two_models, broker, django_capture_on_commit_callbacks
):
    prompt_set = make_prompt_set()
    page = staff_client.get(reverse("runs:new"))
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    form = {
        "name": "web run",
        "image_models": [m.pk for m in two_models],
        "prompt_set": prompt_set.pk,
        "prompt_numbers": "0, 2",
        "categories": "",
        "seeds_per_prompt": 3,
        "first_seed": 10,
        "resolution": 32,
        "steps": 12,
        "guidance_scale": 5.5,
        "shift": "",
        "batch_size": 4,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("runs:new"), form)
    run = ComparisonRun.objects.get(name="web run")
    assert response.status_code == 302 and response["Location"] == reverse("runs:detail", args=[run.pk])
    assert run.seeds == [10, 11, 12] and run.created_by.username == "researcher"
    assert run.sampler_overrides == {"height": 32, "width": 32, "steps": 12, "guidance_scale": 5.5}
    assert sorted(run.prompts.values_list("position", flat=True)) == [0, 2]
    assert run.images.count() == 2 * 2 * 3 and len(broker.messages()) == run.jobs.count() == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt_numbers": "0, 99"}, "has no prompt number"),
        ({"prompt_numbers": "three"}, "not a number"),
        ({"categories": "Landscapes"}, "unknown category Landscapes"),
        ({"image_models": []}, "This field is required"),
        ({"steps": 0}, "greater than or equal to 1"),
    ],
)
def test_the_form_explains_what_is_wrong(staff_client, make_prompt_set, two_models, change, message):
    prompt_set = make_prompt_set()
    form = {
        "name": "bad",
        "image_models": [two_models[0].pk],
        "prompt_set": prompt_set.pk,
        "seeds_per_prompt": 1,
        "first_seed": 0,
        **change,
    }
    response = staff_client.post(reverse("runs:new"), form)
    assert response.status_code == 200 and message in response.content.decode()
    assert not ComparisonRun.objects.exists()


def test_a_category_subset_from_the_form(staff_client, make_prompt_set, two_models):
    prompt_set = make_prompt_set(categories=["Animals", "Writing", "Animals"])
    form = {
        "name": "animals",
        "image_models": [two_models[0].pk],
        "prompt_set": prompt_set.pk,
        "categories": "animals",
        "seeds_per_prompt": 1,
        "first_seed": 0,
    }
    assert staff_client.post(reverse("runs:new"), form).status_code == 302
    run = ComparisonRun.objects.get(name="animals")
    assert sorted(run.images.values_list("prompt__position", flat=True)) == [0, 2]


ALPHA_ERROR = (
    "model alpha: cannot load inhouse model from /models/alpha: checkpoint directory /models/alpha does not exist"
)


@pytest.fixture
def half_failed_run(make_prompt_set, two_models):
    """alpha x 3 prompts failed (its checkpoint is missing), beta x 3 prompts pending; nothing sent."""
    run = services.create_run(
        name="progress", prompt_set=make_prompt_set(), image_models=two_models, seeds=[0], batch_size=3, dispatch=False
    ).run
    services.mark_job_failed(run.jobs.get(model__name="alpha").pk, ALPHA_ERROR)
    return run


def test_progress_json_counts_images_per_model_with_the_failure_reasons(staff_client, half_failed_run):
    data = staff_client.get(reverse("runs:progress", args=[half_failed_run.pk])).json()
    assert data["status"] == "running" and data["progress"] == {"failed": 3, "pending": 3, "total": 6}
    rows = {row["model"]: row for row in data["models"]}
    assert rows["alpha"]["failed"] == 3 and rows["beta"]["pending"] == 3 and rows["beta"]["percent"] == 0.0
    assert "does not exist" in rows["alpha"]["failures"][0]["error"]


def test_the_run_page_shows_failures_with_a_retry_button_and_loads_no_external_script(staff_client, half_failed_run):
    run = half_failed_run
    alpha_job = run.jobs.get(model__name="alpha")
    page = staff_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "does not exist" in page and "Retry this job" in page
    assert reverse("runs:progress", args=[run.pk]) in page
    # No CDN, no externals, no inline script (the Content-Security-Policy allows only the site's own files).
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/evalsite/run_progress.js">']
    assert re.search(rf'name="job" value="{alpha_job.pk}"', page)


def test_retrying_a_failed_job_opens_it_again_without_its_error(staff_client, half_failed_run, broker):
    alpha_job = half_failed_run.jobs.get(model__name="alpha")
    response = staff_client.post(reverse("runs:retry", args=[half_failed_run.pk]), {"job": alpha_job.pk})
    assert response.status_code == 302
    alpha_job.refresh_from_db()
    assert alpha_job.status in ("pending", "queued") and alpha_job.error == ""


def test_retrying_a_job_that_is_not_a_job_id_is_a_404(staff_client, half_failed_run):
    assert staff_client.post(reverse("runs:retry", args=[half_failed_run.pk]), {"job": "x"}).status_code == 404


def test_retry_needs_a_csrf_token(client, staff_user, make_run):
    from django.test import Client

    run = make_run()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(staff_user)
    assert csrf_client.post(reverse("runs:retry", args=[run.pk])).status_code == 403


def test_the_run_list_shows_each_run_with_its_images_done(staff_client, make_run):
    run = make_run(n_models=2)
    listing = staff_client.get(reverse("runs:list")).content.decode()
    assert run.name in listing and "6 / 6" in listing


def test_the_run_page_previews_its_images_as_png(staff_client, make_run):
    run = make_run(n_models=2)
    page = staff_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    image = run.images.first()
    assert reverse("runs:image", args=[image.token]) in page
    response = staff_client.get(reverse("runs:image", args=[image.token]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert GenerationJob.objects.count() == 0


def test_an_unknown_image_token_is_a_404(staff_client, db):
    assert staff_client.get(reverse("runs:image", args=["not-a-token"])).status_code == 404
