"""Settings come from the environment; a bad value stops start-up with a clear message."""

import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k" * 20 + "-production-test-secret-with-enough-entropy-0123456789",
    "DJANGO_ALLOWED_HOSTS": "eval.example.org",
}


def _manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://x@localhost/db"}, "DATABASE_URL='mysql://x@localhost/db': unsupported scheme"),
        ({"CELERY_BROKER_URL": "kafka://localhost"}, "CELERY_BROKER_URL='kafka://localhost': unsupported scheme"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"EVALSITE_MODEL_CACHE_SIZE": "lots"}, "EVALSITE_MODEL_CACHE_SIZE='lots' is not an integer"),
        ({"EVALSITE_STORAGE": "ftp"}, "EVALSITE_STORAGE='ftp' is not one of filesystem, s3"),
        ({"DJANGO_DEBUG": "0"}, "Environment variable DJANGO_SECRET_KEY is required"),
        ({**PRODUCTION, "DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS is required"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_clear_message(env, message):
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_secrets_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(PRODUCTION["DJANGO_SECRET_KEY"] + "\n")
    env = {**PRODUCTION, "DJANGO_SECRET_KEY_FILE": str(secret)}
    del env["DJANGO_SECRET_KEY"]
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_under_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_migrations_are_complete():
    result = _manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
