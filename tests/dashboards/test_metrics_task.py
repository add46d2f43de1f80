"""The metrics task stores CLIP score and FID per run and model; the page shows them beside the human scores."""

import html

import pytest
import torch
from django.urls import reverse

from analysis import metrics
from analysis.typography import tesseract_available
from evalsite.dashboards.models import MetricResult
from evalsite.dashboards.run_metrics import read_pixels
from evalsite.dashboards.tasks import compute_run_metrics
from evalsite.runs.models import Image
from generation.dual_encoder.checkpoint import clip_model_and_processor, save_dual_encoder
from generation.dual_encoder.model import DualEncoder, DualEncoderConfig

# The task also reads the text prompt's images with Tesseract where it is installed (.ci/run installs it):
# 3 models x (OCR error rate, OCR exact-word match) for the voted campaign's "CAT" prompt.
OCR = ["ocr_cer"] * 3 + ["ocr_word_match"] * 3 if tesseract_available() else []
TINY = DualEncoderConfig(channels=(8, 16, 16, 16), image_hidden=32, width=32, text_layers=1, heads=2, embed_dim=16)


@pytest.fixture
def clip_dir(tmp_path, settings):
    """A small (untrained) dual encoder as the platform's CLIP model: the task's plumbing is under test here;
    tests/generation/test_dual_encoder.py checks that the committed, trained one means something."""
    torch.manual_seed(0)
    path = tmp_path / "clip"
    save_dual_encoder(DualEncoder(TINY), path)
    settings.EVALSITE_CLIP_MODEL = str(path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield path
    torch.set_num_threads(before)


@pytest.fixture
def measured_run(voted_campaign, clip_dir):
    """The voted campaign's run after the metrics task ran once on it (the Celery task body, called as a
    function): 3 models x 4 prompts x 2 seeds, demo-domain prompts."""
    compute_run_metrics(voted_campaign.run.pk)
    return voted_campaign.run


def first_model(run):
    return run.image_models.order_by("name").first()


@pytest.mark.django_db
def test_the_task_stores_a_clip_score_and_a_clip_fid_per_model(voted_campaign, clip_dir):
    summary = compute_run_metrics(voted_campaign.run.pk)
    assert summary["results"] == 6 + len(OCR)
    rows = MetricResult.objects.filter(run=voted_campaign.run)
    assert sorted(rows.values_list("metric", flat=True)) == ["clip_score"] * 3 + ["fid_clip"] * 3 + OCR


@pytest.mark.django_db
def test_running_the_task_again_updates_its_rows_in_place(measured_run):
    compute_run_metrics(measured_run.pk)
    assert MetricResult.objects.filter(run=measured_run).count() == 6 + len(OCR)


@pytest.mark.django_db
def test_the_stored_clip_score_is_the_clip_score_of_the_model_images(measured_run, clip_dir):
    model = first_model(measured_run)
    images = list(
        Image.objects.filter(run=measured_run, model=model)
        .select_related("prompt")
        .order_by("prompt__position", "seed")
    )
    pixels = torch.stack([torch.from_numpy(read_pixels(i)).permute(2, 0, 1) for i in images])
    expected = metrics.clip_score(pixels, [i.prompt.text for i in images], clip_model_and_processor(clip_dir))
    clip_row = MetricResult.objects.get(run=measured_run, model=model, metric="clip_score")
    assert clip_row.value == pytest.approx(expected, abs=1e-4)
    assert clip_row.n == 8


@pytest.mark.django_db
def test_the_fid_names_its_reference_and_is_marked_unreliable_with_fewer_images_than_features(measured_run):
    fid_row = MetricResult.objects.get(run=measured_run, model=first_model(measured_run), metric="fid_clip")
    assert fid_row.value >= 0
    assert fid_row.details["reference"] == "demo-domain ground truth for the same prompts"
    assert fid_row.details["n_reference"] == 32 and fid_row.details["num_features"] == 16
    assert fid_row.details["reliable"] is False  # 8 generated images < 16 feature dimensions


@pytest.mark.django_db
def test_the_campaign_page_shows_the_metrics_beside_the_human_scores(voted_campaign, measured_run, campaign_page):
    clip_row = MetricResult.objects.get(run=measured_run, model=first_model(measured_run), metric="clip_score")
    page = html.unescape(campaign_page(voted_campaign))
    section = page.split('id="metrics"')[1].split("</section>")[0]
    assert "CLIP score" in section and "FID (CLIP features)" in section
    assert f"{clip_row.value:.2f}" in section


@pytest.mark.django_db
def test_the_results_api_gives_each_metric_rank_correlation_with_the_human_scores(
    staff_client, voted_campaign, measured_run
):
    data = staff_client.get(reverse("dashboards:api-results", args=[voted_campaign.pk])).json()
    correlations = {c["metric"]: c for c in data["metrics"]["correlations"]}
    human = {row["model"]: row["score"] for row in data["leaderboard"]}
    clip_rows = MetricResult.objects.filter(run=measured_run, metric="clip_score")
    clip_values = {r.model.name: r.value for r in clip_rows}
    expected_corr = metrics.spearman_with_human(clip_values, human)
    assert correlations["clip_score"]["rho"] == pytest.approx(expected_corr.rho)
    assert correlations["fid_clip"]["n"] == 3


@pytest.mark.django_db
def test_the_run_metrics_api_lists_every_stored_metric(staff_client, measured_run):
    listed = staff_client.get(reverse("dashboards:api-run-metrics", args=[measured_run.pk])).json()
    assert len(listed) == 6 + len(OCR)


@pytest.fixture
def free_prompts_run(make_run):
    """3 models on prompts that are not demo-domain prompts (no ground truth to compare with)."""
    return make_run(n_models=3, prompt_texts=["a photo of a cat", "an astronaut riding a horse"], name="free")


@pytest.mark.django_db
def test_fid_against_a_reference_model_when_prompts_are_not_demo_prompts(free_prompts_run, clip_dir):
    run = free_prompts_run
    reference = run.image_models.order_by("name").first()
    compute_run_metrics(run.pk, reference_model_id=reference.pk)
    fid = MetricResult.objects.filter(run=run, metric="fid_clip")
    assert sorted(fid.values_list("model__name", flat=True)) == ["free-model-1", "free-model-2"]
    assert fid.first().details["reference"] == f"images of {reference.name}"
    assert MetricResult.objects.filter(run=run, metric="clip_score").count() == 3


@pytest.mark.django_db
def test_without_a_reference_model_or_demo_prompts_only_the_clip_score_is_stored(free_prompts_run, clip_dir):
    compute_run_metrics(free_prompts_run.pk)
    assert set(MetricResult.objects.filter(run=free_prompts_run).values_list("metric", flat=True)) == {"clip_score"}


def press_compute(staff_client, campaign, next_url, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return staff_client.post(reverse("dashboards:compute-metrics", args=[campaign.run_id]), {"next": next_url})


@pytest.fixture
def sent_tasks(monkeypatch):
    """The arguments of every compute_run_metrics task sent (instead of sending it)."""
    sent = []
    monkeypatch.setattr(compute_run_metrics, "apply_async", lambda args=None, kwargs=None, **kw: sent.append(args))
    return sent


@pytest.mark.django_db
def test_compute_button_queues_the_task_and_returns_to_the_page(
    staff_client, voted_campaign, django_capture_on_commit_callbacks, sent_tasks
):
    page = reverse("dashboards:campaign", args=[voted_campaign.pk])
    response = press_compute(staff_client, voted_campaign, page, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert response["Location"] == page
    assert sent_tasks == [(voted_campaign.run_id,)]


@pytest.mark.django_db
def test_compute_button_follows_only_same_site_next_targets(
    staff_client, voted_campaign, django_capture_on_commit_callbacks, sent_tasks
):
    response = press_compute(
        staff_client, voted_campaign, "https://elsewhere.example/", django_capture_on_commit_callbacks
    )
    assert response["Location"] == reverse("dashboards:campaigns")
