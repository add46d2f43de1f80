"""The web process sends generation work by name through generation.contract and never loads torch; every site
process runs offline unless told otherwise."""

import os
import subprocess
import sys
import textwrap

import pytest

from evalsite.catalog.models import ImageModel
from generation import contract
from tests.support import REPO_ROOT

HEAVY = ("torch", "diffusers", "transformers")


def run_python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with the site's settings, its own SQLite database and var dir."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "HF_"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={
            **clean,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "EVALSITE_VAR_DIR": str(tmp_path / "var"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_web_process_creates_a_run_and_sends_its_jobs_without_importing_torch(tmp_path):
    result = run_python(
        f"""
        import sys
        import django
        django.setup()
        from django.core.management import call_command
        call_command("migrate", verbosity=0)
        import evalsite.urls  # every page and API the web process serves
        from evalsite.catalog.models import ImageModel, Prompt, PromptSet
        from evalsite.runs import services
        prompts = PromptSet.objects.create(name="p")
        Prompt.objects.create(prompt_set=prompts, position=0, text="a red circle")
        model = ImageModel.objects.create(name="m", kind="inhouse", source="/checkpoints/m")
        planned = services.create_run(name="r", prompt_set=prompts, image_models=[model], seeds=[0, 1])
        print("queued", planned.run.jobs.filter(status="queued").count())
        print("heavy", sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
        """,
        tmp_path,
        DJANGO_SETTINGS_MODULE="evalsite.settings",
        CELERY_BROKER_URL="memory://",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "queued 1" in result.stdout  # the job was sent (after the commit), so the task name was used
    assert "heavy []" in result.stdout, result.stdout


SHOW_OFFLINE = "import os; print('offline', os.environ.get('HF_HUB_OFFLINE'))"


@pytest.mark.parametrize(
    "start",
    [
        "import evalsite.wsgi",  # gunicorn evalsite.wsgi:application
        "from evalsite.celery import app",  # celery -A evalsite worker / beat
        "import manage; manage.sys.argv = ['manage.py', 'check']; manage.main()",  # manage.py
    ],
    ids=["web", "celery", "manage.py"],
)
def test_every_site_process_runs_offline_by_default(tmp_path, start):
    result = run_python(f"{start}\n{SHOW_OFFLINE}", tmp_path)
    assert "offline 1" in result.stdout, result.stderr[-3000:]


def test_an_offline_setting_in_the_environment_wins(tmp_path):
    result = run_python(f"import evalsite.wsgi\n{SHOW_OFFLINE}", tmp_path, HF_HUB_OFFLINE="0")
    assert "offline 0" in result.stdout, result.stderr[-3000:]


def test_every_model_kind_of_the_contract_can_be_registered():
    assert tuple(ImageModel.Kind.values) == contract.MODEL_KINDS
