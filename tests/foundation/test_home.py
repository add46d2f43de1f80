import pytest


@pytest.mark.django_db
def test_home_links_staff_to_runs_dashboards_and_raters_to_their_campaigns(
    client, staff_user, make_rater, make_campaign
):
    rater = make_rater()
    campaign = make_campaign(raters=[rater], name="flux-vs-mmdit-secret")
    client.force_login(staff_user)
    page = client.get("/").content.decode()
    assert 'href="/runs/"' in page and 'href="/dashboards/"' in page and 'href="/admin/"' in page
    client.force_login(rater.user)
    page = client.get("/").content.decode()
    assert f'href="/rate/{campaign.id}/"' in page
    assert 'href="/runs/"' not in page and 'href="/admin/"' not in page
    assert "flux-vs-mmdit-secret" not in page  # campaign names often name the models


def test_home_sends_anonymous_visitors_to_login(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
