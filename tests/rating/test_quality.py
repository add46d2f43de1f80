"""Quality control: gold answers are scored, each rater's gold accuracy, speed and left share are recorded,
raters below the threshold are flagged, and their votes can be left out of analysis."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command

from evalsite.rating import engine, quality
from evalsite.rating.models import Choice, Rater, RaterStats, Vote
from evalsite.rating.tasks import update_rater_quality as update_task
from evalsite.rating.voting import VoteSubmission, record_votes


@pytest.fixture
def gold_campaign(make_run, make_campaign):
    run = make_run(n_models=2, prompt_texts=[f"prompt {i}" for i in range(8)])
    campaign = make_campaign(run=run, gold_rate=1.0, min_gold_accuracy=0.7, min_gold_answers=5)
    engine.prepare_campaign(campaign)
    return campaign


def answer_gold(rater, campaign, correct: bool, seconds: float = 3.0):
    a = engine.next_assignment(rater, campaign, rng=np.random.default_rng())
    assert a.gold is not None
    right_side = Choice.LEFT if a.image_left_id == a.gold.correct_image_id else Choice.RIGHT
    wrong_side = Choice.RIGHT if right_side == Choice.LEFT else Choice.LEFT
    choices = {c: right_side if correct else wrong_side for c in campaign.criteria_for(a.prompt)}
    record_votes(a.id, rater, VoteSubmission(f"gold-{a.id}", choices, int(seconds * 1000)))
    return a


def test_gold_checks_compare_a_prompts_image_with_the_same_models_image_for_another_prompt(gold_campaign):
    checks = list(gold_campaign.gold_checks.select_related("correct_image", "wrong_image"))
    assert len(checks) == 8
    pair_keys = {frozenset((c.correct_image_id, c.wrong_image_id)) for c in checks}
    assert len(pair_keys) == 8  # never P-vs-Q and Q-vs-P with the same images: a rater could get only one
    for check in checks:
        assert check.correct_image.prompt_id == check.prompt_id != check.wrong_image.prompt_id
        assert check.correct_image.model_id == check.wrong_image.model_id
        assert check.criterion == "prompt_following"


DEMO_PROMPTS = [
    "a red circle on a blue background",
    "a green square on a white background",
    "a yellow triangle on a black background",
    "a blue square above a red circle on a white background",
]


def test_gold_checks_on_demo_prompts_are_made_only_where_the_pixels_confirm_them(make_run, make_campaign):
    # A careful rater fails a check made of a noise model's images (its image for P is no better at P than its
    # image for Q): such checks would flag careful raters. The checker reads demo prompts, so it can refuse them.
    from django.core.files.base import ContentFile

    from tests.support import png_bytes

    run = make_run(n_models=2, prompt_texts=DEMO_PROMPTS + ["an owl reading a newspaper"])
    noisy = run.image_models.order_by("name").last()
    # Noise from fixed seeds in a fixed order (not from row ids, which differ between databases and runs): random
    # pixels can now and then pass the checker's colour checks by chance.
    for n, image in enumerate(run.images.filter(model=noisy).order_by("prompt__position", "seed")):
        image.file.save("noise.png", ContentFile(png_bytes(1000 + n)), save=True)
    campaign = make_campaign(run=run, gold_rate=0.5)
    assert engine.create_gold_checks(campaign) == 5  # one per prompt: the demo ones from the model that draws
    checks = list(campaign.gold_checks.select_related("correct_image", "prompt"))
    drawn = [c for c in checks if c.prompt.text in DEMO_PROMPTS]
    assert len(drawn) == 4 and all(c.correct_image.model_id != noisy.id for c in drawn)

    drawn = run.images.exclude(model=noisy).order_by("prompt__position", "seed")
    for n, image in enumerate(drawn):  # now both models draw noise: no demo prompt has a check
        image.file.save("noise.png", ContentFile(png_bytes(2000 + n)), save=True)
    campaign.gold_checks.all().delete()
    assert engine.create_gold_checks(campaign) == 1
    assert campaign.gold_checks.get().prompt.text == "an owl reading a newspaper"  # nothing can verify it


def test_gold_votes_are_marked_and_scored_on_prompt_following_only(gold_campaign, rater_of):
    rater = rater_of(gold_campaign)
    right = answer_gold(rater, gold_campaign, correct=True)
    wrong = answer_gold(rater, gold_campaign, correct=False)
    for a, expected in ((right, True), (wrong, False)):
        votes = {v.criterion: v for v in Vote.objects.filter(assignment=a)}
        assert all(v.is_gold for v in votes.values())
        assert votes["prompt_following"].gold_correct is expected
        assert votes["aesthetics"].gold_correct is None


def test_the_correct_gold_image_is_shown_on_each_side_equally_often(gold_campaign, rater_of):
    rater = rater_of(gold_campaign)
    sides = [answer_gold(rater, gold_campaign, True) for _ in range(8)]
    left = sum(a.image_left_id == a.gold.correct_image_id for a in sides)
    assert left == 4


@pytest.fixture
def three_raters_quality(gold_campaign, rater_of):
    """careful: 6 gold answers right (4 to 9 s); careless: 2 of 6 right in 1 s; newcomer: 4 wrong, fewer than
    the campaign's minimum of 5 gold answers. Returns {username: RaterStats} after update_rater_quality."""
    careful, careless, newcomer = (rater_of(gold_campaign, n) for n in ("careful", "careless", "newcomer"))
    for i in range(6):
        answer_gold(careful, gold_campaign, correct=True, seconds=4.0 + i)
        answer_gold(careless, gold_campaign, correct=i < 2, seconds=1.0)
    for _ in range(4):  # four wrong answers: below the minimum of 5 gold answers, so not flagged yet
        answer_gold(newcomer, gold_campaign, correct=False)
    return {s.rater.user.username: s for s in quality.update_rater_quality(gold_campaign)}


def test_gold_accuracy_and_speed_are_recorded_per_rater(three_raters_quality):
    stats = three_raters_quality
    assert (stats["careful"].gold_answered, stats["careful"].gold_correct, stats["careful"].flagged) == (6, 6, False)
    assert stats["careful"].gold_accuracy == 1.0
    assert stats["careful"].median_seconds_per_pair == pytest.approx(6.5)
    assert stats["careless"].gold_accuracy == pytest.approx(2 / 6)
    assert stats["newcomer"].gold_accuracy == 0.0


def test_a_rater_below_the_gold_accuracy_threshold_is_flagged_with_the_reason(three_raters_quality):
    assert three_raters_quality["careless"].flagged
    careless = Rater.objects.get(user__username="careless")
    assert careless.flagged and careless.flagged_reason.startswith(quality.AUTO_FLAG_PREFIX)
    assert "2/6" in careless.flagged_reason
    assert not Rater.objects.get(user__username="careful").flagged


def test_a_rater_with_fewer_gold_answers_than_the_minimum_is_not_flagged(three_raters_quality):
    assert not three_raters_quality["newcomer"].flagged


def test_left_share_counts_decisive_answers_on_real_pairs(make_run, make_campaign, rater_of):
    run = make_run(n_models=2, prompt_texts=[f"prompt {i}" for i in range(5)])  # no text: 2 questions each
    campaign = make_campaign(run=run, gold_rate=0.0)
    rater = rater_of(campaign)
    for choice in ("left", "left", "left", "right", "tie"):
        a = engine.next_assignment(rater, campaign)
        record_votes(
            a.id, rater, VoteSubmission(f"k-{a.id}", {c: choice for c in campaign.criteria_for(a.prompt)}, 1000)
        )
    stat = quality.update_rater_quality(campaign)[0]
    assert stat.left_share == pytest.approx(0.75) and stat.gold_accuracy is None and stat.pairs_answered == 5


@pytest.fixture
def good_and_flagged_votes(campaign, rater_of):
    """Raters "good" and "bad" answered one pair each; a researcher flagged "bad". Returns (good, bad)."""
    good, bad = rater_of(campaign, "good"), rater_of(campaign, "bad")
    for rater in (good, bad):
        a = engine.next_assignment(rater, campaign)
        record_votes(
            a.id, rater, VoteSubmission(f"k-{a.id}", {c: "left" for c in campaign.criteria_for(a.prompt)}, None)
        )
    bad.flagged, bad.flagged_reason = True, "spam (set by a researcher)"
    bad.save()
    return good, bad


def test_flagged_raters_votes_are_excluded_from_analysis_on_request(campaign, good_and_flagged_votes):
    good, bad = good_and_flagged_votes
    assert set(quality.votes_for_analysis(campaign).values_list("rater", flat=True)) == {good.pk}
    assert set(quality.votes_for_analysis(campaign, exclude_flagged=False).values_list("rater", flat=True)) == {
        good.pk,
        bad.pk,
    }


def test_updating_quality_never_lifts_a_researchers_flag(campaign, good_and_flagged_votes):
    _, bad = good_and_flagged_votes
    quality.update_rater_quality(campaign)
    bad.refresh_from_db()
    assert bad.flagged and bad.flagged_reason == "spam (set by a researcher)"


def test_an_automatic_flag_is_lifted_when_accuracy_recovers(gold_campaign, rater_of):
    rater = rater_of(gold_campaign)
    for i in range(5):
        answer_gold(rater, gold_campaign, correct=i == 0)
    quality.update_rater_quality(gold_campaign)
    assert Rater.objects.get(pk=rater.pk).flagged
    gold_campaign.min_gold_accuracy = 0.1
    gold_campaign.save()
    quality.update_rater_quality(gold_campaign)
    rater.refresh_from_db()
    assert not rater.flagged and rater.flagged_reason == ""


@pytest.fixture
def failing_rater(gold_campaign, rater_of):
    """A rater with 5 wrong gold answers: enough to be flagged."""
    rater = rater_of(gold_campaign)
    for _ in range(5):
        answer_gold(rater, gold_campaign, correct=False)
    return rater


def test_the_task_recomputes_quality(gold_campaign, failing_rater):
    assert update_task(gold_campaign.pk) == {"raters": 1, "flagged": 1, "held": 0}
    assert update_task.name == "rating.update_rater_quality"


def test_the_command_recomputes_quality(gold_campaign, failing_rater, capsys):
    call_command("update_rater_quality", campaign=gold_campaign.pk)
    assert "1 raters, 1 flagged" in capsys.readouterr().out
    assert RaterStats.objects.get().flagged
