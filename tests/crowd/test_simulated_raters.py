"""Simulated raters against a live server: they speak HTTP only, judge the pixels, and quality control
catches the bad ones."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from evalsite.crowd.behaviour import draw_profile
from evalsite.crowd.client import SimulatedRater
from evalsite.crowd.crowd import Crowd
from evalsite.dashboards.data import votes_frame
from evalsite.dashboards.results import rater_table
from evalsite.rating.models import Rater, RaterReview, Vote
from evalsite.rating.quality import suspicion_frames, update_rater_quality
from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow


def simulation_link(live_server, campaign) -> str:
    return live_server.url + reverse("rating:join", args=[campaign.simulation_token])


def rater(live_server, campaign, kind, seed=0, think_scale=0.01, participant=""):
    profile = draw_profile(kind, __import__("numpy").random.default_rng(seed))
    return SimulatedRater(simulation_link(live_server, campaign), profile, seed, think_scale, participant=participant)


RATER_IN_ITS_OWN_PROCESS = """
import json, sys, time
import numpy as np
from evalsite.crowd.behaviour import draw_profile
from evalsite.crowd.client import SimulatedRater
rater = SimulatedRater(sys.argv[1], draw_profile("careful", np.random.default_rng(0)), 0, 0.01, participant="p-1")
report = rater.run(deadline=time.monotonic() + 120, max_pairs=6)
print(json.dumps({"pairs": report.pairs_answered, "stopped": report.stopped, "refused": report.refused,
                  "database_code_loaded": "django.db" in sys.modules}))
"""


def test_a_simulated_rater_votes_through_http_alone_without_loading_any_database_code(live_server, demo_campaign):
    campaign = demo_campaign()
    done = subprocess.run(
        [sys.executable, "-c", RATER_IN_ITS_OWN_PROCESS, simulation_link(live_server, campaign)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"pairs": 6, "stopped": "", "refused": "", "database_code_loaded": False}
    (joined,) = Rater.objects.filter(campaigns=campaign)
    assert joined.simulated and joined.participant_id == "p-1"
    assert Vote.objects.filter(campaign=campaign, rater=joined).values("assignment").distinct().count() == 6


def test_careful_raters_prefer_the_model_that_draws_what_the_prompt_asks(live_server, demo_campaign):
    campaign = demo_campaign(gold_rate=0.0)
    crowd = Crowd(simulation_link(live_server, campaign), 3, {"careful": 1.0}, seed=1, think_scale=0.01,
                  max_pairs_per_rater=6)  # fmt: skip
    summary = crowd.run(minutes=3)
    assert summary.pairs == 18 and not summary.stopped and not summary.refused
    votes = votes_frame(campaign)
    assert votes["rater_simulated"].all()
    following = votes[(votes["criterion"] == "prompt_following") & votes["winner"].isin(["model_a", "model_b"])]
    winners = following.apply(lambda v: v[v["winner"]], axis=1)
    assert (winners == "good").mean() >= 0.9
    typography = votes[votes["criterion"] == "typography"]
    assert len(typography) and typography["prompt"].str.contains('"CAT"').all()  # asked only of word prompts


def test_quality_control_flags_the_bad_raters_and_not_the_careful_ones(live_server, demo_campaign):
    campaign = demo_campaign(gold_rate=0.3, min_gold_answers=3)
    # Careful raters think 3-5 s a pair (median); at think_scale 0.8 the slowest-drawn floor, 2.4 s, sat so near the
    # 2 s "too fast" line that the noise in six votes flagged one now and then. At 1.0 the floor is 3 s.
    raters = [rater(live_server, campaign, "careful", seed=i, think_scale=1.0, participant=f"careful-{i}")
              for i in range(3)]  # fmt: skip
    raters += [
        rater(live_server, campaign, "always_left", seed=10, think_scale=1.0, participant="always-left"),
        rater(live_server, campaign, "fast", seed=11, think_scale=1.0, participant="fast"),
    ]
    deadline = time.monotonic() + 240
    threads = [threading.Thread(target=r.run, args=(deadline, 6 if r.profile.judges else 14)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    update_rater_quality(campaign)  # the suspicion checks run too: none of the careful raters may be held
    held = RaterReview.objects.filter(campaign=campaign).exclude(state=RaterReview.State.ACCEPTED)
    assert not held.filter(rater__participant_id__startswith="careful").exists(), list(held.values("reasons"))
    table = rater_table(campaign, votes_frame(campaign, for_export=False)).set_index("participant")
    careful = table.loc[[f"careful-{i}" for i in range(3)]]
    assert not careful["flagged"].any(), careful[["flagged", "reasons", "median_seconds", "gold_accuracy"]].to_dict()
    assert table.loc["always-left", "flagged"] and "position bias" in table.loc["always-left", "reasons"]
    assert table.loc["fast", "flagged"] and "too fast" in table.loc["fast", "reasons"]
    assert table["simulated"].all()


def test_the_suspicion_checks_hold_none_of_a_crowd_of_ten_that_saw_every_pair(live_server, demo_campaign):
    # The demo crowd's mix (7 careful or casual, a random clicker, always-left, too fast), every rater answering
    # every pair, so pairs of raters share every item: careful raters, who judge the same pixels alike, must not
    # pass for copies, and preferring the model that draws what the prompt asks must not pass for favouring it.
    campaign = demo_campaign(gold_rate=0.0, votes_per_pair=10)
    kinds = ["careful"] * 5 + ["casual"] * 2 + ["random", "always_left", "fast"]
    raters = [rater(live_server, campaign, k, seed=i, participant=f"{k}-{i}") for i, k in enumerate(kinds)]
    deadline = time.monotonic() + 300
    threads = [threading.Thread(target=r.run, args=(deadline, 18)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Vote.objects.filter(campaign=campaign).values("rater").distinct().count() == 10
    assert min(r.report.pairs_answered for r in raters) >= 15
    votes, _ = suspicion_frames(campaign)
    assert votes.groupby("rater")["item"].nunique().min() >= 20  # enough shared items for both checks to judge
    update_rater_quality(campaign)
    held = RaterReview.objects.filter(campaign=campaign, rater__participant_id__regex=r"^(careful|casual)-")
    assert not held.exists(), list(held.values_list("rater__participant_id", "reasons"))


def test_a_prompt_outside_the_demo_domain_is_refused_and_nothing_is_voted(live_server, demo_campaign):
    campaign = demo_campaign(prompts=["an astronaut riding a horse on the moon"], gold_rate=0.0)
    report = rater(live_server, campaign, "careful").run(deadline=time.monotonic() + 60, max_pairs=3)
    assert "not a prompt of the demo domain" in report.refused
    assert report.pairs_answered == 0 and not Vote.objects.filter(campaign=campaign).exists()


def test_the_command_reports_the_crowd_and_what_quality_control_made_of_it(live_server, demo_campaign, capsys):
    campaign = demo_campaign(gold_rate=0.0)
    call_command(
        "simulate_raters",
        campaign=campaign.pk,
        site=live_server.url,
        raters=2,
        minutes=2,
        max_pairs=3,
        think_scale=0.01,
        mix="careful=1",
        seed=3,
    )
    out = capsys.readouterr().out
    assert "2 simulated raters" in out and "6 pairs answered" in out
    assert "quality control flags: careful" in out
    assert Rater.objects.filter(campaigns=campaign, simulated=True).count() == 2


def test_the_command_finds_the_newest_open_campaign_by_name(live_server, demo_campaign, capsys):
    campaign = demo_campaign(gold_rate=0.0)
    call_command(
        "simulate_raters",
        campaign_name=campaign.name,
        site=live_server.url,
        raters=1,
        minutes=1,
        max_pairs=2,
        think_scale=0.01,
        mix="careful=1",
    )
    assert "2 pairs answered" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no open campaign named 'nothing like it'"):
        call_command("simulate_raters", campaign_name="nothing like it", site=live_server.url)
    with pytest.raises(CommandError, match="give one of"):
        call_command("simulate_raters", campaign=campaign.pk, campaign_name=campaign.name)


def test_the_command_gives_up_clearly_when_no_site_answers(demo_campaign):
    campaign = demo_campaign(gold_rate=0.0)
    with pytest.raises(CommandError, match="did not answer .* within 1 s"):
        call_command("simulate_raters", campaign=campaign.pk, site="http://127.0.0.1:9", wait=1.0)


def test_a_rater_behind_a_tls_proxy_votes_on_a_site_in_production_shape(live_server, demo_campaign, settings):
    """Secure cookies and HTTPS CSRF rules (DEBUG=0): a plain-HTTP client must speak as the proxy's hop does."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    campaign = demo_campaign(gold_rate=0.0)
    profile = draw_profile("careful", __import__("numpy").random.default_rng(0))
    proxied = SimulatedRater(simulation_link(live_server, campaign), profile, 0, 0.01, proxied=True)
    assert proxied.run(deadline=time.monotonic() + 60, max_pairs=2).pairs_answered == 2
    direct = SimulatedRater(simulation_link(live_server, campaign), profile, 1, 0.01)
    assert "did not reach the rating page" in direct.run(deadline=time.monotonic() + 60, max_pairs=2).stopped
