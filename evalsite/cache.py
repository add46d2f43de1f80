"""The default cache on Redis, tolerant of Redis restarting; and the embedded default's shared file cache.

What the default cache holds are hints (the engine's open pairs and wins, the images' normalised pixels,
sessions in front of the database): a miss costs a query, never a wrong answer. So while Redis is away a read
is a miss and a write is skipped, with a warning, instead of failing the rater's request. The "shared" cache
(rate limits) stays a plain RedisCache: evalsite.throttles decides what an uncountable limit means.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache

from evalsite.outages import CACHE_AWAY as AWAY

log = logging.getLogger(__name__)


class TolerantRedisCache(RedisCache):
    def _away(self, operation: str, exc: Exception, answer):
        log.warning("cache away (%s): %s skipped", exc, operation)
        return answer

    def get(self, key, default=None, version=None):
        try:
            return super().get(key, default, version)
        except AWAY as exc:
            return self._away("get", exc, default)

    def get_many(self, keys, version=None):
        try:
            return super().get_many(keys, version)
        except AWAY as exc:
            return self._away("get_many", exc, {})

    def has_key(self, key, version=None):
        try:
            return super().has_key(key, version)
        except AWAY as exc:
            return self._away("has_key", exc, False)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout, version)
        except AWAY as exc:
            return self._away("add", exc, False)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set(key, value, timeout, version)
        except AWAY as exc:
            return self._away("set", exc, None)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().set_many(data, timeout, version)
        except AWAY as exc:
            return self._away("set_many", exc, list(data))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().touch(key, timeout, version)
        except AWAY as exc:
            return self._away("touch", exc, False)

    def delete(self, key, version=None):
        try:
            return super().delete(key, version)
        except AWAY as exc:
            return self._away("delete", exc, False)


CULL_CHECK_SECONDS = 60  # how often one process checks whether the shared file cache needs culling


class SharedFileCache(FileBasedCache):
    """The "shared" cache without Redis: files under var/ that every process on this machine sees.

    Django's file cache lists its whole folder on every write to decide whether to cull: each rate-limited
    request paid for a listing as long as the number of raters (about a tenth of a rated pair's time in a
    profile with 20 raters), and past MAX_ENTRIES it deleted a random third of the entries, rate-limit counts
    included.
    This one checks at most every CULL_CHECK_SECONDS per process, and removes expired entries before it
    considers removing live ones."""

    def __init__(self, dir, params):
        super().__init__(dir, params)
        self._culled_at = float("-inf")

    def _cull(self):
        now = time.monotonic()
        if now - self._culled_at < CULL_CHECK_SECONDS:
            return
        self._culled_at = now
        for name in self._list_cache_files():
            try:
                with open(name, "rb") as f:
                    self._is_expired(f)  # deletes the file when it has expired
            except FileNotFoundError:
                pass
        super()._cull()
