"""Management commands of the runs app: create_run, retry_failed, sweep_lost_jobs, add_checkpoint_schedule."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import CheckpointSchedule, ComparisonRun
from tests.support import tiny_inhouse_checkpoint


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


def failed_run(make_prompt_set, model):
    run = services.create_run(
        name="r", prompt_set=make_prompt_set(), image_models=[model], seeds=[0], dispatch=False
    ).run
    services.mark_job_failed(run.jobs.get().pk, "model a: broken")
    return run


def test_retry_failed_sends_the_failed_jobs_of_a_run_again(
    make_prompt_set, three_models, broker, capsys, django_capture_on_commit_callbacks
):
    run = failed_run(make_prompt_set, three_models[0])
    with django_capture_on_commit_callbacks(execute=True):
        call_command("retry_failed", str(run.pk))
    assert "sent 1 failed job(s) again" in capsys.readouterr().out
    assert run.jobs.get().status == "queued"


def test_sweep_lost_jobs_reports_what_it_sent_again_and_failed(
    make_prompt_set, three_models, broker, capsys, django_capture_on_commit_callbacks
):
    run = failed_run(make_prompt_set, three_models[0])
    with django_capture_on_commit_callbacks(execute=True):
        call_command("retry_failed", str(run.pk))
    capsys.readouterr()
    call_command("sweep_lost_jobs")  # the job was sent a moment ago: its lease holds
    assert "re-sent 0, failed 0" in capsys.readouterr().out


def test_retry_failed_refuses_an_unknown_run(db):
    with pytest.raises(CommandError, match="matches 0 runs"):
        call_command("retry_failed", "no such run")


def add_schedule(name: str, directory, *options: str) -> None:
    call_command(
        "add_checkpoint_schedule",
        "--name",
        name,
        "--directory",
        str(directory),
        "--baseline",
        "a",
        "--prompt-set",
        "shapes",
        *options,
    )


def test_add_checkpoint_schedule_installs_its_crontab_and_checks_now(
    make_prompt_set, three_models, tmp_path, broker, capsys, django_capture_on_commit_callbacks
):
    make_prompt_set(name="shapes")
    tiny_inhouse_checkpoint(tmp_path / "ckpts" / "step-100", step=100)
    with django_capture_on_commit_callbacks(execute=True):
        add_schedule("nightly", tmp_path / "ckpts", "--cron", "0 3 * * *", "--seeds", "2", "--check-now")
    schedule = CheckpointSchedule.objects.get(name="nightly")
    assert schedule.periodic_task.crontab.hour == "3"
    out = capsys.readouterr().out
    assert "started run(s)" in out and ComparisonRun.objects.filter(name__startswith="nightly: step-100").exists()


def test_add_checkpoint_schedule_refuses_a_name_that_exists(make_prompt_set, three_models, tmp_path):
    make_prompt_set(name="shapes")
    add_schedule("nightly", tmp_path)
    with pytest.raises(CommandError, match="exists"):
        add_schedule("nightly", tmp_path)


def test_add_checkpoint_schedule_refuses_a_cron_line_without_5_fields(make_prompt_set, three_models, tmp_path):
    make_prompt_set(name="shapes")
    with pytest.raises(CommandError, match="5 fields"):
        add_schedule("other", tmp_path, "--cron", "nightly")
