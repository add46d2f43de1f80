"""The text-to-3D demo command (issue 17, item 4) with tiny priors standing in for the demo checkpoints: it
registers two 3D settings, plans the run on the held-out prompts, opens the 3D campaign, makes the assets with the
gpu task's own body (--inline) and reports per prompt; a second call changes nothing."""

from __future__ import annotations

import pytest
import torch
from django.core.management import CommandError, call_command

from evalsite.catalog.models import ImageModel
from evalsite.demo.management.commands.seed_demo_3d import DEMO_3D_PROMPTS
from evalsite.rating.models import Campaign
from evalsite.runs.models import ComparisonRun, Image
from tests.support import tiny_inhouse_checkpoint


@pytest.fixture
def priors(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for seed, folder in enumerate(("mmdit-demo", "mmdit-demo-step2000")):
        tiny_inhouse_checkpoint(tmp_path / "priors" / folder, seed=seed)
    yield tmp_path / "priors"
    torch.set_num_threads(before)


def test_the_3d_demo_makes_two_settings_on_the_held_out_prompts_and_a_campaign_that_asks_the_3d_questions(
    db, media_root, priors, capsys
):
    call_command("seed_demo_3d", "--steps", "2", "--models-dir", str(priors), "--inline", "--report")
    out = capsys.readouterr().out
    run = ComparisonRun.objects.get(name="Text-to-3D demo (2 steps)")
    assert run.status == ComparisonRun.Status.DONE and run.is_3d
    images = Image.objects.filter(run=run)
    assert images.count() == 6 and all(i.asset for i in images)
    assert sorted({i.prompt.text for i in images}) == sorted(DEMO_3D_PROMPTS)
    campaign = Campaign.objects.get(run=run)
    assert campaign.criteria == ["prompt_following", "aesthetics", "multiview_consistency"]
    report = [line for line in out.splitlines() if line.startswith(DEMO_3D_PROMPTS)]
    assert len(report) == 6 and all("/8" in line for line in report)

    call_command("seed_demo_3d", "--steps", "2", "--models-dir", str(priors), "--inline")
    assert ComparisonRun.objects.count() == 1 and Image.objects.count() == 6 and Campaign.objects.count() == 1
    assert ImageModel.objects.filter(kind="text_to_3d").count() == 2


def test_the_3d_demo_says_which_prior_is_missing(db, tmp_path):
    with pytest.raises(CommandError, match="mmdit-demo is missing"):
        call_command("seed_demo_3d", "--models-dir", str(tmp_path))
