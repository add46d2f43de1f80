"""A model's identity appears nowhere a rater can see: pages, API responses, image URLs, file names,
PNG metadata, alt text and response headers, for every model name, public id and checkpoint path."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from evalsite.catalog.models import ImageModel
from evalsite.runs.models import Image

MODEL_NAMES = ["AcmeDiffusion-XL-v7", "SecretFlow-2B", "mmdit-ckpt-0088000"]


@pytest.fixture
def leaky_campaign(make_campaign):
    """Models with distinctive names, and PNG files that carry those names in their metadata (as a
    careless generator might write them)."""
    campaign = make_campaign(gold_rate=0.5)
    for model, name in zip(ImageModel.objects.order_by("id"), MODEL_NAMES, strict=True):
        model.name, model.source = name, f"/checkpoints/{name}/weights"
        model.save()
    for image in Image.objects.select_related("model"):
        with image.file.open("rb") as f:
            picture = PILImage.open(f)
            picture.load()
        info = PngInfo()
        info.add_text("model", image.model.name)
        info.add_text("parameters", f"{image.model.source} id={image.model.public_id}")
        out = io.BytesIO()
        picture.save(out, format="PNG", pnginfo=info)
        image.file.save("leaky.png", ContentFile(out.getvalue()), save=True)
    return campaign


def needles():
    found = []
    for model in ImageModel.objects.all():
        found += [model.name, model.public_id, model.source]
    return [n.lower() for n in found]


class Seen:
    """Everything a rater's browser receives, as text."""

    def __init__(self):
        self.parts: list[str] = []

    def response(self, response, what: str):
        self.parts.append(f"[{what} headers] " + " ".join(f"{k}: {v}" for k, v in response.items()))
        for cookie in response.cookies.values():
            self.parts.append(f"[{what} cookie] {cookie.OutputString()}")
        if response["Content-Type"].startswith("image/"):
            self.parts.append(f"[{what} bytes] " + response.content.decode("latin-1"))
        else:
            self.parts.append(f"[{what} body] " + response.content.decode())


def test_no_model_name_or_id_reaches_a_rater(leaky_campaign):
    campaign = leaky_campaign
    seen = Seen()
    client = Client()
    url = f"/join/{campaign.invite_token}"
    seen.response(client.get(url), "join page")
    joined = client.post(url, follow=True)
    seen.response(joined, "instructions page")
    seen.response(client.post(f"/rate/{campaign.pk}/instructions", follow=True), "rate page")
    served_pngs = []
    urls: set[str] = set()
    header_sets: set[tuple] = set()
    gold_seen = 0
    while True:
        response = client.get("/api/assignments/next", {"campaign": campaign.pk})
        seen.response(response, "next")
        a = response.json()["assignment"]
        if a is None:
            break
        assert not any("model" in key for key in _keys(response.json()))
        for side, alt in (("left", "Left image"), ("right", "Right image")):
            image_url = a["images"][side]["url"]
            assert a["images"][side]["alt"] == alt
            # The URL names the assignment and the side, never the image: a new URL in every pair.
            assert image_url == f"/i/{a['id']}/{side}.png"
            assert image_url not in urls
            urls.add(image_url)
            seen.parts.append(f"[url] {image_url}")
            image = client.get(image_url)
            assert image.status_code == 200 and "Content-Disposition" not in image
            head = client.head(image_url)  # the same headers, computed without the picture
            assert head.status_code == 200 and head["Content-Length"] == str(len(image.content))
            assert sorted(head.headers) == sorted(image.headers)
            assert "Last-Modified" not in image and "ETag" not in image
            header_sets.add(tuple(sorted(k for k in image.headers if k.lower() not in ("date",))))
            seen.response(image, "image")
            served_pngs.append(image.content)
        body = {"idempotency_key": f"anon-{a['id']}", "choices": {c["key"]: "left" for c in a["criteria"]}}
        vote = client.post(a["votes_url"], data=json.dumps(body), content_type="application/json")
        assert vote.status_code == 201
        assert not any("model" in key for key in _keys(vote.json()))
        seen.response(vote, "vote")
        gold_seen += campaign.assignments.filter(pk=a["id"], gold__isnull=False).exists()
    assert len(served_pngs) >= 18 and gold_seen >= 1  # every real pair and some gold checks were shown
    # Every image answers with the same length and the same headers, whatever its model (the run's one size and
    # encoding, evalsite.runs.display).
    assert len({len(data) for data in served_pngs}) == 1 and len(header_sets) == 1

    for data in served_pngs:
        png = PILImage.open(io.BytesIO(data))
        png.load()
        assert png.info == {} and png.text == {}
        seen.parts.append(f"[png info] {png.info} {png.text}")
    everything = "\n".join(seen.parts).lower()
    for needle in needles():
        assert needle not in everything, f"{needle!r} is visible to a rater"
    # The test can fail: the stored files do carry the names.
    stored = Image.objects.first()
    with stored.file.open("rb") as f:
        assert PILImage.open(f).text["model"] in MODEL_NAMES


def test_the_rating_page_shows_alt_texts_and_no_campaign_name(leaky_campaign, rater_of, login):
    campaign = leaky_campaign
    campaign.name = f"{MODEL_NAMES[0]} vs {MODEL_NAMES[1]}"  # researchers do name campaigns like this
    campaign.save()
    page = login(rater_of(campaign)).get(f"/rate/{campaign.pk}/").content.decode()
    assert 'alt="Left image"' in page and 'alt="Right image"' in page
    assert MODEL_NAMES[0].lower() not in page.lower() and MODEL_NAMES[1].lower() not in page.lower()


def _keys(value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key.lower()
            yield from _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys(inner)
