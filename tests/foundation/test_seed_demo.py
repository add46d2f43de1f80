"""`manage.py seed_demo` (evalsite/demo): demo users and prompt sets, the demo models, the demo run and campaign."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.rating.models import Campaign
from evalsite.runs.models import ComparisonRun
from tests.support import tiny_inhouse_checkpoint, tiny_unet_checkpoint


@pytest.mark.django_db
def test_seed_demo_creates_users_and_prompt_sets_and_is_idempotent(media_root):
    call_command("seed_demo")
    call_command("seed_demo")
    users = get_user_model().objects
    assert users.get(username="admin").is_staff
    assert users.get(username="rater").rater is not None
    parti = PromptSet.objects.get(name="PartiPrompts")
    assert parti.prompts.count() == 1632
    demo = PromptSet.objects.get(name="Demo shapes, positions and words")
    assert demo.prompts.count() > 10
    assert demo.prompts.filter(note__contains="held-out").exists()
    assert any(p.needs_text and p.rendered_text for p in demo.prompts.all())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """Two tiny in-house checkpoints, a tiny UNet baseline and a dual encoder (not an image model)."""
    demo = tmp_path_factory.mktemp("seed") / "demo_models"
    tiny_inhouse_checkpoint(demo / "mmdit-demo", step=2000)
    tiny_inhouse_checkpoint(demo / "mmdit-demo-early", step=500)
    unet = tiny_unet_checkpoint(demo / "unet-baseline")
    meta = json.loads((unet / "config.json").read_text())  # recommends guidance 1, as the committed one does
    meta["recipe"]["sampler_defaults"] = {"steps": 28, "guidance_scale": 1.0, "scheduler": "ddim"}
    (unet / "config.json").write_text(json.dumps(meta))
    (demo / "clip-demo").mkdir()
    (demo / "clip-demo" / "config.json").write_text('{"kind": "dual_encoder"}')  # not an image model
    return demo


@pytest.fixture
def seeded(db, media_root, demo_dir, broker, django_capture_on_commit_callbacks):
    """seed_demo run once on demo_dir, its on-commit sends executed; returns the broker."""
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--models-dir", str(demo_dir))
    return broker


def test_seed_demo_registers_every_image_model_checkpoint_by_its_format(seeded):
    models = {m.name: m for m in ImageModel.objects.all()}
    assert set(models) == {"mmdit-demo", "mmdit-demo-early", "unet-baseline"}
    assert models["unet-baseline"].kind == "unet_baseline" and models["mmdit-demo"].kind == "inhouse"
    assert models["mmdit-demo"].sampler_settings["height"] == 16  # the checkpoint's own resolution


def test_seed_demo_starts_the_demo_run_of_every_demo_model_on_the_gpu_queue(seeded):
    run = ComparisonRun.objects.get(name="Demo comparison")
    prompts = PromptSet.objects.get(name="Demo shapes, positions and words").prompts.count()
    assert run.image_models.count() == 3 and run.images.count() == 3 * prompts * 2
    assert run.sampler_overrides == {"steps": 28, "height": 32, "width": 32}
    guidance = {(i.model.name, i.sampler_settings["guidance_scale"]) for i in run.all_images().select_related("model")}
    assert guidance == {("mmdit-demo", 4.0), ("mmdit-demo-early", 4.0), ("unet-baseline", 1.0)}  # each its own
    sent = len(seeded.messages())
    assert sent == run.jobs.count() > 0


def test_seed_demo_again_starts_no_second_run_and_sends_nothing(seeded, demo_dir, django_capture_on_commit_callbacks):
    sent = len(seeded.messages())
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--models-dir", str(demo_dir))  # idempotent: no second run, nothing sent
    assert ComparisonRun.objects.count() == 1 and len(seeded.messages()) == sent


def test_seed_demo_opens_the_demo_campaign_to_the_demo_rater(seeded):
    run = ComparisonRun.objects.get(name="Demo comparison")
    campaign = Campaign.objects.get(name="Demo campaign")  # one campaign, the demo rater in it
    assert campaign.run == run and list(campaign.raters.values_list("user__username", flat=True)) == ["rater"]


def test_seed_demo_without_demo_models_starts_no_run(db, media_root, tmp_path, capsys):
    call_command("seed_demo", "--models-dir", str(tmp_path / "empty"))
    assert "demo run not started" in capsys.readouterr().out and not ComparisonRun.objects.exists()
