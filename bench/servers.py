"""The site in its production shape, started by a benchmark for itself: gunicorn on a free port.

from bench.servers import server_env, start_gunicorn   # with the repository root on sys.path

    env = server_env(database_url, var_dir)
    server, host = start_gunicorn(env, workers=3, threads=4, log_path=var_dir + "/gunicorn.log")
    ...
    server.terminate(); server.wait()
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def server_env(database_url: str, var_dir: str, **extra: str) -> dict:
    """Environment of a DEBUG=0 site on `database_url`, its files under `var_dir`, with no per-rater rate limit
    and no join limit per address (a benchmark's raters share one address and would be throttled as one)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "60",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "EVALSITE_RATER_RATE": "1000000/min",
        "EVALSITE_JOIN_RATE": "1000000/hour",  # every simulated rater joins from 127.0.0.1
        "EVALSITE_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    """Until `url` answers 200 (SystemExit after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server did not answer {url}")
        time.sleep(0.5)


def start_gunicorn(
    env: dict, workers: int, threads: int, log_path: str | Path, timeout: int = 60, backlog: int = 2048
) -> tuple[subprocess.Popen, str]:
    """gunicorn (gthread workers) serving the site on a free local port, answering /healthz: (process, URL)."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 - the server's own log, open for its lifetime
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "evalsite.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--timeout", str(timeout), "--backlog", str(backlog),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    host = f"http://127.0.0.1:{port}"
    wait_for(f"{host}/healthz")
    return server, host


def log_tracebacks(log_path: str | Path) -> int:
    """How many tracebacks the server wrote to its log: each one is a request that failed inside the site."""
    return Path(log_path).read_text().count("Traceback")


def stop_server(server: subprocess.Popen | None) -> None:
    """SIGTERM and wait: gunicorn finishes the requests in flight before it exits."""
    if server is not None:
        server.terminate()
        server.wait(timeout=30)


def prepare_site(env: dict) -> None:
    """Migrate the site's database and collect its static files (manifest storage, as in production)."""
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([python, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


def django_step(script: str | Path, env: dict, step: str, *args: str) -> dict:
    """Run one step of a bench script in its own Django process (`script step args...`); its last stdout line
    is JSON. A failing step stops the bench with the end of its stderr."""
    done = subprocess.run([sys.executable, str(script), step, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def redis_up() -> bool:
    """Whether a Redis answers on 127.0.0.1:6379 (the benches that restart it or put a cache on it ask)."""
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode == 0
