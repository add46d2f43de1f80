"""Counting requests where every process and machine sees the same count: the "shared" cache (Redis, or files
under var/ in the embedded default). Imports no app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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
        used = _add_and_incr(cache, name, seconds)
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): %s not counted", exc, scope)
        return False
    return used > limit


def _add_and_incr(cache, key: str, timeout: int) -> int:
    """One more use of a counter made with `timeout` as its lifetime (Django's incr: atomic on Redis)."""
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def _now() -> float:  # the clock of count_use's windows (tests pin it)
    return time.time()


@dataclass(frozen=True)
class Use:
    """One counted use: this window's count (this use included), the previous window's, and where in the window."""

    count: int
    previous: int
    elapsed: float  # share of the current window gone, 0 <= elapsed < 1
    seconds: int

    @property
    def estimate(self) -> float:
        """Uses in the last `seconds`, estimated as this window's count plus the previous window's count weighted
        by the share of the previous window still inside the last `seconds` (the sliding-window estimate)."""
        return self.count + self.previous * (1 - self.elapsed)

    def retry_after(self, limit: int) -> float:
        """Seconds until one more use fits under `limit`, if no other use comes meanwhile: to the end of this
        window, plus the part of the next one in which this window's count, weighted down, still leaves no room."""
        left = (1 - self.elapsed) * self.seconds
        return left + self.seconds * max(0.0, 1 - (limit - 1) / max(self.count, 1))


def count_use(name: str, seconds: int) -> Use:
    """Count one use of `name` in the current window of `seconds` (windows aligned on the clock) and read the
    previous window's count, for the sliding-window estimate (Use.estimate): a burst across a window's end is held
    to about the rate, as a sliding log holds it, at the cost of two counters per name.

    One round trip to the shared cache, where DRF's sliding log reads and rewrites the whole log per request: on
    Redis, SET NX (the counter's lifetime: this window and the next) + INCR + GET of the previous window,
    pipelined; in the embedded default, one byte appended to the window's file and the size of the previous one
    (SharedFileCache.count_in_window). Exact under concurrency on both. Raises what CACHE_AWAY names when Redis is
    away."""
    now = _now()
    window = int(now // seconds)
    elapsed = now / seconds - window
    lifetime = max(1, int((window + 2) * seconds - now) + 1)  # the counter is read as "previous" in the next window
    cache = shared_cache()
    key, previous_key = f"{name}:{window}", f"{name}:{window - 1}"
    if hasattr(cache, "count_in_window"):
        count, previous = cache.count_in_window(name, window, seconds)
    elif isinstance(cache, RedisCache):
        full, previous_full = cache.make_and_validate_key(key), cache.make_and_validate_key(previous_key)
        pipe = cache._cache.get_client(full, write=True).pipeline(transaction=False)
        pipe.set(full, 0, ex=lifetime, nx=True)
        pipe.incr(full)
        pipe.get(previous_full)
        _, count, previous = pipe.execute()
    else:  # any other cache: three operations
        count = _add_and_incr(cache, key, lifetime)
        previous = cache.get(previous_key)
    return Use(int(count), int(previous or 0), elapsed, seconds)


def forget(scope: str, key: str) -> None:
    try:
        shared_cache().delete(f"budget:{scope}:{key}")
    except CACHE_AWAY as exc:
        log.warning("shared cache away (%s): %s budget of one key not reset", exc, scope)
