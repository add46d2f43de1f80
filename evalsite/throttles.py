"""Counting requests where every process and machine sees the same count: the "shared" cache (Redis, or files
under var/ in the embedded default). Imports no app.
"""

from __future__ import annotations

import logging

from django.core.cache import caches
from rest_framework.throttling import BaseThrottle

from evalsite.outages import CACHE_AWAY

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The shared cache away (Redis restarting, CACHE_AWAY): a limit that cannot be counted lets the request through,
# with a warning, rather than turning a cache restart into errors for every rater, for the restart's seconds.
log = logging.getLogger(__name__)


def shared_cache():
    return caches["shared"]


def parse_rate(rate: str) -> tuple[int, int]:
    """ "5/hour" -> (5, 3600): DRF's rate syntax (the period's first letter counts)."""
    number, period = rate.split("/")
    return int(number), _PERIODS[period.strip()[0]]


def client_address(request) -> str:
    """The client's address as DRF's throttles see it: REMOTE_ADDR, or the entry NUM_PROXIES hops back in
    X-Forwarded-For behind a proxy (a client cannot pick its own by sending the header)."""
    return BaseThrottle().get_ident(request)


def over_budget(scope: str, key: str, rate: str, *, count: bool = True) -> bool:
    """Whether `key` has used up `rate` in the current window of `scope`; with `count`, this use counts first.

    A fixed window: the counter is made with the window's length as its lifetime and incremented (atomic on
    Redis)."""
    limit, seconds = parse_rate(rate)
    cache = shared_cache()
    name = f"budget:{scope}:{key}"
    try:
        if not count:
            return (cache.get(name) or 0) >= limit
        cache.add(name, 0, timeout=seconds)
        try:
            used = cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.set(name, 1, timeout=seconds)
            used = 1
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): %s not counted", exc, scope)
        return False
    return used > limit


def forget(scope: str, key: str) -> None:
    try:
        shared_cache().delete(f"budget:{scope}:{key}")
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): %s budget of one key not reset", exc, scope)
