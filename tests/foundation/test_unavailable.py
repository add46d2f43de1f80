"""A database or cache that is briefly away costs a rater a short wait, never a 500: the API answers a JSON 503
with Retry-After (and the rater page sends the same answer again, tests/rating/test_browser.py), pages answer a
503 that reloads itself, and a real bug is a plain 500 that shows nothing internal."""

from __future__ import annotations

import pytest
from django.db.utils import InterfaceError, OperationalError
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from evalsite.rating import engine

pytestmark = pytest.mark.django_db


@pytest.fixture
def rater_client(make_campaign, make_rater):
    rater = make_rater("r")
    campaign = make_campaign(raters=[rater], gold_rate=0.0)
    client = Client(raise_request_exception=False)
    client.force_login(rater.user)
    return client, campaign


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        InterfaceError("connection already closed"),
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ],
    ids=["database down", "connection closed", "redis down"],
)
def test_the_api_answers_503_with_retry_after_when_a_service_is_away(rater_client, monkeypatch, error):
    client, campaign = rater_client

    def away(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "hand_out", away)
    response = client.get("/api/assignments/next", {"campaign": campaign.pk})
    assert response.status_code == 503
    assert response["Retry-After"] == "2" and response["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "unavailable",
        "detail": "The service is briefly unavailable; nothing was stored. Try again in a moment.",
        "retry_after_seconds": 2,
    }
    monkeypatch.undo()
    assert client.get("/api/assignments/next", {"campaign": campaign.pk}).status_code == 200  # and it recovers


def test_a_page_answers_a_503_that_tries_again_by_itself(staff_client, monkeypatch):
    from evalsite.runs import views

    def away(*args, **kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    monkeypatch.setattr(views, "render", away)
    staff_client.raise_request_exception = False
    response = staff_client.get("/runs/")
    assert response.status_code == 503 and response["Retry-After"] == "2"
    page = response.content.decode()
    assert '<meta http-equiv="refresh" content="2">' in page and "briefly unavailable" in page
    assert "5432" not in page and "Traceback" not in page


def test_a_bug_is_a_plain_500_that_shows_nothing_internal(rater_client, monkeypatch):
    client, campaign = rater_client

    def bug(*args, **kwargs):
        raise KeyError("secret_internal_name")

    monkeypatch.setattr(engine, "hand_out", bug)
    response = client.get("/api/assignments/next", {"campaign": campaign.pk})
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "detail": "Something went wrong on our side."}
    assert b"secret_internal_name" not in response.content
