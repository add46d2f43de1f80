"""The embedded default's shared cache (files under var/): cheap writes, and live entries kept over expired ones."""

from __future__ import annotations

import pytest

from evalsite.cache import SharedFileCache


def test_writes_do_not_list_the_cache_folder_each_time(tmp_path, monkeypatch):
    cache = SharedFileCache(str(tmp_path), {})
    listings = []
    real = cache._list_cache_files
    monkeypatch.setattr(cache, "_list_cache_files", lambda: listings.append(1) or real())
    for n in range(50):
        cache.set(f"budget:rater:{n}", n, 60)
    assert len(listings) <= 2  # once per CULL_CHECK_SECONDS (the check itself lists, and so may Django's cull)
    assert cache.get("budget:rater:49") == 49


def test_a_cull_removes_expired_entries_before_live_ones(tmp_path, monkeypatch):
    cache = SharedFileCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 3}})
    for n in range(3):
        cache.set(f"old:{n}", n, 60)
    monkeypatch.setattr("time.time", lambda: 10**10)  # every entry so far has expired
    monkeypatch.setattr(cache, "_culled_at", float("-inf"))
    cache.set("live", 1, 60)
    assert cache.get("live") == 1 and len(cache._list_cache_files()) == 1


def _count_many(directory: str, n: int, out) -> None:
    cache = SharedFileCache(directory, {})
    out.put([cache.count_in_window("budget:rater:7", 4_000_000_000) for _ in range(n)])


def test_a_window_count_is_exact_across_processes(tmp_path):
    """Four processes count the same key at once: every use is counted once, no two see the same count."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_count_many, args=(str(tmp_path), 200, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    seen = [count for _ in workers for count in out.get(timeout=60)]
    for worker in workers:
        worker.join()
    assert sorted(seen) == list(range(1, 801))


def test_window_counts_are_removed_after_their_window_and_by_clear(tmp_path, monkeypatch):
    import time

    cache = SharedFileCache(str(tmp_path), {})
    monkeypatch.setattr(cache, "_counts_culled_at", time.monotonic())  # no clean-up until asked below
    assert [cache.count_in_window("a", 1_000) for _ in range(3)] == [1, 2, 3]  # a window that ended long ago
    assert cache.count_in_window("b", 4_000_000_000) == 1
    assert cache.count_in_window("a", 1_060) == 1  # the next window of "a" counts from one
    monkeypatch.setattr(cache, "_counts_culled_at", float("-inf"))
    cache._cull_counts()
    assert len(list(tmp_path.glob("*.count"))) == 1  # "b"'s, whose window is still running
    cache.clear()
    assert not list(tmp_path.glob("*.count")) and cache.count_in_window("b", 4_000_000_000) == 1


@pytest.mark.parametrize("backend", ["files", "redis"])
def test_count_use_counts_in_aligned_windows_in_one_operation(backend, settings, tmp_path, monkeypatch):
    """evalsite.throttles.count_use, on both shared caches: counts 1, 2, 3 within a window, says how long the
    window has left, and starts again at 1 in the next; on Redis the key lives no longer than its window."""
    from django.core.cache import caches

    from evalsite import throttles

    if backend == "redis":
        import redis

        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("no Redis on 127.0.0.1:6379")
        location = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/8"}
    else:
        location = {"BACKEND": "evalsite.cache.SharedFileCache", "LOCATION": str(tmp_path)}
    settings.CACHES = {**settings.CACHES, "shared": location}
    caches["shared"].clear()
    monkeypatch.setattr(throttles, "_now", lambda: 6_000_000_015.0)  # 15 s into a minute
    name = f"rater:{backend}"
    assert [throttles.count_use(name, 60) for _ in range(3)] == [(1, 45.0), (2, 45.0), (3, 45.0)]
    if backend == "redis":
        ttl = caches["shared"]._cache.get_client(None).ttl(caches["shared"].make_key(f"{name}:100000000"))
        assert 0 < ttl <= 46
    monkeypatch.setattr(throttles, "_now", lambda: 6_000_000_060.0)
    assert throttles.count_use(name, 60) == (1, 60.0)
    caches["shared"].clear()
