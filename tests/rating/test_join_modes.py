"""Sybil resistance chosen by the campaign, through the real views: one-time personal invites, and the
completion code a panel participant gets at the end of their quota."""

from __future__ import annotations

import json
import re

from django.test import Client

from evalsite.rating.models import CampaignJoin, JoinMode, PersonalInvite, Rater
from evalsite.rating.views import completion_code


def join(client, token, participant=""):
    return client.post(f"/join/{token}" + (f"?participant={participant}" if participant else ""))


def test_a_personal_invite_makes_one_account_and_is_then_used_up(campaign):
    invite = PersonalInvite.objects.create(campaign=campaign, label="alice@example.org")
    first = Client()
    assert first.get(f"/join/{invite.token}").status_code == 200  # a link preview makes nothing
    assert not Rater.objects.exists()
    assert join(first, invite.token)["Location"] == f"/rate/{campaign.pk}/"
    rater = Rater.objects.get()
    invite.refresh_from_db()
    assert invite.used_by == rater and invite.used_at is not None
    assert list(campaign.raters.all()) == [rater]
    assert CampaignJoin.objects.get(rater=rater).link == f"personal invite {invite.pk}"
    assert join(first, invite.token).status_code == 302  # its own rater may open it again
    assert join(Client(REMOTE_ADDR="198.51.100.9"), invite.token).status_code == 410  # anyone else: used
    assert Rater.objects.count() == 1


def test_a_logged_in_user_can_use_a_personal_invite_but_not_someone_elses(campaign, django_user_model):
    invite = PersonalInvite.objects.create(campaign=campaign)
    alice, bob = Client(), Client()
    alice.force_login(django_user_model.objects.create_user("alice"))
    bob.force_login(django_user_model.objects.create_user("bob"))
    assert join(alice, invite.token).status_code == 302
    assert join(bob, invite.token).status_code == 410
    assert [r.user.username for r in campaign.raters.all()] == ["alice"]


def test_a_member_opening_another_personal_invite_does_not_use_it_up(campaign):
    first, second = PersonalInvite.objects.bulk_create([PersonalInvite(campaign=campaign) for _ in range(2)])
    client = Client()
    join(client, first.token)
    assert join(client, second.token).status_code == 302
    second.refresh_from_db()
    assert second.used_by is None  # still good for the person it was sent to
    assert join(Client(), second.token).status_code == 302 and campaign.raters.count() == 2


def test_a_personal_invite_campaign_refuses_its_invite_link_but_not_the_simulation_link(campaign):
    campaign.join_mode = JoinMode.PERSONAL
    campaign.save()
    assert join(Client(), campaign.invite_token).status_code == 403
    assert not Rater.objects.exists()
    assert join(Client(), campaign.simulation_token).status_code == 302
    invite = PersonalInvite.objects.create(campaign=campaign)
    assert join(Client(), invite.token).status_code == 302
    assert campaign.raters.count() == 2


def test_personal_invites_are_not_bound_by_the_address_budget_or_the_link_cap(campaign, settings):
    settings.EVALSITE_JOIN_RATE = "1/hour"
    campaign.invite_join_cap = 1
    campaign.save()
    invites = PersonalInvite.objects.bulk_create([PersonalInvite(campaign=campaign) for _ in range(3)])
    statuses = [join(Client(REMOTE_ADDR="203.0.113.7"), i.token).status_code for i in invites]
    assert statuses == [302, 302, 302]  # a lab behind one address; each invite still makes one account


def test_an_invite_of_a_closed_campaign_is_refused(campaign):
    invite = PersonalInvite.objects.create(campaign=campaign)
    campaign.is_open = False
    campaign.save()
    assert join(Client(), invite.token).status_code == 404


def test_the_invite_link_records_when_and_how_each_rater_joined(campaign):
    join(Client(), campaign.invite_token)
    join(Client(), campaign.simulation_token)
    assert sorted(CampaignJoin.objects.values_list("link", flat=True)) == ["invite link", "simulation link"]


def test_staff_make_personal_invites_on_the_raters_page(campaign, staff_client):
    url = f"/staff/campaigns/{campaign.pk}/raters"
    response = staff_client.post(url, {"action": "invites", "labels": "alice\nbob\n"})
    assert response.status_code == 200
    assert sorted(PersonalInvite.objects.values_list("label", flat=True)) == ["alice", "bob"]
    staff_client.post(url, {"action": "invites", "count": "3"})
    assert PersonalInvite.objects.count() == 5
    page = staff_client.get(url).content.decode()
    assert all(f"/join/{token}" in page for token in PersonalInvite.objects.values_list("token", flat=True))


# --- Completion codes -----------------------------------------------------------------------------------


def answer(client, campaign):
    body = client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]
    choices = {c["key"]: "left" for c in body["criteria"]}
    key = f"key-{body['id'][:8]}"
    response = client.post(
        body["votes_url"],
        data=json.dumps({"idempotency_key": key, "choices": choices, "time_taken_ms": 3000}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content


def test_a_panel_participant_gets_a_checkable_completion_code_at_the_end_of_their_quota(campaign, staff_client):
    campaign.require_participant_id = True
    campaign.pairs_per_rater = 2
    campaign.save()
    client = Client()
    join(client, campaign.invite_token, participant="PROLIFIC-5f3a")
    client.post(f"/rate/{campaign.pk}/instructions")
    rate_page = client.get(f"/rate/{campaign.pk}/").content.decode()
    assert f'href="/rate/{campaign.pk}/complete"' in rate_page
    answer(client, campaign)
    not_yet = client.get(f"/rate/{campaign.pk}/complete")
    assert not_yet.status_code == 403 and "1 of 2" in not_yet.content.decode()
    answer(client, campaign)
    done = client.get(f"/rate/{campaign.pk}/complete")
    assert done.status_code == 200 and done["Cache-Control"] == "no-store"
    code = re.search(r'id="completion-code"[^>]*>([A-Z2-7]{12})<', done.content.decode()).group(1)
    assert code == completion_code(campaign, "PROLIFIC-5f3a")
    assert code != completion_code(campaign, "PROLIFIC-5f3b")  # one participant cannot make another's
    # the researcher checks the codes the panel reports against the staff page
    staff_page = staff_client.get(f"/staff/campaigns/{campaign.pk}/raters").content.decode()
    assert "PROLIFIC-5f3a" in staff_page and code in staff_page


def test_no_completion_code_without_a_participant_id_or_a_quota(campaign, rater_of, login):
    client = login(rater_of(campaign))
    assert client.get(f"/rate/{campaign.pk}/complete").status_code == 404
    assert "completion" not in client.get(f"/rate/{campaign.pk}/").content.decode()
    outsider = Client()
    join(outsider, campaign.invite_token, participant="P-1")
    campaign.raters.clear()
    assert outsider.get(f"/rate/{campaign.pk}/complete").status_code == 403
