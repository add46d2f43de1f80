"""Helpers shared by tests: real PNG bytes and real Celery worker processes."""

from __future__ import annotations

import io
import os

import numpy as np

SHARED_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# The reference copy lives in ../shared; the repository carries the same file for fresh machines.
PARTI_PROMPTS = next(
    p
    for p in (os.path.join(SHARED_DIR, "data", "PartiPrompts.tsv"), os.path.join(REPO_ROOT, "data", "PartiPrompts.tsv"))
    if os.path.exists(p)
)


def png_bytes(seed: int, size: int = 32) -> bytes:
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- Real Celery worker processes ------------------------------------------------------------------


def worker_environment() -> dict[str, str]:
    """Environment for a worker subprocess that shares this test session's database and broker."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or ""
        auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
        env["DATABASE_URL"] = f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["EVALSITE_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(queues: str = "default,gpu", log_path: str | None = None, extra_env: dict | None = None):
    """Start a worker with `bin/process worker`, the command bin/up and docker/ use, in its own process group."""
    import subprocess

    env = {**worker_environment(), "WORKER_QUEUES": queues, "WORKER_CONCURRENCY": "1", **(extra_env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (handed to the child)
    return subprocess.Popen(
        [os.path.join(REPO_ROOT, "bin", "process"), "worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process, sig=None) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, sig or signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
