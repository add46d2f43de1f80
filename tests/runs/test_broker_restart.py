"""The broker (Redis) restarted in the middle of a generation run: the queued tasks are gone with it, the
worker reconnects by itself, the sweeper sends the lost jobs again, and the run completes with exactly one
image per (model, prompt, seed). The test starts its own redis-server on a free port, so the machine's Redis
(CI's broker, other work) is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from tests.support import WorkerProcess, switch_broker, tiny_unet_checkpoint, wait_for

SETTINGS = {"steps": 60, "guidance_scale": 3.0, "height": 16, "width": 16}
REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, without persistence: a restart loses every queued message."""

    def __init__(self, port: int):
        self.port, self.proc = port, None

    def start(self) -> PrivateRedis:
        command = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.up, timeout=10, what="redis-server to accept connections")
        return self

    def up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
@pytest.mark.django_db(transaction=True)
def test_a_broker_restart_mid_run_loses_no_image_and_makes_none_twice(
    tmp_path, settings, make_prompt_set, one_torch_thread, monkeypatch
):
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    settings.EVALSITE_DISPATCH_LEASE_SECONDS = 10  # a job whose message was lost is sent again after 10 s
    redis = PrivateRedis(free_port()).start()
    url = f"redis://127.0.0.1:{redis.port}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery reads this variable before its configuration
    restore_broker = switch_broker(url, {"visibility_timeout": 7200})
    checkpoint = tiny_unet_checkpoint(tmp_path / "unet")
    models = [
        ImageModel.objects.create(
            name=f"unet-{i}", kind="unet_baseline", source=str(checkpoint), sampler_settings=SETTINGS
        )
        for i in range(2)
    ]
    prompts = make_prompt_set(texts=[f"a shape number {i}" for i in range(4)])
    worker = WorkerProcess(tmp_path, media, tmp_path / "worker.log", extra_env={"CELERY_BROKER_URL": url}).start()
    try:
        run = services.create_run(
            name="broker restart", prompt_set=prompts, image_models=models, seeds=[0, 1], batch_size=2
        ).run  # 2 models x 4 prompts x 2 seeds = 16 images in 8 jobs, all sent to Redis at once
        done = lambda: Image.objects.filter(run=run, status="done").count()  # noqa: E731
        wait_for(lambda: done() >= 2, timeout=180, interval=0.05, what="a first stored batch", worker=worker)
        redis.stop()  # the queued messages die with it
        before = done()
        task_ids = dict(GenerationJob.objects.filter(run=run).values_list("id", "task_id"))
        time.sleep(2)
        redis.start()
        assert before < 16, "the run finished before the restart: make the jobs slower"

        def swept_and_done() -> bool:
            services.sweep_lost_jobs()  # what beat runs every minute
            return done() == 16 and not GenerationJob.objects.filter(run=run).exclude(status="done").exists()

        wait_for(swept_and_done, timeout=300, interval=2, what="all 16 images after the restart", worker=worker)
        log = worker.log()
    finally:
        worker.stop()
        restore_broker()
        redis.stop()
    keys = list(Image.objects.filter(run=run).values_list("model_id", "prompt_id", "seed"))
    assert len(keys) == len(set(keys)) == 16
    files = sorted(p.relative_to(media).as_posix() for p in (media / "images").rglob("*.png"))
    assert files == sorted(Image.objects.filter(run=run).values_list("file", flat=True))
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.DONE
    after = dict(GenerationJob.objects.filter(run=run).values_list("id", "task_id"))
    resent = [job for job, task in after.items() if task != task_ids[job]]
    assert resent, "no job was sent again: the restart lost nothing, so it tested nothing"
    reconnected = ("Connection to broker lost", "Cannot connect to redis", "Error while reading")
    assert any(line in log for line in reconnected), log[-3000:]  # the same worker process saw it and went on
    print(f"{before} of 16 images stored at the restart; jobs sent again by the sweeper: {len(resent)} of 8")
