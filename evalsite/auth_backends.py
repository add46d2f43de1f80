"""The raters' session backend: Django's ModelBackend, with the user behind a session read by one hand-written
statement.

Every request of a logged-in rater loads its user (the session names it); through the ORM that lookup cost about
1.9 ms of Python per request on the development machine (bench/vote_path.py), a tenth of a rated pair. The
statement, the checks and the result are those of ModelBackend.get_user: the row by primary key, None for a user
who may not log in (inactive); the session's hash is then checked by Django as for any backend.

It checks no passwords: settings.AUTHENTICATION_BACKENDS lists it first and Django's ModelBackend after it, which
logs in people with a password (researchers: their sessions load the user through the ORM, off the hot path) and
keeps the sessions made before this backend existed valid. Raters are logged in by their invite link with this
backend (rating.views.join), as are test clients (force_login takes the first backend). Checking passwords here
too would hash a wrong password twice, once per backend.
"""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.db import connection

from evalsite.rating.rows import columns, fetch_row, instance, select_list


@functools.cache
def _user_statement() -> tuple[str, list]:
    """(SQL, its columns) reading one user by primary key: worked out once, not per request."""
    user_model = get_user_model()
    selected = columns(user_model, "u")
    return f"{select_list(selected)} FROM {user_model._meta.db_table} u WHERE u.id = %s", selected


class UserBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        return None  # passwords: ModelBackend, next in the list

    def get_user(self, user_id):
        user_model = get_user_model()
        try:
            pk = user_model._meta.pk.to_python(user_id)
            prepared = user_model._meta.pk.get_db_prep_value(pk, connection)
        except Exception:  # noqa: BLE001 - as ModelBackend, whose .get(pk=...) fails on any malformed id
            return None
        sql, selected = _user_statement()
        row = fetch_row(sql, [prepared], selected)
        if row is None:
            return None
        user = instance(user_model, row)
        return user if self.user_can_authenticate(user) else None
