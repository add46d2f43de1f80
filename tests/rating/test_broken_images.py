"""A finished image whose stored file is gone or broken: the rater gets a clear 404 for that pair (never a 500),
the pair is withdrawn from every campaign, an answer to it is refused, and the rater moves on to another."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from evalsite.outages import storage_missing
from evalsite.rating import engine
from evalsite.rating.models import Assignment, ImagePair, Vote
from evalsite.runs.models import Image

NEXT = "/api/assignments/next"


def hand_out(client, campaign, **params) -> dict | None:
    return client.get(NEXT, {"campaign": campaign.pk, **params}).json()["assignment"]


def answer(client, assignment: dict, key: str):
    body = {"idempotency_key": key, "choices": {c["key"]: "left" for c in assignment["criteria"]}}
    return client.post(assignment["votes_url"], data=json.dumps(body), content_type="application/json")


def break_file(image: Image, how: str) -> None:
    if how == "missing":
        default_storage.delete(image.file.name)
    else:
        image.file.save("broken.png", ContentFile(b"\x89PNG\r\n\x1a\n but then nothing a decoder can read"), save=True)


@pytest.fixture
def rater_client(campaign, rater_of, login):
    return login(rater_of(campaign))


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_a_broken_image_answers_a_clear_404_and_withdraws_the_pair_from_the_campaign(campaign, rater_client, how):
    shown = hand_out(rater_client, campaign)
    assignment = Assignment.objects.get(pk=shown["id"])
    broken = assignment.image_left
    break_file(broken, how)

    response = rater_client.get(shown["images"]["left"]["url"])
    assert response.status_code == 404 and b"cannot be shown" in response.content
    assert response["Cache-Control"] == "no-store"
    broken.refresh_from_db()
    assert broken.status == Image.Status.FAILED
    assert ("missing" if how == "missing" else "not a readable image") in broken.error

    # Nobody could see the pair: an answer to it is refused, and nothing is stored.
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.EXPIRED
    assert answer(rater_client, shown, "after-withdrawal").status_code == 410
    assert not Vote.objects.filter(assignment=assignment).exists()
    # Its unanswered pairs are gone: no later hand-out shows the image, and every other pair still gets its votes.
    assert not ImagePair.objects.filter(image_a=broken).exists() and not ImagePair.objects.filter(image_b=broken)
    answered = 0
    while (nxt := hand_out(rater_client, campaign)) is not None:
        row = Assignment.objects.get(pk=nxt["id"])
        assert broken.pk not in (row.image_left_id, row.image_right_id)
        assert rater_client.get(nxt["images"]["right"]["url"]).status_code == 200
        assert answer(rater_client, nxt, f"key-{answered:04d}").status_code == 201
        answered += 1
    assert answered == ImagePair.objects.filter(campaign=campaign).count() == 9 - 2  # 3 models: 2 pairs per image


def test_a_pair_handed_out_while_its_image_was_withdrawn_is_expired_when_its_page_asks_for_the_image(
    campaign, rater_client
):
    """The race a browser test met in CI: the page's preloaded next pair was handed out while its image was being
    withdrawn, committed after the withdrawal expired the open assignments, and stayed open; its page got 404 for
    the image, asked for the next pair and was given the same one, for a minute. Here the state the race leaves
    is made directly: an open assignment whose image is already withdrawn."""
    shown = hand_out(rater_client, campaign)
    assignment = Assignment.objects.get(pk=shown["id"])
    Image.objects.filter(pk=assignment.image_right_id).update(status=Image.Status.FAILED, error="withdrawn from rating")

    assert rater_client.get(shown["images"]["right"]["url"]).status_code == 404
    assignment.refresh_from_db()
    assert assignment.status == Assignment.Status.EXPIRED
    nxt = hand_out(rater_client, campaign)
    assert nxt is not None and nxt["id"] != shown["id"]
    assert answer(rater_client, shown, "after-expiry").status_code == 410


def test_a_pair_that_already_has_answers_keeps_them_and_takes_no_more(campaign, rater_of, login):
    first = login(rater_of(campaign, "first"))
    shown = hand_out(first, campaign)
    assert answer(first, shown, "before-breaking").status_code == 201
    pair = Assignment.objects.get(pk=shown["id"]).image_pair
    broken = pair.image_a

    second = login(rater_of(campaign, "second"))
    later = None
    while (nxt := hand_out(second, campaign)) is not None:  # find the second rater's pair with the broken image
        row = Assignment.objects.get(pk=nxt["id"])
        if broken.pk in (row.image_left_id, row.image_right_id):
            later = nxt
            break
        answer(second, nxt, f"second-{nxt['id']}")
    assert later is not None
    break_file(broken, "corrupt")
    side = "left" if Assignment.objects.get(pk=later["id"]).image_left_id == broken.pk else "right"
    assert second.get(later["images"][side]["url"]).status_code == 404

    pair.refresh_from_db()
    assert pair.answered == 1 and pair.assigned == campaign.votes_per_pair  # kept, and full
    assert Vote.objects.filter(assignment_id=shown["id"]).exists()  # the answer given while it could be seen
    third = login(rater_of(campaign, "third"))
    while (nxt := hand_out(third, campaign)) is not None:
        row = Assignment.objects.get(pk=nxt["id"])
        assert broken.pk not in (row.image_left_id, row.image_right_id)
        answer(third, nxt, f"third-{nxt['id']}")


def test_a_gold_check_with_a_broken_image_is_not_handed_out(make_campaign, rater_of, login):
    campaign = make_campaign(gold_rate=1.0, votes_per_pair=3)
    engine.prepare_campaign(campaign)
    checks = list(campaign.gold_checks.all())
    assert checks
    for check in checks:
        break_file(check.correct_image, "missing")
    client = login(rater_of(campaign))
    staff_view = [client.get(f"/i/{check.correct_image.token}.png").status_code for check in checks]
    assert set(staff_view) == {404}  # a rater never sees images by token
    for check in checks:  # found broken when a rater's page asked for it
        from evalsite.rating.withdraw import withdraw_image

        withdraw_image(check.correct_image, "test")
    rng = np.random.default_rng(0)
    rater = campaign.raters.get()
    for _ in range(6):
        handout = engine.next_assignment(rater, campaign, rng=rng)
        if handout is None:
            break
        assert handout.gold is None
        handout.status = Assignment.Status.EXPIRED
        handout.save()


def test_the_staff_image_view_answers_404_for_a_broken_file(campaign, staff_client):
    image = Image.objects.filter(run=campaign.run).first()
    break_file(image, "corrupt")
    response = staff_client.get(f"/i/{image.token}.png")
    assert response.status_code == 404 and b"cannot be shown" in response.content


def test_a_missing_object_is_told_apart_from_a_store_that_is_away():
    from botocore.exceptions import ClientError

    def client_error(status: int) -> ClientError:
        return ClientError({"Error": {"Code": str(status)}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Head")

    assert storage_missing(FileNotFoundError("gone")) and storage_missing(client_error(404))
    assert not storage_missing(client_error(503)) and not storage_missing(client_error(403))
    assert not storage_missing(TimeoutError("slow"))
