"""The PostgreSQL backend tries a refused new connection again for DATABASE_CONNECT_PATIENCE seconds (a fast
restart of the server costs a wait, not a 503), then lets the error go up (a longer outage is a 503)."""

from __future__ import annotations

import socket
import time

import pytest
from django.db.backends.postgresql import base as django_base

from evalsite.dbbackends.postgresql.base import DatabaseWrapper


def wrapper_for(port: int) -> DatabaseWrapper:
    settings = {
        "ENGINE": "evalsite.dbbackends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPTIONS": {"connect_timeout": 2},
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
        "TIME_ZONE": None,
        "TEST": {},
    }
    return DatabaseWrapper(settings, alias="patience-test")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_refused_connection_is_tried_again_until_the_patience_runs_out(settings):
    settings.DATABASE_CONNECT_PATIENCE = 1.0
    db = wrapper_for(closed_port())
    started = time.monotonic()
    with pytest.raises(django_base.Database.OperationalError):
        db.get_new_connection(db.get_connection_params())
    assert 0.6 < time.monotonic() - started < 3.0

    settings.DATABASE_CONNECT_PATIENCE = 0
    started = time.monotonic()
    with pytest.raises(django_base.Database.OperationalError):
        db.get_new_connection(db.get_connection_params())
    assert time.monotonic() - started < 0.5


def test_a_server_back_within_the_patience_is_simply_connected_to(settings, monkeypatch):
    settings.DATABASE_CONNECT_PATIENCE = 5.0
    tries = []

    def restarting(self, params):
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise django_base.Database.OperationalError("the database system is starting up")
        return "a connection"

    monkeypatch.setattr(django_base.DatabaseWrapper, "get_new_connection", restarting)
    db = wrapper_for(5432)
    assert db.get_new_connection({}) == "a connection" and len(tries) == 3
