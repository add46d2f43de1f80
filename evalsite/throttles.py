"""Counting requests where every process and machine sees the same count: the "shared" cache (Redis, or files
under var/ in the embedded default). Imports no app.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
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


def _now() -> float:  # the clock of count_use's windows (tests pin it)
    return time.time()


def count_use(name: str, seconds: int) -> tuple[int, float]:
    """Count one use of `name` in the current window of `seconds` (windows aligned on the clock, as a fixed-window
    counter's are); returns (uses in this window, this one included, seconds until the window ends).

    One operation on the shared cache, where a sliding log (DRF's throttles) costs a read and a write of the whole
    log per request: on Redis, SET NX with the window's lifetime and INCR in one pipelined round trip; in the
    embedded default, one appended byte to the window's file (SharedFileCache.count_in_window). Exact under
    concurrency on both. Raises what CACHE_AWAY names when Redis is away."""
    now = _now()
    window = int(now // seconds)
    ends = (window + 1) * seconds
    cache = shared_cache()
    key = f"{name}:{window}"
    if hasattr(cache, "count_in_window"):
        return cache.count_in_window(key, ends), ends - now
    if isinstance(cache, RedisCache):
        full = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(full, write=True).pipeline(transaction=False)
        pipe.set(full, 0, ex=max(1, int(ends - now) + 1), nx=True)
        pipe.incr(full)
        return int(pipe.execute()[1]), ends - now
    cache.add(key, 0, timeout=max(1, int(ends - now) + 1))  # any other cache: two operations
    try:
        return cache.incr(key), ends - now
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=max(1, int(ends - now) + 1))
        return 1, ends - now


def forget(scope: str, key: str) -> None:
    try:
        shared_cache().delete(f"budget:{scope}:{key}")
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): %s budget of one key not reset", exc, scope)
