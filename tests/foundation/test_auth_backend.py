"""The raters' session backend (evalsite.auth_backends.UserBackend): the same users as Django's ModelBackend, in one
hand-written statement, and sessions made by either backend stay valid."""

from __future__ import annotations

from unittest import mock

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from evalsite.auth_backends import UserBackend

STOCK = "django.contrib.auth.backends.ModelBackend"


def test_it_loads_the_same_user_as_modelbackend_in_one_statement(db):
    user = get_user_model().objects.create_user("ada", password="a long enough password", email="ada@example.org")
    with CaptureQueriesContext(connection) as queries:
        loaded = UserBackend().get_user(user.pk)
    assert len(queries) == 1
    expected = ModelBackend().get_user(user.pk)
    for field in get_user_model()._meta.concrete_fields:
        assert getattr(loaded, field.attname) == getattr(expected, field.attname), field.name
    assert loaded.get_session_auth_hash() == expected.get_session_auth_hash()


def test_no_user_for_an_unknown_inactive_or_malformed_id(db):
    user = get_user_model().objects.create_user("bo", is_active=False)
    backend = UserBackend()
    assert backend.get_user(user.pk) is None  # as ModelBackend: an inactive user may not log in
    assert backend.get_user(user.pk + 1000) is None
    assert backend.get_user("not a number") is None


def test_a_rater_session_and_a_session_from_before_the_backend_both_stay_logged_in(db):
    user = get_user_model().objects.create_user("cy")
    for backend in ("evalsite.auth_backends.UserBackend", STOCK):
        client = Client()
        client.force_login(user, backend=backend)
        assert client.session["_auth_user_backend"] == backend
        assert client.get("/").wsgi_request.user == user
    user.is_active = False
    user.save()
    assert client.get("/").wsgi_request.user.is_anonymous


def test_a_password_is_checked_once_by_modelbackend(client, db):
    get_user_model().objects.create_user("di", password="a long enough password")
    check = AbstractBaseUser.check_password
    with mock.patch.object(AbstractBaseUser, "check_password", autospec=True, side_effect=check) as checked:
        client.post("/accounts/login/", {"username": "di", "password": "wrong"})
        assert checked.call_count == 1  # not once per backend
        response = client.post("/accounts/login/", {"username": "di", "password": "a long enough password"})
    assert response.status_code == 302 and checked.call_count == 2
    assert client.session["_auth_user_backend"] == STOCK
