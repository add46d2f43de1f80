"""The JSON API: next assignment and vote submission, idempotent resubmission, and every refusal as a 4xx
JSON error that stores nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse, set_script_prefix
from django.utils import timezone

from evalsite.rating.models import Assignment, GoldCheck, Vote
from evalsite.rating.serializers import MAX_TIME_TAKEN_MS, VoteRequestSerializer, assignment_payload, plain_vote_body

NEXT = "/api/assignments/next"


def post_votes(client, assignment_id, body, raw=None):
    return client.post(
        f"/api/assignments/{assignment_id}/votes",
        data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
    )


def get_next(client, campaign, **params):
    return client.get(NEXT, {"campaign": campaign.pk, **params})


@pytest.fixture
def rater(campaign, rater_of):
    return rater_of(campaign)


@pytest.fixture
def client(rater, login):
    return login(rater)


@pytest.fixture
def shown(client, campaign):
    """The assignment the API hands out, as JSON, plus its row."""
    body = get_next(client, campaign).json()["assignment"]
    return body, Assignment.objects.get(pk=body["id"])


def full_body(assignment_json, choice="left", key="key-0001"):
    return {
        "idempotency_key": key,
        "choices": {c["key"]: choice for c in assignment_json["criteria"]},
        "time_taken_ms": 2345,
    }


def test_next_returns_id_prompt_criteria_two_image_urls_and_expiry(client, campaign):
    response = get_next(client, campaign)
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    a = body["assignment"]
    row = Assignment.objects.get(pk=a["id"])
    assert a["prompt"]["text"] == row.prompt.text
    assert a["images"]["left"] == {"url": f"/i/{row.id}/left.png", "alt": "Left image", "views": 1}
    assert a["images"]["right"] == {"url": f"/i/{row.id}/right.png", "alt": "Right image", "views": 1}
    assert a["expires_at"].startswith(str(row.expires_at.year))
    assert a["votes_url"] == f"/api/assignments/{row.id}/votes"
    assert body["progress"] == {"answered": 0, "target": None}
    keys = [c["key"] for c in a["criteria"]]
    assert keys[:2] == ["prompt_following", "aesthetics"]
    assert a["criteria"][0]["question"] == (
        "Which image looks more representative to the text shown above and faithfully follows it?"
    )


def test_typography_is_asked_only_for_prompts_that_ask_for_text(client, campaign):
    seen = {}
    for _ in range(9):
        a = get_next(client, campaign).json()["assignment"]
        seen[a["prompt"]["text"]] = [c["key"] for c in a["criteria"]]
        assert post_votes(client, a["id"], full_body(a, key=f"k-{a['id']}")).status_code == 201
    assert seen['the word "CAT" in red letters'] == ["prompt_following", "aesthetics", "typography"]
    assert seen["a red circle on a blue background"] == ["prompt_following", "aesthetics"]
    assert get_next(client, campaign).json() == {"assignment": None, "progress": {"answered": 9, "target": None}}


def test_a_vote_is_stored_with_the_models_copied_from_the_images(client, shown, rater):
    a, row = shown
    response = post_votes(client, a["id"], full_body(a, "right"))
    assert response.status_code == 201
    body = response.json()
    assert body["replayed"] is False and body["progress"]["answered"] == 1
    assert body["choices"] == {c["key"]: "right" for c in a["criteria"]}
    votes = list(Vote.objects.filter(assignment=row))
    assert len(votes) == len(a["criteria"])
    for vote in votes:
        assert (vote.model_left_id, vote.model_right_id) == (row.image_left.model_id, row.image_right.model_id)
        assert vote.rater == rater and vote.time_taken_ms == 2345 and vote.is_gold is False
    row.refresh_from_db()
    assert row.status == Assignment.Status.ANSWERED and row.answered_at is not None
    assert row.image_pair.answered == 1


def test_sending_the_same_vote_twice_stores_it_once_and_answers_with_the_stored_vote(client, shown):
    a, row = shown
    first = post_votes(client, a["id"], full_body(a, "tie"))
    again = post_votes(client, a["id"], full_body(a, "tie"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replayed"] is True
    assert again.json()["choices"] == first.json()["choices"]
    assert Vote.objects.filter(assignment=row).count() == len(a["criteria"])
    # A retry that (wrongly) changed its answers still gets the stored vote back, and changes nothing.
    changed = post_votes(client, a["id"], full_body(a, "left"))
    assert changed.status_code == 200 and set(changed.json()["choices"].values()) == {"tie"}
    assert set(Vote.objects.filter(assignment=row).values_list("choice", flat=True)) == {"tie"}


def test_a_second_submission_with_another_key_is_refused_as_already_answered(client, shown):
    a, row = shown
    assert post_votes(client, a["id"], full_body(a, key="first-key")).status_code == 201
    response = post_votes(client, a["id"], full_body(a, "right", key="second-key"))
    assert response.status_code == 409 and response.json()["error"] == "already_answered"
    assert set(Vote.objects.filter(assignment=row).values_list("choice", flat=True)) == {"left"}


def _refusals(a):
    body = full_body(a)
    criteria = [c["key"] for c in a["criteria"]]
    missing = {**body, "choices": {criteria[0]: "left"}}
    return {
        "not json": (None, "{not json", 400, "malformed_body"),
        "json list": (None, "[1, 2]", 400, "malformed_body"),
        "nested too deep": (None, "[" * 100_000 + "]" * 100_000, 400, "malformed_body"),
        "no key": ({k: v for k, v in body.items() if k != "idempotency_key"}, None, 400, "malformed_body"),
        "short key": ({**body, "idempotency_key": "abc"}, None, 400, "malformed_body"),
        "choices not an object": ({**body, "choices": "left"}, None, 400, "malformed_body"),
        "negative time": ({**body, "time_taken_ms": -5}, None, 400, "malformed_body"),
        "unknown choice": (
            {**body, "choices": {**body["choices"], criteria[0]: "sideways"}},
            None,
            400,
            "unknown_choice",
        ),
        "missing criterion": (missing, None, 400, "missing_criterion"),
        "unknown criterion": (
            {**body, "choices": {**body["choices"], "colour": "left"}},
            None,
            400,
            "unknown_criterion",
        ),
    }


@pytest.mark.parametrize("case", list(_refusals({"criteria": [{"key": "x"}]})))
def test_each_bad_body_gets_a_4xx_json_error_and_stores_nothing(client, shown, case):
    a, row = shown
    body, raw, status, code = _refusals(a)[case]
    response = post_votes(client, a["id"], body, raw=raw)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == code and response.json()["detail"]
    assert not Vote.objects.exists()
    row.refresh_from_db()
    assert row.status == Assignment.Status.OPEN


def test_typography_is_a_missing_criterion_for_a_text_prompt_and_unknown_for_others(client, campaign):
    for _ in range(9):
        a = get_next(client, campaign).json()["assignment"]
        keys = [c["key"] for c in a["criteria"]]
        body = full_body(a, key=f"k-{a['id']}")
        if "typography" in keys:
            del body["choices"]["typography"]
            refused = post_votes(client, a["id"], body)
            assert refused.json()["error"] == "missing_criterion" and "typography" in refused.json()["detail"]
            return
        body["choices"]["typography"] = "left"
        assert post_votes(client, a["id"], body).json()["error"] == "unknown_criterion"
        del body["choices"]["typography"]
        assert post_votes(client, a["id"], body).status_code == 201
    raise AssertionError("the text prompt never came up")


def test_an_expired_assignment_is_refused_and_nothing_stored(client, shown):
    a, row = shown
    Assignment.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = post_votes(client, a["id"], full_body(a))
    assert response.status_code == 410 and response.json()["error"] == "assignment_expired"
    assert not Vote.objects.exists()


def test_another_raters_assignment_is_refused_and_nothing_stored(campaign, shown, rater_of, login):
    a, row = shown
    intruder = login(rater_of(campaign, "intruder"))
    response = post_votes(intruder, a["id"], full_body(a))
    assert response.status_code == 403 and response.json()["error"] == "not_your_assignment"
    assert not Vote.objects.exists()


@pytest.mark.parametrize("assignment_id", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_an_unknown_assignment_is_a_json_404(client, shown, assignment_id):
    a, _ = shown
    response = post_votes(client, assignment_id, full_body(a))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert not Vote.objects.exists()


GOOD = {"idempotency_key": "key-0001", "choices": {"aesthetics": "left", "prompt_following": "tie"}}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"time_taken_ms": 2345},
        {"time_taken_ms": None},
        {"time_taken_ms": 0},
        {"time_taken_ms": MAX_TIME_TAKEN_MS},
        {"time_taken_ms": MAX_TIME_TAKEN_MS + 1},
        {"time_taken_ms": -1},
        {"time_taken_ms": True},
        {"time_taken_ms": 12.0},
        {"time_taken_ms": 12.5},
        {"time_taken_ms": "12"},
        {"time_taken_ms": "twelve"},
        {"idempotency_key": " key-0001 "},
        {"idempotency_key": "key-0001\n"},
        {"idempotency_key": "short"},
        {"idempotency_key": "k" * 80},
        {"idempotency_key": "k" * 81},
        {"idempotency_key": 12345678},
        {"idempotency_key": None},
        {"idempotency_key": "key 0001"},
        {"choices": {}},
        {"choices": []},
        {"choices": {"aesthetics": " left "}},
        {"choices": {"aesthetics": "LEFT"}},
        {"choices": {"aesthetics": "left\x00"}},
        {"choices": {"aesthetics": None}},
        {"choices": {"aesthetics": 1}},
        {"choices": {"aesthetics": ""}},
        {"choices": {"anything": "both_bad"}},
        {"extra": "ignored"},
    ],
)
def test_the_hand_read_vote_body_agrees_with_the_serializer(changes):
    """The everyday body is read by hand (serializers.plain_vote_body); whatever it accepts, DRF's serializer must
    accept with the same values, and what it leaves to the serializer keeps the serializer's answer."""
    body = {**GOOD, **changes}
    plain = plain_vote_body(body)
    serializer = VoteRequestSerializer(data=body)
    if plain is None:
        return
    assert serializer.is_valid(), serializer.errors
    data = serializer.validated_data
    assert plain == (data["idempotency_key"], dict(data["choices"]), data.get("time_taken_ms"))


def test_the_everyday_body_is_read_by_hand():
    assert plain_vote_body({**GOOD, "time_taken_ms": 2345}) == ("key-0001", GOOD["choices"], 2345)
    assert plain_vote_body({**GOOD, "time_taken_ms": True}) is None
    assert plain_vote_body({**GOOD, "idempotency_key": "key-0001\n"}) is None


def test_the_pair_urls_follow_the_script_prefix(shown):
    """The payload's URLs are templates worked out once per script prefix (a site mounted under a path)."""
    body, assignment = shown
    assert body["votes_url"] == reverse("rating:votes", args=[assignment.id])
    assert body["images"]["left"]["url"] == reverse("rating:assignment-image", args=[assignment.id, "left"])
    try:
        set_script_prefix("/arena/")
        mounted = assignment_payload(assignment)
        assert mounted["votes_url"] == reverse("rating:votes", args=[assignment.id])
        assert mounted["votes_url"].startswith("/arena/") and str(assignment.id) in mounted["votes_url"]
        assert mounted["images"]["right"]["url"] == reverse("rating:assignment-image", args=[assignment.id, "right"])
    finally:
        set_script_prefix("/")
    assert assignment_payload(assignment)["votes_url"] == body["votes_url"]


def test_next_resumes_the_open_assignment_and_preloads_a_different_one(client, campaign):
    first = get_next(client, campaign).json()["assignment"]
    assert get_next(client, campaign).json()["assignment"]["id"] == first["id"]
    preloaded = get_next(client, campaign, exclude=first["id"]).json()["assignment"]
    assert preloaded["id"] != first["id"]
    refused = client.get(NEXT, {"campaign": campaign.pk, "exclude": [first["id"], preloaded["id"]]})
    assert refused.status_code == 409 and refused.json()["error"] == "too_many_open_assignments"


def post_then_next(client, assignment_id, body, **params):
    query = "&".join(f"{k}={v}" for k, v in {"next": 1, **params}.items())
    return client.post(
        f"/api/assignments/{assignment_id}/votes?{query}", data=json.dumps(body), content_type="application/json"
    )


def open_ids(rater) -> set[str]:
    return {str(pk) for pk in Assignment.objects.filter(rater=rater, status="open").values_list("id", flat=True)}


def test_a_vote_with_next_carries_the_pair_after_the_preloaded_one(client, campaign, rater):
    """What the page does: one request per rated pair, the answer to the shown pair bringing the one after the
    preloaded pair; the rater never holds more than two open pairs."""
    shown = get_next(client, campaign).json()["assignment"]
    preloaded = get_next(client, campaign, exclude=shown["id"]).json()["assignment"]
    seen = {shown["id"], preloaded["id"]}
    for answered in range(1, 5):
        response = post_then_next(client, shown["id"], full_body(shown, key=f"key-{shown['id']}"),
                                  exclude=preloaded["id"])  # fmt: skip
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["replayed"] is False and body["progress"]["answered"] == answered
        assert body["next"]["progress"]["answered"] == answered
        after = body["next"]["assignment"]
        assert after["id"] not in seen, "a pair handed out twice"
        assert open_ids(rater) == {preloaded["id"], after["id"]}
        assert Vote.objects.filter(assignment_id=shown["id"]).count() == len(shown["criteria"])
        seen.add(after["id"])
        shown, preloaded = preloaded, after


def test_without_next_a_vote_answers_as_before(client, shown):
    a, _ = shown
    body = post_votes(client, a["id"], full_body(a)).json()
    assert "next" not in body


def test_a_replayed_vote_with_next_hands_out_the_same_next_pair(client, campaign, rater):
    """A retry after a lost answer: the vote stored once, and the pair handed out the first time comes back
    instead of a third open one."""
    shown = get_next(client, campaign).json()["assignment"]
    first = post_then_next(client, shown["id"], full_body(shown))
    again = post_then_next(client, shown["id"], full_body(shown))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replayed"] is True
    assert again.json()["next"]["assignment"]["id"] == first.json()["next"]["assignment"]["id"]
    assert open_ids(rater) == {first.json()["next"]["assignment"]["id"]}
    assert Vote.objects.filter(assignment_id=shown["id"]).count() == len(shown["criteria"])


def test_a_refused_hand_out_after_a_vote_is_said_beside_the_stored_vote(client, campaign):
    shown = get_next(client, campaign).json()["assignment"]
    campaign.is_open = False
    campaign.save()
    response = post_then_next(client, shown["id"], full_body(shown))
    assert response.status_code == 201
    assert response.json()["next"]["error"] == "campaign_closed"
    assert Vote.objects.filter(assignment_id=shown["id"]).count() == len(shown["criteria"])


def test_a_rater_removed_from_the_campaign_has_the_vote_stored_and_no_next_pair(client, campaign, rater):
    shown = get_next(client, campaign).json()["assignment"]
    campaign.raters.remove(rater)
    response = post_then_next(client, shown["id"], full_body(shown))
    assert response.status_code == 201 and response.json()["next"]["error"] == "not_in_campaign"
    assert open_ids(rater) == set()


def test_a_pair_the_rater_had_elsewhere_is_refused_and_the_vote_stored_once(make_run, make_campaign, rater_of, login):
    """The database refuses a pair the rater already had in another campaign (rater_never_gets_pair_twice): here
    every other gold check of the campaign, written to the rater elsewhere. In a vote with next=1 that error breaks
    the first try's transaction (it has no savepoint); the second try stores the vote once, refuses those pairs in
    the hand-out's own savepoints and hands out a real pair instead."""
    run = make_run()
    campaign = make_campaign(run=run, gold_rate=1.0, votes_per_pair=3)  # every hand-out a gold check while any is left
    elsewhere = make_campaign(run=run, gold_rate=0.0, name="elsewhere")
    rater = rater_of(campaign)
    client = login(rater)
    shown = get_next(client, campaign).json()["assignment"]
    others = GoldCheck.objects.filter(campaign=campaign).exclude(assignments__id=shown["id"])
    assert others.exists()
    for gold in others:
        Assignment.objects.create(
            campaign=elsewhere,
            rater=rater,
            prompt=gold.prompt,
            image_left=gold.correct_image,
            image_right=gold.wrong_image,
            expires_at=timezone.now() + timedelta(hours=1),
        )
    with CaptureQueriesContext(connection) as statements:
        response = post_then_next(client, shown["id"], full_body(shown))
    assert response.status_code == 201, response.content
    assert Vote.objects.filter(assignment_id=shown["id"]).count() == len(shown["criteria"])
    vote_inserts = [q for q in statements.captured_queries if "INSERT INTO" in q["sql"] and "rating_vote" in q["sql"]]
    assert len(vote_inserts) == 2, "the first try should have failed on a refused pair and run again"
    after = Assignment.objects.get(pk=response.json()["next"]["assignment"]["id"])
    assert after.gold_id is None and after.image_pair_id is not None and after.campaign_id == campaign.pk
    assert open_ids(rater) == {str(after.pk)} | {str(pk) for pk in elsewhere.assignments.values_list("id", flat=True)}


def test_no_pair_left_after_a_vote_is_a_null_next(client, campaign):
    campaign.pairs_per_rater = 1
    campaign.save()
    shown = get_next(client, campaign).json()["assignment"]
    body = post_then_next(client, shown["id"], full_body(shown)).json()
    assert body["next"]["assignment"] is None and body["next"]["progress"] == {"answered": 1, "target": 1}


@pytest.mark.parametrize(
    "params, status, code",
    [({"next": "maybe"}, 400, "bad_parameter"), ({"next": 1, "exclude": "not-a-uuid"}, 404, "not_found")],
)
def test_a_bad_next_or_exclude_refuses_the_vote_and_stores_nothing(client, shown, params, status, code):
    a, _ = shown
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = client.post(
        f"/api/assignments/{a['id']}/votes?{query}", data=json.dumps(full_body(a)), content_type="application/json"
    )
    assert response.status_code == status and response.json()["error"] == code
    assert not Vote.objects.exists()


@pytest.mark.parametrize(
    "params, status, code",
    [
        ({}, 400, "bad_campaign"),
        ({"campaign": "abc"}, 400, "bad_campaign"),
        ({"campaign": "\u00b2"}, 400, "bad_campaign"),  # "²" passes str.isdigit(), int() refuses it
        ({"campaign": "\u0661"}, 400, "bad_campaign"),  # an Arabic-Indic one, which int() would take
        ({"campaign": "9" * 30}, 400, "bad_campaign"),  # beyond a 64-bit key
        ({"campaign": 999999}, 404, "campaign_not_found"),
    ],
)
def test_next_with_a_bad_campaign_is_a_json_error(client, params, status, code):
    response = client.get(NEXT, params)
    assert response.status_code == status and response.json()["error"] == code


def test_next_refuses_a_user_who_is_not_a_rater(campaign, django_user_model):
    from django.test import Client

    plain = Client()
    plain.force_login(django_user_model.objects.create_user("plain"))
    response = get_next(plain, campaign)
    assert response.status_code == 403 and response.json()["error"] == "not_a_rater"
    assert not Assignment.objects.exists()


def test_next_refuses_a_rater_outside_the_campaign(campaign, make_rater, login):
    response = get_next(login(make_rater("outsider")), campaign)
    assert response.status_code == 403 and response.json()["error"] == "not_in_campaign"
    assert not Assignment.objects.exists()


def test_next_refuses_a_closed_campaign(campaign, client):
    campaign.is_open = False
    campaign.save()
    response = get_next(client, campaign)
    assert response.status_code == 409 and response.json()["error"] == "campaign_closed"
    assert not Assignment.objects.exists()


def test_the_api_needs_a_logged_in_user(campaign):
    from django.test import Client

    response = Client().get(NEXT, {"campaign": campaign.pk})
    assert response.status_code == 403 and response.json()["error"] == "not_authenticated"


def test_the_site_serves_an_openapi_schema_documenting_both_endpoints(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    paths = schema["paths"]
    assert "/api/assignments/next" in paths
    votes = paths["/api/assignments/{assignment_id}/votes"]["post"]
    assert {"201", "200", "400", "403", "404", "409", "410", "429"} <= set(votes["responses"])
    request_schema = votes["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][request_schema]["required"]) == {"idempotency_key", "choices"}
