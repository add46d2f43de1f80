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


LOCAL_PROBE = """
import django, os, stat
django.setup()
from django.conf import settings
from django.test import Client
print(settings.DEBUG, settings.PRODUCTION, settings.SESSION_COOKIE_SECURE)
key = settings.VAR_DIR / "secret_key"
print(settings.SECRET_KEY == key.read_text().strip(), oct(stat.S_IMODE(os.stat(key).st_mode)), len(settings.SECRET_KEY))
missing = Client(HTTP_HOST="localhost").get("/no-such-page/")
print(missing.status_code, b"URLconf" in missing.content or b"urlpatterns" in missing.content)
print(Client(HTTP_HOST="attacker.example").get("/healthz").status_code)
"""


def _local_probe(var_dir):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EVALSITE_", "DATABASE_"))}
    env = {**clean, "EVALSITE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "evalsite.settings"}
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_the_embedded_default_is_safe_to_expose_by_mistake(tmp_path):
    """No environment at all: DEBUG off, a secret made once under var/ (owner-only), local host names only,
    and an error page that shows nothing of the site's inside."""
    first = _local_probe(tmp_path)
    assert first[0] == "False False False"
    assert first[1] == "True 0o600 86"
    assert first[2] == "404 False"
    assert first[3] == "400"  # a Host header the site does not serve
    key = (tmp_path / "secret_key").read_text()
    assert _local_probe(tmp_path)[1].startswith("True") and (tmp_path / "secret_key").read_text() == key


def test_debug_pages_only_when_asked_for_and_never_in_production():
    assert "cannot go together" in _manage("check", DJANGO_DEBUG="1", EVALSITE_PRODUCTION="1").stderr


THROTTLE_PROBE = """
import django
django.setup()
from types import SimpleNamespace
from django.test import RequestFactory
from rest_framework.request import Request
from evalsite.rating.api import RaterThrottle
request = Request(RequestFactory().get("/api/assignments/next"))
request.user = SimpleNamespace(is_authenticated=True, pk=42)
view = SimpleNamespace(throttle_scope="rater")
print(" ".join(str(RaterThrottle().allow_request(request, view)) for _ in range(2)))
"""


def test_the_rater_rate_limit_is_one_count_across_processes(tmp_path):
    """Three web processes used to count 120/min each (232 requests in 5.4 s got through): now every process
    adds to one count in the shared cache (files under var/ here, Redis where CACHE_URL is set)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EVALSITE_", "CACHE_"))}
    env = {**clean, "EVALSITE_VAR_DIR": str(tmp_path), "EVALSITE_RATER_RATE": "3/min"}
    env["DJANGO_SETTINGS_MODULE"] = "evalsite.settings"

    def probe():
        done = subprocess.run(
            [sys.executable, "-c", THROTTLE_PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert probe() == "True True"
    assert probe() == "True False"  # a second process sees the first one's two requests
