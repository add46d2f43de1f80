"""The default cache on Redis, tolerant of Redis restarting; and the embedded default's shared file cache.

What the default cache holds are hints (the engine's open pairs and wins, the images' normalised pixels,
sessions in front of the database): a miss costs a query, never a wrong answer. So while Redis is away a read
is a miss and a write is skipped, with a warning, instead of failing the rater's request. The "shared" cache
(rate limits) stays a plain RedisCache: evalsite.throttles decides what an uncountable limit means.
"""

from __future__ import annotations

import hashlib
import logging
import os
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
COUNT_SUFFIX = ".count"  # a rate-limit window's counter file (SharedFileCache.count_in_window)


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
        self._culled_at = self._counts_culled_at = float("-inf")

    def count_in_window(self, name: str, window: int, seconds: int) -> tuple[int, int]:
        """One more use of `name` in window number `window` (of `seconds`); returns (the uses in this window so far,
        this one included; the uses in the window before). Each use appends one byte to the window's own file and
        the file's offset after the write is the count: O_APPEND makes each write land at the end as one step, so
        concurrent processes never lose a use, and no read, pickle or rename is needed (Django's incr is a get and
        a set). The previous window's count is its file's size. A window's file is removed once the window after it
        has ended too, by the periodic clean-up of any process."""
        digest = hashlib.md5(self.make_and_validate_key(name).encode(), usedforsecurity=False).hexdigest()
        path = os.path.join(self._dir, f"{digest}.{window}.{seconds}{COUNT_SUFFIX}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:  # the folder itself was removed: make it again
            self._createdir()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")
            used = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        try:
            previous = os.stat(os.path.join(self._dir, f"{digest}.{window - 1}.{seconds}{COUNT_SUFFIX}")).st_size
        except FileNotFoundError:
            previous = 0
        self._cull_counts()
        return used, previous

    def _cull_counts(self):
        now = time.monotonic()
        if now - self._counts_culled_at < CULL_CHECK_SECONDS:
            return
        self._counts_culled_at = now
        wall = time.time()
        self._remove_counts(lambda window, seconds: (window + 2) * seconds < wall)

    def _remove_counts(self, which):
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return
        for name in names:
            if not name.endswith(COUNT_SUFFIX):
                continue
            window, seconds = name[: -len(COUNT_SUFFIX)].split(".")[1:3]
            if which(int(window), int(seconds)):
                try:
                    os.remove(os.path.join(self._dir, name))
                except FileNotFoundError:
                    pass

    def clear(self):
        super().clear()
        self._remove_counts(lambda window, seconds: True)

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
