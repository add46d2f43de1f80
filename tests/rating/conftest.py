"""Fixtures for the rater app's tests: a campaign over a finished run, raters who joined it, clients."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone


@pytest.fixture
def rater_of(make_rater):
    """A rater who joined the campaign and has read the instructions."""

    def make(campaign, username="rater"):
        rater = make_rater(username)
        rater.instructions_seen_at = timezone.now()
        rater.save()
        campaign.raters.add(rater)
        return rater

    return make


@pytest.fixture
def login():
    def make(rater, **client_kwargs):
        client = Client(**client_kwargs)
        client.force_login(rater.user)
        return client

    return make


@pytest.fixture
def campaign(make_campaign):
    """3 models x 3 prompts (one asks for text) x 1 seed: 9 image pairs; no gold unless a test asks."""
    return make_campaign(gold_rate=0.0, votes_per_pair=3)


def answer_all(assignment, choice="left"):
    return {criterion: choice for criterion in assignment.campaign.criteria_for(assignment.prompt)}
