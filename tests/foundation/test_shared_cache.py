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
    out.put([cache.count_in_window("budget:rater:7", 10**9, 60)[0] for _ in range(n)])  # a window far ahead


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


def test_window_counts_read_the_previous_window_and_are_removed_after_the_next(tmp_path, monkeypatch):
    import time

    cache = SharedFileCache(str(tmp_path), {})
    monkeypatch.setattr(cache, "_counts_culled_at", time.monotonic())  # no clean-up until asked below
    assert [cache.count_in_window("a", 10, 60) for _ in range(3)] == [(1, 0), (2, 0), (3, 0)]
    assert cache.count_in_window("a", 11, 60) == (1, 3)  # the next window counts from one and reads the last
    assert cache.count_in_window("a", 13, 60) == (1, 0)  # no use in window 12
    now = int(time.time() // 60)
    assert cache.count_in_window("b", now, 60) == (1, 0)
    monkeypatch.setattr(cache, "_counts_culled_at", float("-inf"))
    cache._cull_counts()
    assert len(list(tmp_path.glob("*.count"))) == 1  # "b"'s, whose window is still running
    cache.clear()
    assert not list(tmp_path.glob("*.count")) and cache.count_in_window("b", now, 60) == (1, 0)


@pytest.mark.parametrize("backend", ["files", "redis", "locmem"])
def test_count_use_weighs_the_previous_window_in_one_round_trip(backend, settings, tmp_path, monkeypatch):
    """evalsite.throttles.count_use, on both shared caches: counts within a window; in the next one the
    estimate adds the last window's count weighted by the share of it still inside the last minute; on Redis a
    counter lives no longer than its window and the next."""
    from django.core.cache import caches

    from evalsite import throttles

    if backend == "redis":
        import redis

        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except redis.exceptions.ConnectionError:
            pytest.skip("no Redis on 127.0.0.1:6379")
        location = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/8"}
    elif backend == "locmem":  # any other cache: add, incr and get
        location = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "count-use-test"}
    else:
        location = {"BACKEND": "evalsite.cache.SharedFileCache", "LOCATION": str(tmp_path)}
    settings.CACHES = {**settings.CACHES, "shared": location}
    caches["shared"].clear()
    clock = {"t": 6_000_000_015.0}  # 15 s into a minute
    monkeypatch.setattr(throttles, "_now", lambda: clock["t"])
    name = f"rater:{backend}"
    uses = [throttles.count_use(name, 60) for _ in range(4)]
    assert [u.estimate for u in uses] == [1, 2, 3, 4]
    assert uses[-1].retry_after(3) == pytest.approx(45 + 60 * (1 - 2 / 4))  # 3/min: room again 30 s into the next
    if backend == "redis":
        ttl = caches["shared"]._cache.get_client(None).ttl(caches["shared"].make_key(f"{name}:100000000"))
        assert 105 - 2 <= ttl <= 106
    clock["t"] = 6_000_000_090.0  # half-way through the next minute
    use = throttles.count_use(name, 60)
    assert (use.count, use.previous) == (1, 4) and use.estimate == pytest.approx(1 + 4 * 0.5)
    clock["t"] = 6_000_000_200.0  # two windows on: nothing carried over
    assert throttles.count_use(name, 60).estimate == 1
    caches["shared"].clear()


def test_a_burst_across_a_windows_end_is_held_to_about_the_rate(settings, tmp_path, monkeypatch):
    """100 uses in the last second of a minute, then a burst in the first seconds of the next: with a limit of
    120 a minute, about 20 more pass (a plain fixed window would let 120 more through)."""
    from evalsite import throttles

    settings.CACHES = {**settings.CACHES, "shared": {"BACKEND": "evalsite.cache.SharedFileCache",
                                                     "LOCATION": str(tmp_path)}}  # fmt: skip
    clock = {"t": 6_000_000_059.0}
    monkeypatch.setattr(throttles, "_now", lambda: clock["t"])
    passed = sum(throttles.count_use("burst", 60).estimate <= 120 for _ in range(100))
    clock["t"] = 6_000_000_060.5
    passed += sum(throttles.count_use("burst", 60).estimate <= 120 for _ in range(200))
    assert passed == 100 + 20
