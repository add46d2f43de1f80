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


def test_rate_limits_let_requests_through_while_the_shared_cache_is_away(rater_client, settings, client):
    """Redis restarting: a limit that cannot be counted does not turn into errors for every rater."""
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
    }}  # fmt: skip
    rater, campaign = rater_client
    assert rater.get("/api/assignments/next", {"campaign": campaign.pk}).status_code == 200
    failed_login = client.post("/accounts/login/", {"username": "nobody", "password": "wrong"})
    assert failed_login.status_code == 200  # the form again, with its error; not a 500 or a 503


@pytest.mark.django_db(transaction=True)  # outside a test transaction, as a request is
def test_a_request_whose_connection_died_under_it_runs_again(rater_client, monkeypatch):
    """A database restart cuts off the queries in flight: the API runs the request again on a new connection
    (its transaction was rolled back), so the rater never sees the restart; a vote is stored once."""
    import json

    from evalsite.rating import api
    from evalsite.rating.models import Vote

    client, campaign = rater_client
    real_hand_out, real_record = engine.hand_out, api.submit_votes
    calls = {"next": 0, "vote": 0}

    def cut_off_once(name, real):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            if calls[name] == 1:
                raise OperationalError("terminating connection due to administrator command")
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(engine, "hand_out", cut_off_once("next", real_hand_out))
    monkeypatch.setattr(api, "submit_votes", cut_off_once("vote", real_record))
    response = client.get("/api/assignments/next", {"campaign": campaign.pk})
    assert response.status_code == 200 and calls["next"] == 2
    a = response.json()["assignment"]
    body = {"idempotency_key": "restart-0001", "choices": {c["key"]: "left" for c in a["criteria"]}}
    vote = client.post(a["votes_url"], json.dumps(body), content_type="application/json")
    assert vote.status_code == 201 and calls["vote"] == 2
    assert Vote.objects.filter(assignment_id=a["id"]).count() == len(a["criteria"])


@pytest.mark.django_db(transaction=True)
def test_a_vote_that_brings_the_next_pair_runs_again_whole_when_the_connection_dies_in_the_hand_out(
    rater_client, monkeypatch
):
    """The vote and the next pair's hand-out share one transaction: a connection cut off in the hand-out rolls
    the vote back with it, the request runs again, and the vote is stored once, with a next pair."""
    import json

    from evalsite.rating.models import Vote

    client, campaign = rater_client
    a = client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]
    real_hand_out, calls = engine.hand_out, []

    def cut_off_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return real_hand_out(*args, **kwargs)

    monkeypatch.setattr(engine, "hand_out", cut_off_once)
    body = {"idempotency_key": "restart-0002", "choices": {c["key"]: "left" for c in a["criteria"]}}
    vote = client.post(a["votes_url"] + "?next=1", json.dumps(body), content_type="application/json")
    assert vote.status_code == 201 and len(calls) == 2
    assert vote.json()["next"]["assignment"]["id"] != a["id"]
    assert Vote.objects.filter(assignment_id=a["id"]).count() == len(a["criteria"])


def test_the_default_cache_treats_a_redis_that_is_away_as_a_miss():
    from evalsite.cache import TolerantRedisCache

    away = TolerantRedisCache("redis://127.0.0.1:1/0", {})
    assert away.get("k", "fallback") == "fallback" and away.get_many(["k"]) == {}
    assert away.set("k", 1) is None and away.add("k", 1) is False and away.delete("k") is False
    assert away.has_key("k") is False and away.touch("k") is False


def test_the_default_cache_on_a_live_redis_is_a_plain_redis_cache():
    import redis

    from evalsite.cache import TolerantRedisCache

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    live = TolerantRedisCache("redis://127.0.0.1:6379/7", {})
    live.set("tolerant-test", {"a": 1}, 30)
    assert live.get("tolerant-test") == {"a": 1} and live.add("tolerant-test", 2) is False
    assert live.delete("tolerant-test") is True and live.get("tolerant-test") is None
