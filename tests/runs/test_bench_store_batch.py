"""bench/store_batch.py, as its command line, at a small size: both ways store every image of every batch (the
bench asserts it) and the ratio is printed per size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_store_batch_bench_times_both_ways_on_fresh_rows(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EVALSITE_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "bench/store_batch.py", "--sizes=64,96", "--batch=4", "--repeats=2", "--threads=2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "pool: 2 threads" in lines[0] and "SQLite" in lines[0]
    assert lines[1].startswith("64x64: serial") and lines[2].startswith("96x96: serial")
    assert all("ratio" in line for line in lines[1:3])
