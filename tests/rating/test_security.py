"""Who may reach what: own assignments and images only, staff pages for staff, CSRF on the page's POSTs,
per-rater rate limiting, and the invite / instructions flow."""

from __future__ import annotations

import json
import re
import uuid

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


@pytest.fixture
def throttle_clock(monkeypatch):
    """The rate limit's windows are aligned on the clock: pinned 20 s into a minute, so that a test's requests
    never straddle a window's end."""
    from evalsite import throttles

    now = {"t": 6_000_000_020.0}
    monkeypatch.setattr(throttles, "_now", lambda: now["t"])
    return now


def test_each_rater_is_rate_limited_on_their_own(campaign, rater, rater_of, login, settings, throttle_clock):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"rater": "3/min"}}
    client = login(rater)
    statuses = [client.get("/api/assignments/next", {"campaign": campaign.pk}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    throttled = client.get("/api/assignments/next", {"campaign": campaign.pk})
    # 5 counted in this minute: room again when they weigh at most 2 in the last minute, 36 s into the next one
    assert throttled.json()["error"] == "throttled" and 76 <= int(throttled["Retry-After"]) <= 78  # 40 + 36 s, up
    other = login(rater_of(campaign, "other"))
    assert other.get("/api/assignments/next", {"campaign": campaign.pk}).status_code == 200
    throttle_clock["t"] += int(throttled["Retry-After"])  # 37-38 s into the next minute: 1 + 5 x 0.38 <= 3
    assert client.get("/api/assignments/next", {"campaign": campaign.pk}).status_code == 200


def test_a_throttled_vote_stores_nothing(campaign, rater, login, settings, throttle_clock):
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
    # A rater reaches images through assignments only: not by token, not even the ones just shown.
    assert mine.get(f"/i/{row.image_left.token}.png").status_code == 404
    for bad in (f"/i/{a['id']}/middle.png", "/i/not-a-uuid/left.png", f"/i/{uuid.uuid4()}/left.png"):
        assert mine.get(bad).status_code == 404


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


# --- Joining: one person cannot mint raters ------------------------------------------------------------


def test_one_client_address_makes_only_so_many_new_accounts(campaign, settings):
    settings.EVALSITE_JOIN_RATE = "2/hour"
    url = f"/join/{campaign.invite_token}"
    statuses = [Client(REMOTE_ADDR="203.0.113.7").post(url).status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    assert campaign.raters.count() == 2
    assert Client(REMOTE_ADDR="198.51.100.1").post(url).status_code == 302  # another address
    spoofed = Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert spoofed.post(url).status_code == 429  # a client's own X-Forwarded-For is not believed


def test_the_simulation_link_is_not_throttled_as_people_are(campaign, settings):
    settings.EVALSITE_JOIN_RATE = "1/hour"
    url = f"/join/{campaign.simulation_token}"
    assert [Client().post(url).status_code for _ in range(3)] == [302, 302, 302]


def test_an_invite_link_brings_in_at_most_its_cap(campaign):
    campaign.invite_join_cap = 2
    campaign.save()
    url = f"/join/{campaign.invite_token}"
    first = Client()
    assert first.post(url).status_code == 302
    assert Client(REMOTE_ADDR="198.51.100.2").post(url).status_code == 302
    assert Client(REMOTE_ADDR="198.51.100.3").post(url).status_code == 403
    assert campaign.raters.count() == 2
    assert first.post(url).status_code == 302  # a rater already in may open the link again


def test_a_panel_campaign_takes_one_account_per_participant_id(campaign):
    campaign.require_participant_id = True
    campaign.save()
    url = f"/join/{campaign.invite_token}"
    assert Client().post(url).status_code == 400
    assert Client().post(f"{url}?participant=P-17").status_code == 302
    again = Client(REMOTE_ADDR="198.51.100.4").post(f"{url}?participant=P-17")
    assert again.status_code == 409
    assert list(campaign.raters.values_list("participant_id", flat=True)) == ["P-17"]


# --- Login throttle ------------------------------------------------------------------------------------


def test_failed_logins_are_limited_per_address_and_per_user_name(django_user_model, settings):
    settings.EVALSITE_LOGIN_FAILURE_RATE = "3/hour"
    django_user_model.objects.create_user("alice", password="right-password-123")
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    tries = [attacker.post("/accounts/login/", {"username": "alice", "password": f"guess{i}"}) for i in range(4)]
    assert [t.status_code for t in tries] == [200, 200, 200, 429]
    assert "Too many failed logins" in tries[-1].content.decode()
    # Past the limit even the right password is refused from that address, and for that user name elsewhere.
    right = {"username": "alice", "password": "right-password-123"}
    assert attacker.post("/accounts/login/", right).status_code == 429
    assert Client(REMOTE_ADDR="198.51.100.5").post("/accounts/login/", right).status_code == 429
    django_user_model.objects.create_user("bob", password="right-password-456")
    bob = Client(REMOTE_ADDR="198.51.100.5").post(
        "/accounts/login/", {"username": "bob", "password": "right-password-456"}
    )
    assert bob.status_code == 302


# --- Content-Security-Policy and the API docs ------------------------------------------------------------


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


def test_every_page_carries_a_csp_that_its_own_html_obeys(campaign, rater, login, staff_user):
    """The policy allows scripts from the site's own files only: no page may need an inline script."""
    staff = Client()
    staff.force_login(staff_user)
    pages = [
        (login(rater), f"/rate/{campaign.pk}/"),
        (Client(), "/accounts/login/"),
        (Client(), f"/join/{campaign.invite_token}"),
        (staff, f"/runs/{campaign.run.pk}/"),
        (staff, "/runs/"),
        (staff, f"/dashboards/campaign/{campaign.pk}/"),
        (staff, "/dashboards/"),
        (staff, "/staff/campaigns/"),
        (staff, "/api/docs/"),
    ]
    for client, url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html), f"{url} has an inline script"
    assert "Content-Security-Policy" in login(rater).get("/api/assignments/next", {"campaign": campaign.pk})


def test_the_api_docs_load_nothing_from_another_origin(staff_user):
    staff = Client()
    staff.force_login(staff_user)
    html = staff.get("/api/docs/").content.decode()
    assert "redoc" in html.lower() and "http://" not in html and "https://" not in html
    script = re.search(r'<script src="([^"]+)"', html).group(1)
    assert script.startswith("/static/") and staff.get(script).status_code == 200
