"""Django's PostgreSQL backend, patient when the server is restarting.

A new connection that the server refuses (it is restarting, or starting up: "Connection refused", "the
database system is starting up / shutting down") is tried again for up to DATABASE_CONNECT_PATIENCE seconds
before the error goes up. A fast restart (a second or two) then costs the requests that arrive meanwhile a
short wait instead of a 503; a longer outage still ends in the 503 with Retry-After that evalsite.views
answers. Connections that die in the middle of a query are not retried here: their transaction is rolled back
and the request gets the 503 (the rater page sends it again).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db.backends.postgresql import base

log = logging.getLogger(__name__)


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        patience = getattr(settings, "DATABASE_CONNECT_PATIENCE", 0)
        deadline = time.monotonic() + patience
        delay = 0.1
        while True:
            try:
                return super().get_new_connection(conn_params)
            except base.Database.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("database refused a connection (%s); trying again in %.1f s", str(exc).strip(), delay)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def prepared_cursor(self):
        """A cursor whose statements the server binds, so that psycopg keeps a statement prepared on this connection
        from its fifth use on (prepare_threshold): the server then plans it once, not on every request.

        For the rater API's hand-written statements (evalsite.rating.rows): planning their joins cost the server
        more than running them (1.5 of 2.2 ms for the vote's lock, bench/vote_path.py). Django's own cursors bind
        on the client (psycopg's ClientCursor), which never prepares, and the ORM's queries stay on those. It pays
        with persistent connections (DATABASE_CONN_MAX_AGE > 0, as in production); a connection per request
        never reaches a fifth use. Wrapped as Django wraps every cursor: its statements are logged, counted and
        their errors translated the same way."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = base.ServerBindingCursor(self.connection)
            tzloader = self.connection.adapters.get_loader(base.TIMESTAMPTZ_OID, base.Format.TEXT)
            if self.timezone != tzloader.timezone:
                base.register_tzloader(self.timezone, cursor)
            return self._prepare_cursor(cursor)
