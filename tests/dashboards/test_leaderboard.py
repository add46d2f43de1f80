"""The campaign page shows exactly what analysis/ computes from the votes in the database."""

import html
import re

import pytest
from django.urls import reverse

from analysis.leaderboard import fit_bradley_terry
from analysis.win_rates import win_rate_matrix
from evalsite.dashboards.data import votes_frame as all_votes
from evalsite.rating.models import Vote


def votes_frame(campaign):
    """The real-pair votes (gold checks may show one model on both sides, which analysis/ refuses)."""
    votes = all_votes(campaign)
    return votes[~votes.is_gold]


ROW = re.compile(
    r'<tr data-model="(?P<model>[^"]+)"><td class="num">(?P<rank>\d+)</td>.*?'
    r'<td class="num score">(?P<score>[^<]+)</td><td class="interval">(?P<lower>\S+) – (?P<upper>\S+)</td>'
    r'\s*<td class="num"><a [^>]+>(?P<votes>\d+)</a></td>',
    re.S,
)


def leaderboard_rows(page: str) -> list[dict]:
    table = page.split('id="leaderboard-table"')[1].split("</table>")[0]
    return [m.groupdict() for m in ROW.finditer(html.unescape(table))]


def expected_rows(fit) -> list[dict]:
    return [
        {
            "model": row["model"],
            "rank": str(row["rank"]),
            "score": f"{row['score']:.1f}",
            "lower": f"{row['lower']:.1f}",
            "upper": f"{row['upper']:.1f}",
            "votes": str(row["votes"]),
        }
        for row in fit.reset_index().to_dict(orient="records")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("criterion", ["prompt_following", "aesthetics"])
def test_leaderboard_numbers_equal_fit_bradley_terry(voted_campaign, campaign_page, criterion):
    votes = votes_frame(voted_campaign)
    page = campaign_page(voted_campaign, criterion=criterion)
    # "speedy" is flagged (on the platform, and too fast): excluded by default
    fit = fit_bradley_terry(votes[votes.criterion == criterion], exclude_raters={"speedy"})
    assert leaderboard_rows(page) == expected_rows(fit)
    assert "Flagged raters are <strong>excluded</strong>" in page


@pytest.mark.django_db
def test_including_flagged_raters_refits_on_all_votes(voted_campaign, campaign_page):
    votes = votes_frame(voted_campaign)
    page = campaign_page(voted_campaign, criterion="prompt_following", flagged="include")
    fit = fit_bradley_terry(votes[votes.criterion == "prompt_following"])
    assert leaderboard_rows(page) == expected_rows(fit)
    assert fit["votes"].max() == 80  # 5 raters x 4 prompts x 2 seeds x 2 pairs per model


@pytest.mark.django_db
def test_heat_map_cells_show_win_rate_matrix(voted_campaign, campaign_page):
    votes = votes_frame(voted_campaign)
    counted = votes[(votes.criterion == "aesthetics") & ~votes.rater.eq("speedy")]
    rates, counts = win_rate_matrix(counted)
    page = html.unescape(campaign_page(voted_campaign, criterion="aesthetics"))
    for row in rates.index:
        for col in rates.columns:
            if row != col:
                title = f"{row} against {col}: {100 * rates.loc[row, col]:.0f}% of {counts.loc[row, col]} votes won"
                assert title in page


@pytest.mark.django_db
def test_bad_options_get_a_clear_400(staff_client, voted_campaign):
    url = reverse("dashboards:campaign", args=[voted_campaign.pk])
    response = staff_client.get(url, {"criterion": "typography"})
    assert response.status_code == 400
    assert b"unknown criterion" in response.content
    assert staff_client.get(url, {"alpha": "2"}).status_code == 400


@pytest.mark.django_db
def test_page_renders_every_section(voted_campaign, campaign_page):
    page = campaign_page(voted_campaign)
    for section in (
        "decisions",
        "progress",
        "leaderboard",
        "win-rates",
        "sd3",
        "breakdown-category",
        "breakdown-challenge",
        "metrics",
        "raters",
        "exports",
    ):
        assert f'id="{section}"' in page, section
    assert page.count("<svg") == 3  # interval chart, heat map, SD3 bars


@pytest.mark.django_db
def test_page_renders_with_votes_that_have_no_answer_time(voted_campaign, campaign_page):
    Vote.objects.filter(campaign=voted_campaign, rater__user__username="alice").update(time_taken_ms=None)
    page = campaign_page(voted_campaign)
    assert leaderboard_rows(page)


@pytest.mark.django_db
def test_page_renders_with_only_gold_votes(staff_client, voted_campaign):
    Vote.objects.filter(campaign=voted_campaign, is_gold=False).delete()
    response = staff_client.get(reverse("dashboards:campaign", args=[voted_campaign.pk]))
    assert response.status_code == 200
    assert b"No counted votes on this criterion yet." in response.content
