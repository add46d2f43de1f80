"""The campaign's simulation link makes simulated accounts; the invite link never does."""

from django.urls import reverse

from evalsite.rating.models import Rater


def test_accounts_made_through_the_simulation_link_are_marked_simulated(client, make_campaign):
    campaign = make_campaign()
    response = client.post(reverse("rating:join", args=[campaign.simulation_token]) + "?participant=sim-careful-0")
    assert response.status_code == 302
    (rater,) = campaign.raters.all()
    assert rater.simulated and rater.participant_id == "sim-careful-0"


def test_accounts_made_through_the_invite_link_are_people(client, make_campaign):
    campaign = make_campaign()
    client.post(reverse("rating:join", args=[campaign.invite_token]) + "?participant=panel-123")
    (rater,) = campaign.raters.all()
    assert not rater.simulated and rater.participant_id == "panel-123"


def test_the_simulation_link_refuses_a_logged_in_person(client, make_campaign, make_rater):
    campaign, person = make_campaign(), make_rater("person")
    client.force_login(person.user)
    response = client.post(reverse("rating:join", args=[campaign.simulation_token]))
    assert response.status_code == 403 and b"simulated raters only" in response.content
    assert not Rater.objects.get(pk=person.pk).simulated and not campaign.raters.exists()


def test_a_malformed_participant_id_is_refused_with_nothing_created(client, make_campaign):
    campaign = make_campaign()
    response = client.post(reverse("rating:join", args=[campaign.invite_token]) + "?participant=<script>")
    assert response.status_code == 400 and not campaign.raters.exists()


def test_campaigns_get_different_invite_and_simulation_tokens(make_campaign, make_run):
    first, second = make_campaign(run=make_run(name="a")), make_campaign(run=make_run(name="b"))
    tokens = {first.invite_token, first.simulation_token, second.invite_token, second.simulation_token}
    assert len(tokens) == 4
