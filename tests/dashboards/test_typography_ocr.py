"""OCR typography per model, stored by the metrics code and shown beside the human typography scores."""

import io
import itertools

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image as PILImage

from evalsite.dashboards.models import MetricResult
from evalsite.dashboards.run_metrics import compute_ocr_metrics
from evalsite.rating.models import Choice, Criterion
from evalsite.runs.models import Image
from tests.dashboards.conftest import add_votes
from tests.support import ocr_missing_reason, render_text

pytestmark = pytest.mark.skipif(bool(ocr_missing_reason()), reason=ocr_missing_reason() or "OCR available")

REQUESTED = {'a shop sign that says "OPEN"': "OPEN", 'a poster that says "HELLO WORLD"': "HELLO WORLD"}
# What each model draws for each requested text: model 0 spells it, model 1 misspells it, model 2 draws none.
DRAWN = {0: {"OPEN": "OPEN", "HELLO WORLD": "HELLO WORLD"}, 1: {"OPEN": "OVEN", "HELLO WORLD": "HELLO WORD"}}


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def typography_campaign(make_run, make_rater, make_campaign):
    """3 models x (2 text prompts + 1 shape prompt) x 2 seeds, text drawn in DejaVu Sans; 3 raters answer the
    typography question on every same-seed pair of text images, always preferring the lower model number
    (sides alternate, so no rater is flagged for position bias)."""
    run = make_run(
        n_models=3, seeds=(0, 1), prompt_texts=[*REQUESTED, "a red circle on a blue background"], name="dash-ocr"
    )
    for prompt in run.prompt_set.prompts.all():
        prompt.rendered_text = REQUESTED.get(prompt.text, "")
        prompt.detected_needs_text = bool(prompt.rendered_text)
        prompt.save()
    models = sorted(run.image_models.all(), key=lambda m: m.name)
    for image in Image.objects.filter(run=run, prompt__rendered_text__gt=""):
        index = models.index(image.model)
        text = DRAWN.get(index, {}).get(image.prompt.rendered_text, "")
        image.file.save("text.png", ContentFile(png(render_text(text, 28, pad=20))), save=True)
    raters = [make_rater(name) for name in ("ann", "ben", "cai")]
    campaign = make_campaign(raters=raters, run=run, criteria=[Criterion.PROMPT_FOLLOWING, Criterion.TYPOGRAPHY])
    images = {(i.model_id, i.prompt_id, i.seed): i for i in Image.objects.filter(run=run)}
    answers, flip = [], itertools.count()
    for rater in raters:
        for prompt in run.prompt_set.prompts.filter(rendered_text__gt=""):
            for seed, (a, b) in itertools.product((0, 1), itertools.combinations(range(3), 2)):
                better, worse = images[(models[a].pk, prompt.pk, seed)], images[(models[b].pk, prompt.pk, seed)]
                left, right, choice = (better, worse, Choice.LEFT) if next(flip) % 2 else (worse, better, Choice.RIGHT)
                answers.append(
                    {"rater": rater, "left": left, "right": right, "criterion": Criterion.TYPOGRAPHY, "choice": choice}
                )
    add_votes(campaign, answers)
    return campaign


@pytest.mark.django_db
def test_ocr_reads_every_text_image_and_stores_error_rate_and_word_match_per_model(typography_campaign):
    rows = compute_ocr_metrics(typography_campaign.run)
    values = {(r.model.name, r.metric): r.value for r in rows}
    assert values == {
        ("dash-ocr-model-0", "ocr_cer"): 0.0,
        ("dash-ocr-model-0", "ocr_word_match"): 1.0,
        ("dash-ocr-model-1", "ocr_cer"): pytest.approx((1 / 4 + 1 / 11) / 2),  # OVEN for OPEN, HELLO WORD
        ("dash-ocr-model-1", "ocr_word_match"): 0.0,
        ("dash-ocr-model-2", "ocr_cer"): 1.0,
        ("dash-ocr-model-2", "ocr_word_match"): 0.0,
    }
    assert {r.n for r in rows} == {4}  # 2 text prompts x 2 seeds; the shape prompt is not read
    readings = MetricResult.objects.get(run=typography_campaign.run, model__name="dash-ocr-model-1", metric="ocr_cer")
    assert sorted({(r["text"], r["reading"]) for r in readings.details["readings"]}) == [
        ("HELLO WORLD", "HELLO WORD"),
        ("OPEN", "OVEN"),
    ]
    assert readings.details["engine"].startswith("tesseract ")


@pytest.mark.django_db
def test_reading_again_updates_the_rows_in_place(typography_campaign):
    compute_ocr_metrics(typography_campaign.run)
    compute_ocr_metrics(typography_campaign.run)
    assert MetricResult.objects.filter(run=typography_campaign.run).count() == 6


@pytest.mark.django_db
def test_the_results_api_shows_ocr_beside_the_human_typography_scores_with_their_rank_correlation(
    typography_campaign, staff_client
):
    compute_ocr_metrics(typography_campaign.run)
    # on another criterion's page too: the comparison is always with the typography votes
    url = reverse("dashboards:api-results", args=[typography_campaign.pk])
    block = staff_client.get(url, {"criterion": "prompt_following"}).json()["typography_ocr"]
    assert [r["model"] for r in block["rows"]] == ["dash-ocr-model-0", "dash-ocr-model-1", "dash-ocr-model-2"]
    assert [r["ocr_cer"] for r in block["rows"]] == [0.0, pytest.approx(0.1705, abs=1e-4), 1.0]
    assert [r["votes"] for r in block["rows"]] == [24, 24, 24]
    scores = [r["score"] for r in block["rows"]]
    assert scores == sorted(scores, reverse=True)
    by_metric = {c["metric"]: c for c in block["correlations"]}
    assert by_metric["ocr_cer"]["rho"] == pytest.approx(-1.0)
    assert by_metric["ocr_cer"]["agreement"] == pytest.approx(1.0)  # lower error, higher human score
    assert by_metric["ocr_word_match"]["agreement"] > 0
    same = staff_client.get(url, {"criterion": "typography"}).json()["typography_ocr"]
    assert [r["score"] for r in same["rows"]] == pytest.approx(scores)


@pytest.mark.django_db
def test_the_campaign_page_shows_the_ocr_section(typography_campaign, campaign_page):
    compute_ocr_metrics(typography_campaign.run)
    page = campaign_page(typography_campaign, criterion="prompt_following")
    assert "Typography that reads: OCR beside the human typography scores" in page
    assert "Spearman ρ with the human typography scores" in page


@pytest.mark.django_db
def test_a_run_without_ocr_values_has_no_ocr_section(typography_campaign, campaign_page, staff_client):
    url = reverse("dashboards:api-results", args=[typography_campaign.pk])
    assert staff_client.get(url).json()["typography_ocr"] is None
    assert "Typography that reads" not in campaign_page(typography_campaign)


@pytest.mark.django_db
def test_on_demo_word_prompts_the_checker_reading_is_kept_beside_the_ocr_reading(make_run):
    """Demo drawings (32 px, the 3x5 font): model 0 draws the words, model 1 draws nothing."""
    import numpy as np

    from generation import demo_domain

    texts = [
        'the word "CAT" in red letters on a white background',
        'the word "HI" in blue letters on a black background',
    ]
    run = make_run(n_models=2, seeds=(0,), prompt_texts=texts, name="demo-ocr")
    rng = np.random.default_rng(0)
    for image in Image.objects.filter(run=run).select_related("prompt", "model"):
        spec = demo_domain.parse_prompt(image.prompt.text)
        image.prompt.rendered_text = spec.word
        image.prompt.save()
        pixels = demo_domain.render(spec, rng)
        if image.model.name.endswith("-1"):
            pixels[:] = demo_domain.PALETTE[spec.background]
        image.file.save("word.png", ContentFile(png(PILImage.fromarray(pixels))), save=True)
    rows = {(r.model.name, r.metric): r for r in compute_ocr_metrics(run)}
    drawn, blank = rows[("demo-ocr-model-0", "ocr_cer")], rows[("demo-ocr-model-1", "ocr_cer")]
    assert drawn.value == 0.0 and rows[("demo-ocr-model-0", "ocr_word_match")].value == 1.0
    assert [(r["text"], r["reading"], r["checker"]) for r in drawn.details["readings"]] == [
        ("CAT", "CAT", "CAT"),
        ("HI", "HI", "HI"),
    ]
    assert drawn.details["flat_images"] == 2 and drawn.details["checker_exact_word"] == 1.0
    assert blank.value == 1.0 and [r["reading"] for r in blank.details["readings"]] == ["", ""]
    assert blank.details["checker_exact_word"] == 0.0
