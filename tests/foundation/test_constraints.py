from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from evalsite.rating.models import Assignment, Vote
from evalsite.runs.models import Image


def _assignment(campaign, rater, left, right, **kwargs):
    return Assignment.objects.create(
        campaign=campaign,
        rater=rater,
        prompt=left.prompt,
        image_left=left,
        image_right=right,
        expires_at=timezone.now() + timedelta(minutes=5),
        **kwargs,
    )


@pytest.mark.django_db
def test_a_second_image_for_the_same_model_prompt_seed_and_settings_is_rejected(make_run):
    run = make_run(n_models=1)
    image = run.images.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.create(
            run=run,
            model=image.model,
            prompt=image.prompt,
            seed=image.seed,
            sampler_settings=dict(image.sampler_settings),
        )
    # Different settings are a different image.
    Image.objects.create(
        run=run, model=image.model, prompt=image.prompt, seed=image.seed, sampler_settings={"steps": 3}
    )
    assert run.images.count() == 4


@pytest.mark.django_db
def test_a_second_vote_for_the_same_assignment_and_criterion_is_rejected(make_campaign, make_rater):
    rater = make_rater()
    campaign = make_campaign(raters=[rater])
    prompt = campaign.run.prompt_set.prompts.first()
    left, right = campaign.run.images.filter(prompt=prompt, seed=0)[:2]
    assignment = _assignment(campaign, rater, left, right)
    fields = dict(
        assignment=assignment,
        campaign=campaign,
        rater=rater,
        model_left=left.model,
        model_right=right.model,
        idempotency_key="k1",
    )
    Vote.objects.create(criterion="aesthetics", choice="left", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(criterion="aesthetics", choice="right", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(criterion="prompt_following", choice="sideways", **fields)
    Vote.objects.create(criterion="prompt_following", choice="both_bad", **fields)
    assert Vote.objects.count() == 2


@pytest.mark.django_db
def test_a_rater_never_holds_the_same_pair_twice_unless_it_expired(make_campaign, make_rater):
    rater = make_rater()
    campaign = make_campaign(raters=[rater])
    left, right = campaign.run.images.filter(prompt__position=0)[:2]
    first = _assignment(campaign, rater, left, right)
    with pytest.raises(IntegrityError), transaction.atomic():
        _assignment(campaign, rater, right, left)  # the same pair, sides swapped
    first.status = Assignment.Status.EXPIRED
    first.save()
    _assignment(campaign, rater, right, left)
    with pytest.raises(IntegrityError), transaction.atomic():
        _assignment(campaign, rater, left, left)
