"""The metrics task stores CLIP score and FID per run and model; the page shows them beside the human scores."""

import html

import pytest
import torch
from django.urls import reverse

from analysis import metrics
from evalsite.dashboards.models import MetricResult
from evalsite.dashboards.run_metrics import read_pixels
from evalsite.dashboards.tasks import compute_run_metrics
from evalsite.runs.models import Image
from generation.dual_encoder.checkpoint import clip_model_and_processor, save_dual_encoder
from generation.dual_encoder.model import DualEncoder, DualEncoderConfig

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


@pytest.mark.django_db
def test_task_stores_clip_score_and_clip_fid_per_model_once(voted_campaign, clip_dir, staff_client):
    run = voted_campaign.run
    summary = compute_run_metrics(run.pk)  # the Celery task body, called as a function
    assert summary["results"] == 6
    rows = MetricResult.objects.filter(run=run)
    assert sorted(rows.values_list("metric", flat=True)) == ["clip_score"] * 3 + ["fid_clip"] * 3
    compute_run_metrics(run.pk)  # re-running updates in place
    assert MetricResult.objects.filter(run=run).count() == 6

    model = run.image_models.order_by("name").first()
    images = list(
        Image.objects.filter(run=run, model=model).select_related("prompt").order_by("prompt__position", "seed")
    )
    pixels = torch.stack([torch.from_numpy(read_pixels(i)).permute(2, 0, 1) for i in images])
    expected = metrics.clip_score(pixels, [i.prompt.text for i in images], clip_model_and_processor(clip_dir))
    clip_row = rows.get(model=model, metric="clip_score")
    assert clip_row.value == pytest.approx(expected, abs=1e-4)
    assert clip_row.n == 8
    fid_row = rows.get(model=model, metric="fid_clip")
    assert fid_row.value >= 0
    assert fid_row.details["reference"] == "demo-domain ground truth for the same prompts"
    assert fid_row.details["n_reference"] == 32 and fid_row.details["num_features"] == 16
    assert fid_row.details["reliable"] is False  # 8 generated images < 16 feature dimensions

    page = html.unescape(staff_client.get(reverse("dashboards:campaign", args=[voted_campaign.pk])).content.decode())
    section = page.split('id="metrics"')[1].split("</section>")[0]
    assert "CLIP score" in section and "FID (CLIP features)" in section
    assert f"{clip_row.value:.2f}" in section
    data = staff_client.get(reverse("dashboards:api-results", args=[voted_campaign.pk])).json()
    correlations = {c["metric"]: c for c in data["metrics"]["correlations"]}
    human = {row["model"]: row["score"] for row in data["leaderboard"]}
    clip_values = {r.model.name: r.value for r in rows.filter(metric="clip_score")}
    expected_corr = metrics.spearman_with_human(clip_values, human)
    assert correlations["clip_score"]["rho"] == pytest.approx(expected_corr.rho)
    assert correlations["fid_clip"]["n"] == 3
    listed = staff_client.get(reverse("dashboards:api-run-metrics", args=[run.pk])).json()
    assert len(listed) == 6


@pytest.mark.django_db
def test_fid_against_a_reference_model_when_prompts_are_not_demo_prompts(make_run, clip_dir):
    run = make_run(n_models=3, prompt_texts=["a photo of a cat", "an astronaut riding a horse"], name="free")
    reference = run.image_models.order_by("name").first()
    compute_run_metrics(run.pk, reference_model_id=reference.pk)
    fid = MetricResult.objects.filter(run=run, metric="fid_clip")
    assert sorted(fid.values_list("model__name", flat=True)) == ["free-model-1", "free-model-2"]
    assert fid.first().details["reference"] == f"images of {reference.name}"
    assert MetricResult.objects.filter(run=run, metric="clip_score").count() == 3
    # no reference and not demo prompts: CLIP score only
    MetricResult.objects.all().delete()
    compute_run_metrics(run.pk)
    assert set(MetricResult.objects.filter(run=run).values_list("metric", flat=True)) == {"clip_score"}


@pytest.mark.django_db
def test_compute_button_queues_the_task(staff_client, voted_campaign, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(compute_run_metrics, "apply_async", lambda args=None, kwargs=None, **kw: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("dashboards:compute-metrics", args=[voted_campaign.run_id]),
            {"next": reverse("dashboards:campaign", args=[voted_campaign.pk])},
        )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboards:campaign", args=[voted_campaign.pk])
    assert sent == [(voted_campaign.run_id,)]
    # only same-site "next" targets are followed
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("dashboards:compute-metrics", args=[voted_campaign.run_id]), {"next": "https://elsewhere.example/"}
        )
    assert response["Location"] == reverse("dashboards:campaigns")
