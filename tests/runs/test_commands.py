"""Management commands: create_run, retry_failed, sweep_lost_jobs, add_checkpoint_schedule, and seed_demo's
demo models and demo run."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.rating.models import Campaign
from evalsite.runs import services
from evalsite.runs.models import CheckpointSchedule, ComparisonRun
from evalsite.runs.testing import tiny_inhouse_checkpoint, tiny_unet_checkpoint


@pytest.fixture
def three_models(db):
    return [ImageModel.objects.create(name=n, kind="inhouse", source=f"/m/{n}") for n in ("a", "b", "c")]


def test_create_run_from_the_command_line(
    make_prompt_set, three_models, broker, capsys, django_capture_on_commit_callbacks
):
    make_prompt_set(name="shapes")
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "create_run",
            "--name",
            "cli",
            "--prompt-set",
            "shapes",
            "--models",
            "a,b,c",
            "--seeds",
            "4",
            "--steps",
            "28",
            "--guidance",
            "4",
            "--resolution",
            "32",
            "--prompts",
            "0-1",
            "--batch-size",
            "8",
        )
    run = ComparisonRun.objects.get(name="cli")
    assert run.seeds == [0, 1, 2, 3] and run.image_models.count() == 3
    assert run.sampler_overrides == {"height": 32, "width": 32, "steps": 28, "guidance_scale": 4.0}
    assert run.images.count() == 3 * 2 * 4 and len(broker.messages()) == 3
    assert "24 images in 3 jobs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt-set", "nope", "--models", "a"], "no prompt set named 'nope'"),
        (["--prompt-set", "shapes", "--models", "a,zzz"], "unknown model"),
        (["--prompt-set", "shapes", "--models", "a", "--prompts", "7"], "has no prompt number"),
        (["--prompt-set", "shapes", "--models", "a", "--seeds", "0"], "--seeds must be at least 1"),
        (["--prompt-set", "shapes", "--models", "a", "--steps", "0"], "steps must be at least 1"),
    ],
)
def test_create_run_refuses_bad_input_with_a_clear_message(make_prompt_set, three_models, args, message):
    make_prompt_set(name="shapes")
    with pytest.raises(CommandError, match=message):
        call_command("create_run", "--name", "bad", *args)


def test_retry_failed_and_sweep_from_the_command_line(
    make_prompt_set, three_models, broker, capsys, django_capture_on_commit_callbacks
):
    run = services.create_run(
        name="r", prompt_set=make_prompt_set(), image_models=three_models[:1], seeds=[0], dispatch=False
    ).run
    services.mark_job_failed(run.jobs.get().pk, "model a: broken")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("retry_failed", str(run.pk))
    assert "sent 1 failed job(s) again" in capsys.readouterr().out
    assert run.jobs.get().status == "queued"
    call_command("sweep_lost_jobs")
    assert "re-sent 0, failed 0" in capsys.readouterr().out
    with pytest.raises(CommandError, match="matches 0 runs"):
        call_command("retry_failed", "no such run")


def test_add_checkpoint_schedule(
    make_prompt_set, three_models, tmp_path, broker, capsys, django_capture_on_commit_callbacks
):
    make_prompt_set(name="shapes")
    tiny_inhouse_checkpoint(tmp_path / "ckpts" / "step-100", step=100)
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "add_checkpoint_schedule",
            "--name",
            "nightly",
            "--directory",
            str(tmp_path / "ckpts"),
            "--baseline",
            "a",
            "--prompt-set",
            "shapes",
            "--cron",
            "0 3 * * *",
            "--seeds",
            "2",
            "--check-now",
        )
    schedule = CheckpointSchedule.objects.get(name="nightly")
    assert schedule.periodic_task.crontab.hour == "3"
    out = capsys.readouterr().out
    assert "started run(s)" in out and ComparisonRun.objects.filter(name__startswith="nightly: step-100").exists()
    with pytest.raises(CommandError, match="exists"):
        call_command(
            "add_checkpoint_schedule",
            "--name",
            "nightly",
            "--directory",
            str(tmp_path),
            "--baseline",
            "a",
            "--prompt-set",
            "shapes",
        )
    with pytest.raises(CommandError, match="5 fields"):
        call_command(
            "add_checkpoint_schedule",
            "--name",
            "other",
            "--directory",
            str(tmp_path),
            "--baseline",
            "a",
            "--prompt-set",
            "shapes",
            "--cron",
            "nightly",
        )


def test_seed_demo_registers_the_demo_models_and_starts_the_demo_run_once(
    db, media_root, tmp_path, broker, django_capture_on_commit_callbacks
):
    demo = tmp_path / "demo_models"
    tiny_inhouse_checkpoint(demo / "mmdit-demo", step=2000)
    tiny_inhouse_checkpoint(demo / "mmdit-demo-early", step=500)
    tiny_unet_checkpoint(demo / "unet-baseline")
    (demo / "clip-demo").mkdir()
    (demo / "clip-demo" / "config.json").write_text('{"kind": "dual_encoder"}')  # not an image model
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--models-dir", str(demo))
    models = {m.name: m for m in ImageModel.objects.all()}
    assert set(models) == {"mmdit-demo", "mmdit-demo-early", "unet-baseline"}
    assert models["unet-baseline"].kind == "unet_baseline" and models["mmdit-demo"].kind == "inhouse"
    assert models["mmdit-demo"].sampler_settings["height"] == 16  # the checkpoint's own resolution
    run = ComparisonRun.objects.get(name="Demo comparison")
    prompts = PromptSet.objects.get(name="Demo shapes, positions and words").prompts.count()
    assert run.image_models.count() == 3 and run.images.count() == 3 * prompts * 2
    assert run.sampler_overrides == {"steps": 28, "guidance_scale": 4.0, "height": 32, "width": 32}
    sent = len(broker.messages())
    assert sent == run.jobs.count() > 0
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--models-dir", str(demo))  # idempotent: no second run, nothing sent
    assert ComparisonRun.objects.count() == 1 and len(broker.messages()) == sent
    campaign = Campaign.objects.get(name="Demo campaign")  # one campaign, the demo rater in it
    assert campaign.run == run and list(campaign.raters.values_list("user__username", flat=True)) == ["rater"]


def test_seed_demo_without_demo_models_starts_no_run(db, media_root, tmp_path, capsys):
    call_command("seed_demo", "--models-dir", str(tmp_path / "empty"))
    assert "demo run not started" in capsys.readouterr().out and not ComparisonRun.objects.exists()
