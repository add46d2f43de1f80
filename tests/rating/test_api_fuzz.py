"""Schemathesis against the live site, from the OpenAPI schema the site serves: no input is answered with a 5xx.

Bounded (a fixed seed, a few dozen examples per operation, a time limit), so it runs in CI on every change. It
runs once as a rater (the rater API, with a real session and CSRF token) and once as staff (the dashboards API).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def session_headers(client: Client) -> list[str]:
    """A logged-in Django test client's cookies as the headers a real browser would send."""
    csrf = client.cookies.get("csrftoken")
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    headers = ["-H", f"Cookie: {cookies}"]
    if csrf is not None:
        headers += ["-H", f"X-CSRFToken: {csrf.value}"]
    return headers


def fuzz(live_server, client: Client, tmp_path: Path, paths_regex: str, examples: int) -> subprocess.CompletedProcess:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema.json()))
    command = [
        SCHEMATHESIS, "run", str(schema_file), "--url", live_server.url,
        "--checks", "not_a_server_error", "--include-path-regex", paths_regex,
        "--max-examples", str(examples), "--seed", "0", "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none", "--no-color", "--request-timeout", "30",
        "--report", "ndjson", "--report-dir", str(tmp_path / "report"),
        *session_headers(client),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def client_for():
    def make(user) -> Client:
        client = Client()
        client.force_login(user)
        client.cookies["csrftoken"] = secrets.token_urlsafe(24)[:32]  # a CSRF secret: 32 characters
        return client

    return make


def assert_tested(tmp_path: Path, operations: list[str]) -> None:
    """The run really sent requests to these operations (a schema that failed to load also exits 0)."""
    events = "".join(path.read_text() for path in (tmp_path / "report").glob("*.ndjson"))
    for operation in operations:
        assert operation in events, f"schemathesis did not test {operation}"


def test_no_rater_api_input_gets_a_server_error(live_server, campaign, rater_of, client_for, tmp_path, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"rater": "100000/min"}}
    client = client_for(rater_of(campaign).user)
    done = fuzz(live_server, client, tmp_path, r"^/api/assignments/", examples=40)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert_tested(tmp_path, ["/api/assignments/next", "/api/assignments/{assignment_id}/votes"])


def test_no_staff_api_input_gets_a_server_error(live_server, campaign, staff_user, client_for, tmp_path):
    client = client_for(staff_user)
    done = fuzz(live_server, client, tmp_path, r"^/dashboards/api/", examples=15)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert_tested(tmp_path, ["/dashboards/api/campaigns/{campaign_id}/results"])
