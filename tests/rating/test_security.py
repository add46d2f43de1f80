"""Who may reach what: own assignments and images only, staff pages for staff, CSRF on the page's POSTs,
per-rater rate limiting, and the invite / instructions flow."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from evalsite.rating.models import Assignment, Rater, Vote


@pytest.fixture
def rater(campaign, rater_of):
    return rater_of(campaign)


def next_assignment(client, campaign):
    return client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]


def vote_body(a, key="csrf-test-key"):
    return json.dumps({"idempotency_key": key, "choices": {c["key"]: "left" for c in a["criteria"]}})


# --- CSRF ------------------------------------------------------------------------------------------


def test_the_vote_post_needs_the_pages_csrf_token(campaign, rater):
    client = Client(enforce_csrf_checks=True)
    client.force_login(rater.user)
    page = client.get(f"/rate/{campaign.pk}/")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.content.decode()).group(1)
    a = next_assignment(client, campaign)
    url = a["votes_url"]
    refused = client.post(url, data=vote_body(a), content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
    assert not Vote.objects.exists()
    accepted = client.post(url, data=vote_body(a), content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert Vote.objects.count() == len(a["criteria"])


def test_the_join_and_instructions_forms_need_csrf(campaign, rater):
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post(f"/join/{campaign.invite_token}").status_code == 403
    assert not Rater.objects.exclude(pk=rater.pk).exists()
    rater.instructions_seen_at = None
    rater.save()
    client = Client(enforce_csrf_checks=True)
    client.force_login(rater.user)
    assert client.post(f"/rate/{campaign.pk}/instructions").status_code == 403
    rater.refresh_from_db()
    assert rater.instructions_seen_at is None


# --- Throttling --------------------------------------------------------------------------------------


def test_each_rater_is_rate_limited_on_their_own(campaign, rater, rater_of, login, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"rater": "3/min"}}
    client = login(rater)
    statuses = [client.get("/api/assignments/next", {"campaign": campaign.pk}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = client.get("/api/assignments/next", {"campaign": campaign.pk})
    assert throttled.json()["error"] == "throttled" and int(throttled["Retry-After"]) > 0
    other = login(rater_of(campaign, "other"))
    assert other.get("/api/assignments/next", {"campaign": campaign.pk}).status_code == 200


def test_a_throttled_vote_stores_nothing(campaign, rater, login, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"rater": "1/min"}}
    client = login(rater)
    a = next_assignment(client, campaign)
    response = client.post(a["votes_url"], data=vote_body(a), content_type="application/json")
    assert response.status_code == 429 and not Vote.objects.exists()


# --- Images ------------------------------------------------------------------------------------------


def test_a_rater_may_fetch_only_the_images_of_their_own_assignments(campaign, rater, rater_of, login):
    mine = login(rater)
    a = next_assignment(mine, campaign)
    for side in ("left", "right"):
        response = mine.get(a["images"][side]["url"])
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
    other = login(rater_of(campaign, "other"))
    assert other.get(a["images"]["left"]["url"]).status_code == 404
    assert Client().get(a["images"]["left"]["url"]).status_code == 302  # to the login page
    row = Assignment.objects.get(pk=a["id"])
    from evalsite.runs.models import Image

    never_shown = Image.objects.exclude(pk__in=[row.image_left_id, row.image_right_id]).first()
    assert mine.get(f"/i/{never_shown.token}.png").status_code == 404
    assert mine.get("/i/no-such-token.png").status_code == 404


def test_staff_may_fetch_any_image(campaign, staff_user):
    from evalsite.runs.models import Image

    client = Client()
    client.force_login(staff_user)
    assert client.get(f"/i/{Image.objects.first().token}.png").status_code == 200


# --- Pages ---------------------------------------------------------------------------------------------


def test_staff_pages_require_staff(campaign, rater, login, staff_user):
    urls = ["/staff/campaigns/", f"/staff/campaigns/{campaign.pk}/raters"]
    for url in urls:
        assert Client().get(url).status_code == 302
        refused = login(rater).get(url)
        assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    staff = Client()
    staff.force_login(staff_user)
    for url in urls:
        assert staff.get(url).status_code == 200
    assert login(rater).post(urls[1], {"action": "prepare"}).status_code == 302
    assert not campaign.image_pairs.exists()
    assert staff.post(urls[1], {"action": "prepare"}).status_code == 200
    assert campaign.image_pairs.count() == 9


def test_the_rating_page_is_only_for_raters_of_the_campaign(campaign, rater, make_rater, login):
    assert Client().get(f"/rate/{campaign.pk}/").status_code == 302
    assert login(make_rater("outsider")).get(f"/rate/{campaign.pk}/").status_code == 403
    assert login(rater).get(f"/rate/{campaign.pk}/").status_code == 200


def test_instructions_are_shown_once_before_the_first_pair(campaign, rater_of, login):
    rater = rater_of(campaign)
    rater.instructions_seen_at = None
    rater.save()
    client = login(rater)
    first = client.get(f"/rate/{campaign.pk}/")
    assert first.status_code == 302 and first["Location"] == f"/rate/{campaign.pk}/instructions"
    page = client.get(first["Location"]).content.decode()
    assert "Which image looks more representative to the text shown above and faithfully follows it?" in page
    assert client.post(first["Location"])["Location"] == f"/rate/{campaign.pk}/"
    assert client.get(f"/rate/{campaign.pk}/").status_code == 200


def test_an_invite_link_creates_an_anonymous_rater_on_post_only(campaign, make_campaign):
    client = Client()
    url = f"/join/{campaign.invite_token}"
    assert client.get(url).status_code == 200
    assert not Rater.objects.exists()
    response = client.post(url)
    assert response["Location"] == f"/rate/{campaign.pk}/"
    rater = Rater.objects.get()
    assert rater.user.username.startswith("rater-") and not rater.user.has_usable_password()
    assert list(campaign.raters.all()) == [rater]
    assert client.get(response["Location"])["Location"] == f"/rate/{campaign.pk}/instructions"
    # The same browser joining another campaign keeps its account.
    other = make_campaign(name="second", run=campaign.run)
    client.post(f"/join/{other.invite_token}")
    assert Rater.objects.count() == 1 and other.raters.get() == rater


def test_a_logged_in_user_joins_with_their_account(campaign, django_user_model):
    user = django_user_model.objects.create_user("alice")
    client = Client()
    client.force_login(user)
    client.post(f"/join/{campaign.invite_token}")
    assert campaign.raters.get().user == user


def test_unknown_or_closed_invites_are_refused(campaign):
    assert Client().post("/join/not-a-token").status_code == 404
    campaign.is_open = False
    campaign.save()
    assert Client().post(f"/join/{campaign.invite_token}").status_code == 404
    assert not Rater.objects.exists()
