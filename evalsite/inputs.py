"""Checks on raw request input that every app shares (imports no app)."""

from __future__ import annotations

import re

# An id from a query string or form: ASCII digits only (str.isdigit() also takes "²" and other Unicode digits,
# which int() then refuses with a 500), and small enough for a 64-bit primary key.
NUMERIC_ID = re.compile(r"[0-9]{1,18}")


def numeric_id(raw: str | None) -> int | None:
    """The id as an int, or None when `raw` is missing or not a plain, bounded decimal number."""
    if raw is None or not NUMERIC_ID.fullmatch(raw):
        return None
    return int(raw)
