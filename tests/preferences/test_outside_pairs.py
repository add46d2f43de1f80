"""A CSV of (prompt, image_a, image_b, winner[, criterion]) judgements gathered elsewhere, and the staff pages."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from django.urls import reverse

from evalsite.preferences.imports import PreferenceFileError, import_file, import_preferences
from evalsite.preferences.models import PreferenceSet
from evalsite.preferences.results import set_results
from evalsite.runs.models import Image


def judgements(n: int, strengths: dict[str, float], seed: int = 3) -> pd.DataFrame:
    """n outside judgements between models with known Bradley-Terry strengths, images named by file."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for i in range(n):
        a, b = rng.choice(names, size=2, replace=False)
        p_a = 1 / (1 + np.exp(strengths[b] - strengths[a]))
        rows.append(
            {
                "prompt": f"prompt {i % 40}",
                "image_a": f"{a}/{i}.png",
                "image_b": f"{b}/{i}.png",
                "winner": "a" if rng.random() < p_a else "b",
                "model_a": a,
                "model_b": b,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.django_db
def test_outside_judgements_name_the_truly_better_model():
    frame = judgements(1500, {"dalle-3": 0.9, "mj-v6": 0.3, "ours": 0.0})
    result = import_preferences(frame.to_csv(index=False).encode(), "outside.csv", default_criterion="aesthetics")
    results = set_results(result.preference_set)
    assert results["criterion"] == "aesthetics"
    assert [r["model"] for r in results["leaderboard"]] == ["dalle-3", "mj-v6", "ours"]
    top = results["decisions"]["by_criterion"][0]["decision"]["top_model"]
    assert top["model_name"] == "dalle-3" and top["certified"]
    assert top["rule"] == "bonferroni"  # no vote ids, so no order of arrival to replay: the stateless rule
    assert results["raters"] == []  # the CSV named no raters: nothing to flag


@pytest.mark.django_db
def test_winner_spellings_and_a_criterion_column():
    rows = [
        {"prompt": "p", "image_a": "x1", "image_b": "y1", "winner": w, "criterion": c, "model_a": "x", "model_b": "y"}
        for w, c in [("a", "aesthetics"), ("B", "aesthetics"), ("image_a", "typography"), ("tie", "typography")]
    ]
    preference_set = import_preferences(pd.DataFrame(rows).to_csv(index=False).encode(), "w.csv").preference_set
    stored = list(preference_set.votes.order_by("line").values_list("line", "criterion", "winner"))
    assert stored == [
        (2, "aesthetics", "model_a"),
        (3, "aesthetics", "model_b"),
        (4, "typography", "model_a"),
        (5, "typography", "tie"),
    ]


@pytest.mark.django_db
def test_images_are_matched_to_models_by_token_or_by_an_imported_files_content(tmp_path, make_run):
    run = make_run(n_models=2)
    first, second = (Image.objects.filter(run=run, model=m).first() for m in run.image_models.order_by("name"))
    # an image imported with import_images keeps the sha256 of its original file
    original = b"the original bytes of an outside image"
    second.original_sha256 = hashlib.sha256(original).hexdigest()
    second.save()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.webp").write_bytes(original)
    rows = [
        {"prompt": "p", "image_a": first.token, "image_b": "outside/b.webp", "winner": "b"},
        {"prompt": "p", "image_a": "outside/b.webp", "image_b": first.token, "winner": "tie"},
    ]
    path = tmp_path / "prefs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    preference_set = import_file(path, default_criterion="prompt_following").preference_set
    assert list(preference_set.votes.order_by("line").values_list("model_a", "model_b")) == [
        (first.model.name, second.model.name),
        (second.model.name, first.model.name),
    ]
    # uploaded (no folder): a file name cannot be looked at, and the row says what to do
    with pytest.raises(PreferenceFileError) as caught:
        import_preferences(path.read_bytes() + b"\n", "upload.csv", default_criterion="prompt_following")
    assert caught.value.errors[0][0] == "line 2"
    assert "image_b 'outside/b.webp' names no image this instance knows" in caught.value.errors[0][1]
    assert "add model_a and model_b columns" in caught.value.errors[0][1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"image_b": "i1"}, "image_a and image_b are the same image 'i1'"),
        ({"winner": "left"}, "winner 'left' is not one of a, b, tie, both_bad"),
        ({"model_b": "x"}, "both images are by model 'x'"),
        ({"criterion": ""}, "criterion is empty"),
    ],
)
def test_each_broken_pairs_row_is_named_and_nothing_is_stored(change, message):
    good = {"prompt": "p", "image_a": "i1", "image_b": "i2", "winner": "a", "criterion": "aesthetics"}
    good.update(model_a="x", model_b="y")
    rows = [good, good, {**good, **change}]
    with pytest.raises(PreferenceFileError) as caught:
        import_preferences(pd.DataFrame(rows).to_csv(index=False).encode(), "broken.csv")
    assert caught.value.errors == [("line 4", caught.value.errors[0][1])]
    assert message in caught.value.errors[0][1]
    assert not PreferenceSet.objects.exists()


@pytest.mark.django_db
def test_staff_upload_the_page_and_the_api(staff_client):
    data = judgements(300, {"x": 1.0, "y": 0.0}).to_csv(index=False).encode()
    from django.core.files.uploadedfile import SimpleUploadedFile

    page = reverse("preferences:list")
    response = staff_client.post(
        page, {"file": SimpleUploadedFile("outside.csv", data), "name": "Outside study", "criterion": "aesthetics"}
    )
    preference_set = PreferenceSet.objects.get(name="Outside study")
    assert response.status_code == 302 and response["Location"] == reverse(
        "preferences:detail", args=[preference_set.pk]
    )
    detail = staff_client.get(response["Location"]).content.decode()
    assert 'id="leaderboard-table"' in detail and 'data-model="x"' in detail
    assert detail.index('data-model="x"') < detail.index('data-model="y"')
    listing = staff_client.get(page).content.decode()
    assert "Outside study" in listing
    api = staff_client.get(reverse("preferences:api-results", args=[preference_set.pk])).json()
    assert api["leaderboard"][0]["model"] == "x" and api["set"]["votes"] == 300
    assert (
        staff_client.get(
            reverse("preferences:api-results", args=[preference_set.pk]), {"criterion": "nope"}
        ).status_code
        == 400
    )
    assert [s["name"] for s in staff_client.get(reverse("preferences:api-sets")).json()] == ["Outside study"]
    votes = staff_client.get(reverse("preferences:api-votes", args=[preference_set.pk]), {"format": "csv"})
    assert votes.status_code == 200 and len(pd.read_csv(__import__("io").BytesIO(votes.content))) == 300

    broken = data.replace(b",a,", b",left,", 1)
    response = staff_client.post(page, {"file": SimpleUploadedFile("broken.csv", broken), "name": "Broken"})
    assert response.status_code == 400
    assert (
        "Nothing was imported" in response.content.decode() and "winner &#x27;left&#x27;" in response.content.decode()
    )
    assert not PreferenceSet.objects.filter(name="Broken").exists()


@pytest.mark.django_db
def test_the_pages_are_for_staff_only(client, make_rater):
    client.force_login(make_rater("someone").user)
    assert client.get(reverse("preferences:list")).status_code == 403
    assert client.get(reverse("preferences:api-sets")).status_code == 403
