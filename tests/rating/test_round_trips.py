"""What one rated pair costs in database round trips: statements per /next and per vote, pinned.

Counted with warm caches (the engine's hints as a web process holds them between requests), the way a rater
meets the site after their first pair. A change that adds a statement to the vote path fails here; one that
saves a statement lowers the pin (and says so in its commit)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

NEXT = "/api/assignments/next"

# The transaction's BEGIN and COMMIT count (in tests they are a SAVEPOINT and its RELEASE).
# /next: user, campaign + rater id + membership, begin, lock rater, history, the hand-out, commit. The hand-out is
# one statement on PostgreSQL (pick + lock + bump + insert); on SQLite it is three (pick, insert, bump).
NEXT_STATEMENTS = {"postgresql": 7, "sqlite": 9}
# vote: user, begin, lock assignment (+ owner, progress), the answer, commit. The answer is one statement on PostgreSQL
# (insert votes + mark answered + bump the pair's counter); on SQLite it is three.
VOTE_STATEMENTS = {"postgresql": 5, "sqlite": 7}
# A vote that brings the next pair (next=1, what the page sends): both, less one reading of the session's user, the
# campaign + rater + membership statement (the vote's lock reads the campaign, its run and the membership) and the
# hand-out's savepoint and its release (one transaction: the first try needs no savepoint), and the hand-out's lock
# of the rater (the stored vote holds the rater already).
VOTE_THEN_NEXT_STATEMENTS = {db: VOTE_STATEMENTS[db] + NEXT_STATEMENTS[db] - 5 for db in NEXT_STATEMENTS}


def _rate_one(client, campaign, key):
    with CaptureQueriesContext(connection) as next_queries:
        response = client.get(NEXT, {"campaign": campaign.pk})
    assert response.status_code == 200
    shown = response.json()["assignment"]
    body = {"idempotency_key": key, "choices": {c["key"]: "left" for c in shown["criteria"]}}
    with CaptureQueriesContext(connection) as vote_queries:
        response = client.post(shown["votes_url"], data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201
    return response.json(), next_queries, vote_queries


def _listing(queries) -> str:
    return "\n".join(q["sql"][:160] for q in queries.captured_queries)


@pytest.fixture
def warm_client(campaign, rater_of, login):
    """A rater's client after one rated pair (the engine's caches are filled)."""
    client = login(rater_of(campaign))
    _rate_one(client, campaign, "warm-up-0001")
    return client


def test_next_hands_out_a_new_pair_in_a_pinned_number_of_statements(warm_client, campaign):
    _, next_queries, _ = _rate_one(warm_client, campaign, "pinned-0001")
    assert len(next_queries) == NEXT_STATEMENTS[connection.vendor], _listing(next_queries)


def test_a_vote_is_stored_and_answers_progress_in_a_pinned_number_of_statements(warm_client, campaign):
    voted, _, vote_queries = _rate_one(warm_client, campaign, "pinned-0002")
    assert len(vote_queries) == VOTE_STATEMENTS[connection.vendor], _listing(vote_queries)
    counts = [q for q in vote_queries.captured_queries if q["sql"].upper().startswith("SELECT COUNT(")]
    assert not counts, _listing(vote_queries)
    assert voted["progress"]["answered"] == 2  # the warm-up pair and this one, without a COUNT after the vote


def test_a_vote_that_brings_the_next_pair_in_a_pinned_number_of_statements(warm_client, campaign):
    shown = warm_client.get(NEXT, {"campaign": campaign.pk}).json()["assignment"]
    body = {"idempotency_key": "pinned-0004", "choices": {c["key"]: "left" for c in shown["criteria"]}}
    with CaptureQueriesContext(connection) as queries:
        response = warm_client.post(
            shown["votes_url"] + "?next=1", data=json.dumps(body), content_type="application/json"
        )
    assert response.status_code == 201 and response.json()["next"]["assignment"]["id"] != shown["id"]
    assert len(queries) == VOTE_THEN_NEXT_STATEMENTS[connection.vendor], _listing(queries)


def test_a_replayed_vote_answers_the_same_progress(warm_client, campaign):
    voted, _, _ = _rate_one(warm_client, campaign, "pinned-0003")
    assignment_id = voted["assignment"]
    body = {"idempotency_key": "pinned-0003", "choices": voted["choices"]}
    again = warm_client.post(
        f"/api/assignments/{assignment_id}/votes", data=json.dumps(body), content_type="application/json"
    )
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["progress"] == voted["progress"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL only")
def test_the_hot_statements_stay_prepared_on_the_connection(campaign, rater_of, login):
    """After a few pairs the server has the vote's lock, the answer and the hand-out prepared on this connection,
    so it no longer plans them per request (evalsite.dbbackends.postgresql.prepared_cursor)."""
    client = login(rater_of(campaign))
    for n in range(9):  # every pair of the campaign: 6 of them ask 2 questions (the answer's statement per count)
        _rate_one(client, campaign, f"prepared-{n:04d}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    for marker in ("FROM rating_assignment a", "WITH stored AS", "WITH picked AS", "FROM rating_campaign c"):
        assert any(marker in statement for statement in prepared), (marker, prepared)
