"""The embedded default's shared cache (files under var/): cheap writes, and live entries kept over expired ones."""

from __future__ import annotations

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
