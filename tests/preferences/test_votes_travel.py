"""Votes exported by one instance import into another and give the same leaderboard and decisions."""

import io

import pandas as pd
import pytest
from django.core.management import call_command
from django.urls import reverse

from evalsite.dashboards.results import ResultOptions, campaign_results
from evalsite.preferences.imports import PreferenceFileError, import_preferences
from evalsite.preferences.models import PreferenceSet, PreferenceVote
from evalsite.preferences.results import set_results, set_votes_frame

LEADERBOARD_FIELDS = ("model", "score", "lower", "upper", "rank", "votes", "win_rate")


def exported(client, campaign, fmt: str) -> bytes:
    response = client.get(reverse("dashboards:export", args=[campaign.pk, "votes", fmt]))
    assert response.status_code == 200
    return response.content


def leaderboard(rows: list[dict]) -> list[tuple]:
    return [tuple(round(r[f], 9) if isinstance(r[f], float) else r[f] for f in LEADERBOARD_FIELDS) for r in rows]


def decision_summary(decision: dict) -> tuple:
    top = decision["top_model"]
    return (
        decision["models_in_order"],
        top["model_name"],
        top["certified"],
        top["rule"],
        round(top["confidence"], 9),
        [(n["higher_name"], n["lower_name"], n["settled"]) for n in decision["neighbours"]],
    )


def campaign_view(campaign, criterion: str, exclude_flagged: bool = True) -> dict:
    options = ResultOptions(criterion=criterion, exclude_flagged=exclude_flagged, project=False)
    return campaign_results(campaign, options)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_an_export_imported_elsewhere_gives_the_campaigns_numbers(staff_client, voted_campaign, fmt):
    data = exported(staff_client, voted_campaign, fmt)
    result = import_preferences(data, f"campaign-{voted_campaign.pk}-votes.{fmt}", name="from lab B")
    assert result.created and result.n_votes == voted_campaign.votes.count()
    for criterion in ("prompt_following", "aesthetics"):
        for exclude in (True, False):
            here = campaign_view(voted_campaign, criterion, exclude)
            there = set_results(result.preference_set, criterion=criterion, exclude_flagged=exclude)
            assert leaderboard(there["leaderboard"]) == leaderboard(here["leaderboard"]), (criterion, exclude)
            assert there["excluded_raters"] == here["excluded_raters"]
            assert there["win_rates"]["counts"] == here["win_rates"]["counts"]
            mine = {b["criterion"]: b["decision"] for b in there["decisions"]["by_criterion"]}
            theirs = {b["criterion"]: b["decision"] for b in here["decisions"]["by_criterion"]}
            assert {c: decision_summary(d) for c, d in mine.items()} == {
                c: decision_summary(d) for c, d in theirs.items()
            }
    assert set_results(result.preference_set)["excluded_raters"] == ["speedy"]  # flagged where it came from


@pytest.mark.django_db
def test_a_rater_held_for_review_is_marked_in_the_export_and_counts_nowhere_after_import(staff_client, voted_campaign):
    from evalsite.rating.models import Rater, RaterReview

    careful = Rater.objects.filter(votes__campaign=voted_campaign, flagged=False).distinct().first()
    RaterReview.objects.create(
        campaign=voted_campaign, rater=careful, state=RaterReview.State.HELD, reasons="join burst"
    )
    frame = pd.read_csv(io.BytesIO(exported(staff_client, voted_campaign, "csv")))
    assert set(frame.loc[frame["rater_held"], "rater"]) == {careful.user.username}
    result = import_preferences(exported(staff_client, voted_campaign, "csv"), "held.csv", name="with a held rater")
    for criterion in ("prompt_following", "aesthetics"):
        here = campaign_view(voted_campaign, criterion)
        there = set_results(result.preference_set, criterion=criterion)
        assert leaderboard(there["leaderboard"]) == leaderboard(here["leaderboard"]), criterion
    assert careful.user.username in set_results(result.preference_set)["excluded_raters"]


@pytest.mark.django_db
def test_importing_the_same_file_again_changes_nothing(staff_client, voted_campaign):
    data = exported(staff_client, voted_campaign, "csv")
    first = import_preferences(data, "votes.csv")
    again = import_preferences(data, "renamed-copy.csv", name="another name")
    assert again.created is False and again.preference_set == first.preference_set
    assert PreferenceSet.objects.count() == 1
    assert PreferenceVote.objects.count() == first.n_votes


@pytest.mark.django_db
def test_a_sets_votes_travel_on_with_the_same_numbers(staff_client, voted_campaign):
    original = import_preferences(exported(staff_client, voted_campaign, "parquet"), "a.parquet").preference_set
    response = staff_client.get(reverse("preferences:export", args=[original.pk, "csv"]))
    assert response.status_code == 200
    copy = import_preferences(response.content, "b.csv", name="copy").preference_set
    frame = set_votes_frame(copy)
    assert frame["vote_id"].tolist() == set_votes_frame(original)["vote_id"].tolist()
    assert leaderboard(set_results(copy)["leaderboard"]) == leaderboard(set_results(original)["leaderboard"])


def votes_csv(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


GOOD = {"model_a": "m1", "model_b": "m2", "criterion": "aesthetics", "winner": "model_a", "rater": "r", "vote_id": 1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"winner": "left"}, "winner 'left' is not one of"),
        ({"choice": "right"}, "choice 'right' and winner 'model_a' disagree"),
        ({"model_b": "m1"}, "compares model 'm1' with itself"),
        ({"model_a": ""}, "model_a is empty"),
        ({"criterion": "Looks Good"}, "criterion 'looks good' must be a lower-case word"),
        ({"seed": "1.5"}, "seed '1.5' is not a whole number"),
        ({"is_gold": "maybe"}, "is_gold 'maybe' is not true or false"),
        ({"vote_id": 0}, "vote_id 0 is also on line 2"),
        ({"created_at": "yesterday"}, "created_at 'yesterday' is not a date and time"),
        ({"seconds": "-3"}, "seconds '-3' is not a duration"),
    ],
)
def test_each_broken_row_is_named_by_its_line_and_nothing_is_stored(change, message):
    rows = [dict(GOOD, vote_id=0), dict(GOOD, model_b="m3", vote_id=5), dict(GOOD, **{"vote_id": 9, **change})]
    with pytest.raises(PreferenceFileError) as caught:
        import_preferences(votes_csv(rows), "broken.csv")
    assert ("line 4", caught.value.errors[0][1]) == caught.value.errors[0]
    assert message in caught.value.errors[0][1]
    assert "nothing was imported" in str(caught.value)
    assert not PreferenceSet.objects.exists() and not PreferenceVote.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"model_a,model_b\nm1,m2\n", "v.csv", "a votes export needs column(s) ['criterion', 'winner (or choice)']"),
        (b"x,y\n1,2\n", "v.csv", "are neither a votes export"),
        (b"prompt,image_a,image_b\np,a,b\n", "v.csv", "a pairwise CSV needs column(s) ['winner']"),
        (b"\xff\xfe\x00bad", "v.csv", "not UTF-8 text"),
        (b"[{not json", "v.json", "cannot be read as json"),
        (b"PAR1 garbage", "v.parquet", "cannot be read as parquet"),
        (b"model_a,model_b,criterion,winner\n", "v.csv", "holds no votes"),
        (b"a", "v.xlsx", "unknown file type 'xlsx'"),
        (b"model_a,model_b,criterion,winner\nm1,m2,aesthetics,tie,extra\n", "v.csv", "more fields than the header"),
    ],
)
def test_a_file_that_is_not_preference_data_is_refused(data, name, message):
    with pytest.raises(PreferenceFileError) as caught:
        import_preferences(data, name)
    assert message in str(caught.value)
    assert not PreferenceSet.objects.exists()


@pytest.mark.django_db
def test_a_name_in_use_for_another_file_is_refused():
    import_preferences(votes_csv([GOOD]), "one.csv", name="study")
    with pytest.raises(PreferenceFileError, match="already holds another file"):
        import_preferences(votes_csv([dict(GOOD, winner="tie")]), "two.csv", name="study")


@pytest.mark.django_db
def test_the_command_imports_and_reports_broken_rows(tmp_path, staff_client, voted_campaign):
    path = tmp_path / "lab-b.parquet"
    path.write_bytes(exported(staff_client, voted_campaign, "parquet"))
    out = io.StringIO()
    call_command("import_votes", str(path), stdout=out)
    assert f"Imported {voted_campaign.votes.count()} vote(s) as preference set" in out.getvalue()
    call_command("import_votes", str(path), stdout=out)
    assert "Unchanged: this file was imported before" in out.getvalue()
    broken = tmp_path / "broken.csv"
    broken.write_bytes(votes_csv([GOOD, dict(GOOD, winner="nobody")]))
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="line 3: winner 'nobody'"):
        call_command("import_votes", str(broken))
    assert PreferenceSet.objects.count() == 1
