"""The PostgreSQL databases the benchmarks create for themselves and drop at the end.

from bench.databases import drop_database, recreate_database   # with the repository root on sys.path
"""

from __future__ import annotations

import psycopg


def admin_url(url: str) -> tuple[str, str]:
    """(URL of the server's postgres database, name of the bench database)."""
    base, name = url.rsplit("/", 1)
    return f"{base}/postgres", name


def recreate_database(url: str) -> None:
    """Drop the database `url` names if it exists (closing its connections), then create it empty."""
    admin, name = admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    admin, name = admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def release_database(url: str, keep: bool = False) -> None:
    """The end of a bench that ran Django in this process: close its connections, then drop the database
    unless `keep`."""
    if keep:
        return
    from django.db import connections

    connections.close_all()
    drop_database(url)
