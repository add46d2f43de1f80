"""Text-to-3D models on the platform (issue 17, item 2): a run of two 3D settings goes through the image pipeline
end to end (planning, the gpu task, idempotency, a real worker), each image is a turntable stored beside its
asset file, raters see the turntables normalised like any image and are asked the 3D questions."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from evalsite.catalog.models import ImageModel
from evalsite.rating import engine
from evalsite.rating.models import Campaign, Criterion, Vote
from evalsite.rating.voting import VoteSubmission, record_votes
from evalsite.runs import services
from evalsite.runs.gpu_tasks import run_job
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from generation import contract
from generation.backends import BackendCache
from generation.threed import load_asset
from tests.support import tiny_inhouse_checkpoint, use_broker_folder, wait_for

VIEWS = contract.TURNTABLE_VIEWS
SETTINGS = {"steps": 2, "guidance_scale": 30.0, "view_size": 16}  # seconds per asset with the tiny prior
CACHE = BackendCache(max_size=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory):
    return tiny_inhouse_checkpoint(tmp_path_factory.mktemp("prior") / "ckpt")


def models_3d(prior_dir, **overrides):
    """Two 3D settings on one prior: guidance 30 and guidance 10."""
    return [
        ImageModel.objects.create(
            name=f"3d guidance {g}",
            kind=contract.TEXT_TO_3D,
            source=str(prior_dir),
            sampler_settings={**SETTINGS, "guidance_scale": g, **overrides},
        )
        for g in (30.0, 10.0)
    ]


def new_run(prompt_set, models, seeds=(0,), batch_size=4, dispatch=False):
    return services.create_run(
        name="3d run",
        prompt_set=prompt_set,
        image_models=models,
        seeds=list(seeds),
        batch_size=batch_size,
        dispatch=dispatch,
    ).run


def run_all(run):
    return [run_job(j.pk, task_id=f"task-{j.pk}-{time.monotonic_ns()}", cache=CACHE) for j in run.jobs.order_by("id")]


def test_a_3d_model_gets_the_3d_defaults_and_refuses_image_settings(db, make_prompt_set):
    model = ImageModel.objects.create(name="3d", kind=contract.TEXT_TO_3D, source="/checkpoints/prior")
    assert model.sampler_settings == contract.DEFAULT_THREED_SETTINGS  # not the image models' 28 steps at 32x32
    assert services.effective_settings(model, {"steps": 50}) == {**contract.DEFAULT_THREED_SETTINGS, "steps": 50}
    with pytest.raises(services.RunError, match="does not take the setting.*height"):
        services.effective_settings(model, {"height": 64})
    with pytest.raises(services.RunError, match="view_size must be at least 8"):
        services.effective_settings(model, {"view_size": 4})


def test_a_run_never_mixes_3d_models_with_image_models(db, make_prompt_set, prior_dir):
    image_model = ImageModel.objects.create(name="picture", kind=contract.INHOUSE, source=str(prior_dir))
    with pytest.raises(services.RunError, match="either image models or text-to-3D models"):
        new_run(make_prompt_set(), [image_model, *models_3d(prior_dir)])


def test_a_3d_job_stores_a_turntable_and_its_asset_and_a_second_delivery_redoes_nothing(
    media_root, make_prompt_set, prior_dir
):
    prompts = make_prompt_set(texts=["a red circle on a blue background", "a green square on a yellow background"])
    run = new_run(prompts, models_3d(prior_dir))
    assert run.is_3d and run.jobs.count() == 2
    results = run_all(run)
    assert all(r["made"] == 2 and r["batch_size"] == 1 for r in results)  # one asset per batch: stored as made
    images = list(Image.objects.filter(run=run).select_related("prompt"))
    assert len(images) == 4 and {i.status for i in images} == {"done"}
    for image in images:
        assert (image.width, image.height) == (VIEWS * 16, 16)
        turntable = PILImage.open(media_root / image.file.name)
        assert turntable.size == (VIEWS * 16, 16) and not turntable.info  # pixels only
        assert image.asset.name == f"assets/{image.token[:2]}/{image.token}.safetensors"
        asset = load_asset(media_root / image.asset.name)
        assert (asset.prompt, asset.seed, asset.steps_done) == (image.prompt.text, image.seed, 2)
        assert asset.settings.sds.guidance_scale == image.sampler_settings["guidance_scale"]
    # the two settings made different assets of the same prompt and seed
    by_model = {}
    for image in images:
        by_model.setdefault(image.prompt_id, []).append((media_root / image.file.name).read_bytes())
    assert all(a != b for a, b in by_model.values())

    files = {i.pk: (media_root / i.file.name).read_bytes() for i in images}
    GenerationJob.objects.filter(run=run).update(status=GenerationJob.Status.QUEUED)  # as if delivered again
    assert [r["made"] for r in run_all(run)] == [0, 0]
    assert {i.pk: (media_root / i.file.name).read_bytes() for i in Image.objects.filter(run=run)} == files
    stored = sorted(p.relative_to(media_root).as_posix() for p in (media_root / "assets").rglob("*.*"))
    assert stored == sorted(i.asset.name for i in images)  # one asset file per image, nothing left over


def test_a_broken_prior_fails_the_3d_jobs_with_a_reason_and_a_retry_after_the_repair_makes_them(
    media_root, make_prompt_set, tmp_path
):
    (tmp_path / "empty").mkdir()
    broken = ImageModel.objects.create(
        name="3d broken", kind=contract.TEXT_TO_3D, source=str(tmp_path / "empty"), sampler_settings=SETTINGS
    )
    run = new_run(make_prompt_set(texts=["a red circle on a blue background"]), [broken])
    [result] = run_all(run)
    assert "holds no checkpoint" in result["failed"]
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.FAILED
    assert Image.objects.get(run=run).error.startswith("model 3d broken: cannot load text_to_3d model")

    tiny_inhouse_checkpoint(tmp_path / "empty")  # the prior is put in place
    assert services.retry_failed(run) == 1  # dispatched after the commit; here the task body runs it
    assert [r["made"] for r in run_all(run)] == [1]
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.DONE and Image.objects.get(run=run).asset


@pytest.fixture
def done_3d_run(media_root, make_prompt_set, prior_dir):
    prompts = make_prompt_set(texts=["a red circle on a blue background"])
    run = new_run(prompts, models_3d(prior_dir))
    run_all(run)
    return run


def test_raters_of_a_3d_run_see_both_turntables_alike_and_are_asked_the_3d_questions(done_3d_run, make_rater, client):
    rater = make_rater()
    campaign = Campaign.objects.create(name="3d", run=done_3d_run, gold_rate=0.0)
    campaign.raters.add(rater)
    assert campaign.criteria == [
        c.value for c in (Criterion.PROMPT_FOLLOWING, Criterion.AESTHETICS, Criterion.MULTIVIEW_CONSISTENCY)
    ]
    rater.instructions_seen_at = rater.created_at
    rater.save()
    client.force_login(rater.user)
    body = client.get(f"{reverse('rating:next-assignment')}?campaign={campaign.pk}").json()["assignment"]
    assert [c["key"] for c in body["criteria"]] == ["prompt_following", "aesthetics", "multiview_consistency"]
    assert [c["label"] for c in body["criteria"]] == ["Prompt following", "Visual quality", "Multi-view consistency"]
    assert "Seen from all sides" in body["criteria"][0]["question"]
    assert body["images"]["left"]["views"] == body["images"]["right"]["views"] == VIEWS
    shown = []
    for side in ("left", "right"):
        response = client.get(body["images"][side]["url"])
        head = client.head(body["images"][side]["url"])
        assert response.status_code == 200 and int(head["Content-Length"]) == len(response.content)
        picture = PILImage.open(io.BytesIO(response.content))
        assert picture.size == (VIEWS * 16, 16) and not picture.info
        shown.append(response.content)
    assert len(shown[0]) == len(shown[1]) and shown[0] != shown[1]  # same length, different pixels

    choices = {"prompt_following": "left", "aesthetics": "tie", "multiview_consistency": "right"}
    response = client.post(
        body["votes_url"], {"idempotency_key": "turntable-vote-1", "choices": choices}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert dict(Vote.objects.values_list("criterion", "choice")) == choices


def test_a_3d_run_shown_at_another_size_scales_every_view_to_that_square(done_3d_run, make_rater, client):
    done_3d_run.image_size = 40
    done_3d_run.save()
    rater = make_rater()
    campaign = Campaign.objects.create(name="3d", run=done_3d_run, gold_rate=0.0)
    campaign.raters.add(rater)
    assignment = engine.next_assignment(rater, campaign)
    client.force_login(rater.user)
    response = client.get(reverse("rating:assignment-image", args=[assignment.pk, "left"]))
    assert PILImage.open(io.BytesIO(response.content)).size == (VIEWS * 40, 40)


def test_an_image_campaign_never_asks_multiview_consistency(make_campaign, make_prompt_set):
    from evalsite.catalog.models import Prompt

    campaign = make_campaign(criteria=[c.value for c in Criterion])
    prompt = Prompt.objects.filter(prompt_set=campaign.run.prompt_set).first()
    assert Criterion.MULTIVIEW_CONSISTENCY not in campaign.criteria_for(prompt)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_makes_a_3d_run_from_the_broker(tmp_path, settings, make_prompt_set, prior_dir, media_root):
    """`bin/process worker` on the filesystem broker takes the 3D jobs from the gpu queue like any image job."""
    from tests.support import WorkerProcess

    restore_broker = use_broker_folder(tmp_path)
    worker = WorkerProcess(tmp_path, media_root, tmp_path / "worker.log").start()
    try:
        run = new_run(make_prompt_set(texts=["a red circle on a blue background"]), models_3d(prior_dir), dispatch=True)
        wait_for(
            lambda: Image.objects.filter(run=run, status="done").count() == 2,
            timeout=180,
            what="both turntables",
            worker=worker,
        )
        wait_for(lambda: run.refresh_status() == ComparisonRun.Status.DONE, timeout=30, what="run done", worker=worker)
    finally:
        worker.stop()
        restore_broker()
    for image in Image.objects.filter(run=run):
        assert PILImage.open(media_root / image.file.name).size == (VIEWS * 16, 16)
        assert load_asset(media_root / image.asset.name).prompt == "a red circle on a blue background"
    assert set(GenerationJob.objects.filter(run=run).values_list("status", "attempts")) == {("done", 1)}


def test_researchers_see_turntable_previews_and_download_the_asset_files_raters_cannot(
    done_3d_run, staff_client, make_rater, client, media_root
):
    page = staff_client.get(reverse("runs:detail", args=[done_3d_run.pk])).content.decode()
    image = Image.objects.filter(run=done_3d_run).first()
    assert 'class="turntable"' in page and reverse("runs:asset", args=[image.token]) in page
    response = staff_client.get(reverse("runs:asset", args=[image.token]))
    assert (
        response.status_code == 200
        and b"".join(response.streaming_content) == (media_root / image.asset.name).read_bytes()
    )
    client.force_login(make_rater().user)
    assert client.get(reverse("runs:asset", args=[image.token])).status_code in (302, 403, 404)


def test_the_animated_preview_turns_through_the_turntable_views_and_a_picture_has_none(
    done_3d_run, staff_client, media_root, make_run
):
    image = Image.objects.filter(run=done_3d_run).first()
    page = staff_client.get(reverse("runs:detail", args=[done_3d_run.pk])).content.decode()
    assert reverse("runs:animation", args=[image.token]) in page
    response = staff_client.get(reverse("runs:animation", args=[image.token]))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    gif = PILImage.open(io.BytesIO(response.content))
    assert gif.n_frames == VIEWS and gif.size == (16, 16) and gif.info["loop"] == 0
    strip = PILImage.open(media_root / image.file.name).convert("RGB")
    gif.seek(3)
    view = strip.crop((3 * 16, 0, 4 * 16, 16))
    frame = np.asarray(gif.convert("RGB"), dtype=float)
    assert np.abs(frame - np.asarray(view, dtype=float)).mean() < 8  # the fourth view, up to the GIF palette
    picture = Image.objects.filter(run=make_run(n_models=2)).first()
    assert staff_client.get(reverse("runs:animation", args=[picture.token])).status_code == 404


def test_the_dashboard_of_a_3d_campaign_reads_its_multiview_consistency_votes(done_3d_run, make_rater, staff_client):
    campaign = Campaign.objects.create(name="3d", run=done_3d_run, gold_rate=0.0)
    for i in range(3):
        rater = make_rater(f"r{i}")
        campaign.raters.add(rater)
        assignment = engine.next_assignment(rater, campaign)
        choices = dict.fromkeys(campaign.criteria, "left")
        record_votes(assignment.pk, rater, VoteSubmission(f"dash-{i}-key", choices, 4000))
    page = staff_client.get(reverse("dashboards:campaign", args=[campaign.pk]) + "?criterion=multiview_consistency")
    assert page.status_code == 200
    assert "Multi-view consistency" in page.content.decode()
    assert Vote.objects.filter(campaign=campaign, criterion="multiview_consistency").count() == 3
