"""Votes, images and results export as CSV, Parquet and JSON, from the page and from the API."""

import io

import pandas as pd
import pytest
from django.urls import reverse

from evalsite.rating.models import Vote
from evalsite.runs.models import Image

READERS = {
    "csv": lambda data: pd.read_csv(io.BytesIO(data)),
    "parquet": lambda data: pd.read_parquet(io.BytesIO(data)),
    "json": lambda data: pd.read_json(io.BytesIO(data), orient="records"),
}


def expected_rows(campaign) -> dict[str, int]:
    return {
        "votes": Vote.objects.filter(campaign=campaign).count(),
        "images": Image.objects.filter(run=campaign.run).count(),
        "results": 2 * 3,
    }  # two criteria x three models


@pytest.mark.django_db
def test_page_exports_round_trip_in_every_format(staff_client, voted_campaign):
    rows = expected_rows(voted_campaign)
    for table, n in rows.items():
        for fmt, read in READERS.items():
            response = staff_client.get(reverse("dashboards:export", args=[voted_campaign.pk, table, fmt]))
            assert response.status_code == 200
            assert f'filename="campaign-{voted_campaign.pk}-{table}.{fmt}"' in response["Content-Disposition"]
            frame = read(response.content)
            assert len(frame) == n, (table, fmt)
    votes = READERS["parquet"](
        staff_client.get(reverse("dashboards:export", args=[voted_campaign.pk, "votes", "parquet"])).content
    )
    assert set(votes["winner"]) <= {"model_a", "model_b", "tie", "both_bad"}
    assert votes["is_gold"].sum() == Vote.objects.filter(campaign=voted_campaign, is_gold=True).count()
    first = Vote.objects.filter(campaign=voted_campaign).order_by("id").first()
    row = votes.set_index("vote_id").loc[first.pk]
    assert (row["model_a"], row["model_b"], row["choice"]) == (
        first.model_left.name,
        first.model_right.name,
        first.choice,
    )


@pytest.mark.django_db
def test_api_exports_round_trip_in_every_format(staff_client, voted_campaign):
    rows = expected_rows(voted_campaign)
    names = {"votes": "api-votes", "images": "api-images", "results": "api-results-table"}
    for table, n in rows.items():
        for fmt, read in READERS.items():
            url = reverse(f"dashboards:{names[table]}", args=[voted_campaign.pk])
            response = staff_client.get(url, {"format": fmt})
            assert response.status_code == 200, (table, fmt)
            assert len(read(response.content)) == n, (table, fmt)
    results = READERS["json"](
        staff_client.get(reverse("dashboards:api-results-table", args=[voted_campaign.pk]), {"format": "json"}).content
    )
    assert {"criterion", "model", "score", "lower", "upper", "rank", "votes", "win_rate"} <= set(results.columns)


@pytest.mark.django_db
def test_unknown_export_format_is_refused(staff_client, voted_campaign):
    assert staff_client.get(f"/dashboards/campaign/{voted_campaign.pk}/export/votes.xlsx").status_code == 404
    response = staff_client.get(reverse("dashboards:api-votes", args=[voted_campaign.pk]), {"format": "xlsx"})
    assert response.status_code == 404
