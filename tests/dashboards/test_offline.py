"""Dashboard pages load no script or style sheet from another host: deployments may be offline."""

import re

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

TAG = re.compile(r"<(script|link)\b[^>]*>", re.I)


@pytest.mark.django_db
def test_no_external_urls_in_script_or_link_tags(staff_client, voted_campaign):
    pages = [
        reverse("dashboards:campaigns"),
        reverse("dashboards:campaign", args=[voted_campaign.pk]),
        reverse("dashboards:campaign", args=[voted_campaign.pk]) + "?criterion=aesthetics&flagged=include",
        reverse("dashboards:votes", args=[voted_campaign.pk]) + "?criterion=aesthetics&model=dash-model-0",
    ]
    for url in pages:
        page = staff_client.get(url).content.decode()
        tags = TAG.findall(page) and [m.group(0) for m in TAG.finditer(page)]
        assert any("charts.js" in t for t in tags), url
        for tag in tags:
            assert not re.search(r"(https?:)?//", tag), (url, tag)


def test_chart_assets_are_local_static_files():
    for name in ("evalsite/charts.js", "evalsite/dashboards.css"):
        path = finders.find(name)
        assert path, name
        with open(path, encoding="utf-8") as handle:
            assert not re.search(r"https?://", handle.read()), name
