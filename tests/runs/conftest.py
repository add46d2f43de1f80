"""Fixtures for the runs tests: a private filesystem broker, real tiny checkpoints, a logged-in researcher."""

from __future__ import annotations

import pytest

from evalsite.runs.testing import broker_options, queued_messages, tiny_unet_checkpoint


@pytest.fixture
def broker(tmp_path, monkeypatch):
    """Tasks sent by this process go to a filesystem broker in tmp_path, whatever CELERY_BROKER_URL says;
    `broker.messages()` lists what waits there."""
    from evalsite.celery import app

    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")  # Celery reads this variable before its config

    previous = app.conf.broker_url, app.conf.broker_transport_options

    def switch(url, options):
        app.conf.broker_url, app.conf.broker_transport_options = url, options
        app._pool = None
        app.amqp._producer_pool = None

    switch("filesystem://", broker_options(tmp_path))

    class Broker:
        @staticmethod
        def messages():
            return queued_messages(tmp_path)

    yield Broker()
    switch(*previous)


@pytest.fixture(scope="session")
def unet_checkpoint(tmp_path_factory):
    return tiny_unet_checkpoint(tmp_path_factory.mktemp("unet") / "ckpt")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client
