"""More than one machine: GPU workers that share PostgreSQL, Redis and an S3-compatible image store, and no
filesystem. The S3 API is moto's standalone server, started by the test on a free port as a separate process
and spoken to over HTTP with credentials from the environment, as a deployment speaks to MinIO or AWS S3.

The two-worker test needs the services a second machine could reach, PostgreSQL and Redis (as CI runs the
suite: DATABASE_URL=postgres://..., CELERY_BROKER_URL=redis://...); on the embedded defaults (SQLite, a
filesystem broker, both of one machine) it is skipped. The storage tests below run on any database."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.files.storage import storages
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from evalsite.catalog.models import ImageModel
from evalsite.rating.models import Assignment
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from tests.support import REPO_ROOT, WorkerProcess, tiny_unet_checkpoint, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "evalsite-test", "AWS_SECRET_ACCESS_KEY": "evalsite-test-secret"}
TOKEN_KEY = re.compile(r"^images/[A-Za-z0-9_-]{2}/[A-Za-z0-9_-]{22}\.png$")  # what an image's object is called


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's standalone S3 server (`python -m moto.server`) in a process of its own, state in memory."""

    def __init__(self, log_file: Path):
        self.port, self.log_file, self.proc = free_port(), log_file, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.up, timeout=60, what="moto's S3 server to accept connections")
        return self

    def up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"moto's S3 server exited:\n{self.log_file.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


def storage_env(server_url: str, bucket: str) -> dict:
    """What every process of the deployment is given: evalsite/settings.py turns it into STORAGES."""
    return {
        "EVALSITE_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": server_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        **CREDENTIALS,
    }


def use_s3(settings, monkeypatch, server_url: str, bucket: str) -> None:
    """This (web) process reads and writes images in the bucket, through the settings module's own S3 branch."""
    for name, value in storage_env(server_url, bucket).items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage_setting()}


def s3_storage_setting() -> dict:
    """STORAGES["default"] exactly as evalsite/settings.py builds it from this process's environment."""
    code = "import json; from evalsite import settings as s; print(json.dumps(s.STORAGES['default']))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    storage = json.loads(out.strip().splitlines()[-1])
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage", storage
    return storage


def names_of(models) -> list[str]:
    return [n.lower() for m in models for n in (m.name, m.public_id, m.source)]


def pixels(data: bytes) -> bytes:
    return PILImage.open(io.BytesIO(data)).convert("RGB").tobytes()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_gpu_workers_without_a_shared_folder_fill_one_bucket_with_one_object_per_image(
    tmp_path, settings, monkeypatch, s3_server, make_prompt_set, make_rater, staff_client
):
    if connection.vendor != "postgresql" or not django_settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("two machines share PostgreSQL and Redis (DATABASE_URL=postgres://..., CELERY_BROKER_URL=redis://)")
    bucket = "evalsite-two-machines"
    s3_server.client().create_bucket(Bucket=bucket)
    use_s3(settings, monkeypatch, s3_server.url, bucket)
    settings.MEDIA_ROOT = tmp_path / "web-media"  # nothing may land here either

    # Two machines: each worker its own working directory (secret key, caches, media folder), no folder shared.
    machines = [tmp_path / "machine-a", tmp_path / "machine-b"]
    workers = [
        WorkerProcess(
            machine,
            machine / "media",
            tmp_path / f"{machine.name}.log",
            queues="gpu",
            process="gpu-worker",
            extra_env={**storage_env(s3_server.url, bucket), "WORKER_NAME": machine.name},
        ).start()
        for machine in machines
    ]
    try:
        for worker in workers:
            wait_for(
                lambda w=worker: " ready." in w.log(), timeout=180, what="the gpu-worker to be ready", worker=worker
            )
        demo = Path(REPO_ROOT) / "demo_models"
        models = [
            ImageModel.objects.create(name="mmdit-demo-secret", kind="inhouse", source=str(demo / "mmdit-demo")),
            ImageModel.objects.create(
                name="unet-baseline-secret", kind="unet_baseline", source=str(demo / "unet-baseline")
            ),
        ]
        prompts = make_prompt_set(texts=["a red circle", "a blue square", "a green triangle"])
        run = services.create_run(
            name="two machines",
            prompt_set=prompts,
            image_models=models,
            seeds=[0, 1],
            sampler_overrides={"steps": 4},
            batch_size=1,
        ).run  # 2 models x 3 prompts x 2 seeds = 12 images in 12 jobs, sent to Redis after the commit

        def finished() -> bool:
            services.sweep_lost_jobs()  # what beat would run
            return not GenerationJob.objects.filter(run=run).exclude(status__in=["done", "failed"]).exists()

        wait_for(finished, timeout=420, interval=1, what="the run's 12 jobs", worker=workers[0])
    finally:
        for worker in workers:
            worker.stop()
    logs = {w.var_dir.name: w.log() for w in workers}
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.DONE, (list(run.jobs.values("status", "error")), logs)

    # Exactly one object per (model, prompt, seed), each the file of its image row, named by its token only.
    images = list(Image.objects.filter(run=run).select_related("model"))
    keys = {(i.model_id, i.prompt_id, i.seed) for i in images}
    assert len(images) == len(keys) == 12
    objects = s3_server.keys(bucket)
    assert objects == sorted(i.file.name for i in images)
    needles = names_of(models)
    for key in objects:
        assert TOKEN_KEY.match(key) and not any(n in key.lower() for n in needles), key

    # Both machines generated, and neither wrote an image (or anything else image-like) to its own disk.
    by_worker = dict(GenerationJob.objects.filter(run=run).values_list("worker").annotate(n=Count("id")))
    assert sorted(by_worker) == ["gpu-machine-a@" + socket.gethostname(), "gpu-machine-b@" + socket.gethostname()]
    assert all(n >= 1 for n in by_worker.values()), by_worker
    for machine in [*machines, tmp_path / "web-media"]:
        local = [p for p in machine.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".webp")]
        assert local == [], local

    # Raters see the bucket's images through per-assignment URLs; nothing there names a model.
    from evalsite.rating.models import Campaign

    campaign = Campaign.objects.create(name="two machines", run=run, gold_rate=0.0, votes_per_pair=1)
    rater = make_rater("rater-two-machines")
    rater.instructions_seen_at = timezone.now()
    rater.save()
    campaign.raters.add(rater)
    client = Client()
    client.force_login(rater.user)
    served = 0
    for _ in range(30):
        response = client.get("/api/assignments/next", {"campaign": campaign.pk})
        assert response.status_code == 200
        a = response.json()["assignment"]
        if a is None:
            break
        for side in ("left", "right"):
            url = a["images"][side]["url"]
            image = client.get(url)
            assert image.status_code == 200 and image["Content-Type"] == "image/png"
            PILImage.open(io.BytesIO(image.content)).verify()
            seen = " ".join([url, *(f"{k}: {v}" for k, v in image.items()), image.content.decode("latin-1")])
            assert not any(n in seen.lower() for n in needles), url
            served += 1
        body = {"idempotency_key": f"two-machines-{a['id']}", "choices": {c["key"]: "left" for c in a["criteria"]}}
        assert client.post(a["votes_url"], data=json.dumps(body), content_type="application/json").status_code == 201
    assert served >= 12  # 6 pairs of (prompt, seed), both sides

    # The images export names each image by an access-checked URL, which serves the object's pixels.
    export = staff_client.get(reverse("dashboards:export", args=[campaign.pk, "images", "csv"]))
    assert export.status_code == 200 and not any(n in export["Content-Disposition"].lower() for n in needles)
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert len(rows) == 12
    stored = {i.token: s3_server.client().get_object(Bucket=bucket, Key=i.file.name)["Body"].read() for i in images}
    for row in rows:
        assert not any(n in row["image_url"].lower() for n in needles), row["image_url"]
        image = staff_client.get(row["image_url"])
        assert image.status_code == 200 and not any(n in str(image.items()).lower() for n in needles)
        assert pixels(image.content) == pixels(stored[row["image_token"]])
    print(f"jobs per worker: {by_worker}; objects: {len(objects)}; rater images served: {served}")


# ------------------------------------------------------------------------------------------------------------
# The object store from a worker's side (in this process: the task body as a function, as tests/generation does)


@pytest.fixture
def unet_model(tmp_path, db):
    checkpoint = tiny_unet_checkpoint(tmp_path / "unet")
    settings = {"steps": 2, "guidance_scale": 3.0, "height": 16, "width": 16}
    return ImageModel.objects.create(
        name="unet-s3-secret", kind="unet_baseline", source=str(checkpoint), sampler_settings=settings
    )


@pytest.fixture
def backend_cache():
    from generation.backends import BackendCache

    return BackendCache(max_size=1)


@pytest.mark.slow
def test_an_object_store_that_cannot_be_reached_defers_the_job_and_blames_no_model(
    settings, monkeypatch, s3_server, make_prompt_set, unet_model, backend_cache
):
    """Connection refused on every write (the store is down, or not yet up): not the model's fault, so the job
    goes back to the queue with the reason, no image is done; once the store answers, the next try stores all."""
    from evalsite.runs.gpu_tasks import run_job

    bucket = "evalsite-away"
    s3_server.client().create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's own retries, shortened
    use_s3(settings, monkeypatch, f"http://127.0.0.1:{free_port()}", bucket)  # nothing listens there
    run = services.create_run(
        name="store away", prompt_set=make_prompt_set(), image_models=[unet_model], seeds=[0], dispatch=False
    ).run
    job = run.jobs.get()

    result = run_job(job.pk, task_id="store-away", cache=backend_cache)
    assert result["made"] == 0 and "the image storage cannot be reached" in result["deferred"], result
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.QUEUED and "cannot be reached" in job.error
    assert "unet-s3-secret" not in job.error  # the model is not blamed
    assert not Image.objects.filter(run=run, status="done").exists()

    use_s3(settings, monkeypatch, s3_server.url, bucket)  # the store is back
    later = timezone.now() + timedelta(seconds=settings.EVALSITE_STORAGE_FULL_RETRY_SECONDS + 1)
    assert services.sweep_lost_jobs(now=later)["resent"] == 1
    assert run_job(job.pk, task_id="store-back", cache=backend_cache)["made"] == 3
    assert s3_server.keys(bucket) == sorted(Image.objects.filter(run=run).values_list("file", flat=True))


@pytest.mark.slow
def test_an_image_another_machine_writes_at_the_same_moment_stays_one_object(
    settings, monkeypatch, s3_server, make_prompt_set, unet_model
):
    """Two machines storing the same image (a job sent again while a slow first delivery still runs): the
    other machine's PUT lands between any look at the key and this one's write. Each write goes to the image's
    one key, so the bucket holds one object whoever wrote last, and the write neither renames nor fails."""
    bucket = "evalsite-duplicate"
    s3_server.client().create_bucket(Bucket=bucket)
    use_s3(settings, monkeypatch, s3_server.url, bucket)
    run = services.create_run(
        name="twice", prompt_set=make_prompt_set(), image_models=[unet_model], seeds=[0], dispatch=False
    ).run
    image = Image.objects.filter(run=run).first()
    storage = storages["default"]  # the object behind Image.file's storage
    real_exists = storage.exists

    def exists_then_the_other_machine_writes(name):
        answer = real_exists(name)
        s3_server.client().put_object(Bucket=bucket, Key=name, Body=b"the other machine's image")
        return answer

    monkeypatch.setattr(storage, "exists", exists_then_the_other_machine_writes)
    name = services.write_image_file(image, b"this machine's image")
    assert s3_server.keys(bucket) == [name] == [services.image_upload_to(image, "image.png")]
    assert s3_server.client().get_object(Bucket=bucket, Key=name)["Body"].read() in (
        b"this machine's image",
        b"the other machine's image",
    )


def a_pair_on_screen(make_campaign, make_rater, username: str) -> tuple[Client, dict]:
    """A rater's client and the pair the API just handed out to it (images stored locally, as made)."""
    rater = make_rater(username)
    rater.instructions_seen_at = timezone.now()
    rater.save()
    campaign = make_campaign(raters=[rater], gold_rate=0.0)
    client = Client(raise_request_exception=False)
    client.force_login(rater.user)
    return client, client.get("/api/assignments/next", {"campaign": campaign.pk}).json()["assignment"]


def test_a_rater_meets_a_503_with_retry_after_not_a_500_while_the_object_store_is_away(
    settings, monkeypatch, make_campaign, make_rater
):
    """The web side reads each image from the store when a rater opens it: a store that cannot be reached is an
    outage (evalsite.outages), answered like a database restart, not a bug."""
    client, assignment = a_pair_on_screen(make_campaign, make_rater, "rater-store-away")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    use_s3(settings, monkeypatch, f"http://127.0.0.1:{free_port()}", "evalsite-nowhere")  # nothing listens there
    response = client.get(assignment["images"]["left"]["url"])
    assert response.status_code == 503 and response["Retry-After"] == "2"


def test_an_object_missing_from_the_store_is_a_clear_404_that_withdraws_the_pair_not_a_500(
    settings, monkeypatch, make_campaign, make_rater, s3_server
):
    """The store answers, but the image's object is not there (deleted, or a bucket restored without it): waiting
    will not bring it back, so the pair is withdrawn (rating.withdraw) and the rater's page moves on."""
    client, assignment = a_pair_on_screen(make_campaign, make_rater, "rater-object-gone")
    s3_server.client().create_bucket(Bucket="evalsite-emptied")
    use_s3(settings, monkeypatch, s3_server.url, "evalsite-emptied")  # the files were written elsewhere
    response = client.get(assignment["images"]["left"]["url"])
    assert response.status_code == 404 and b"cannot be shown" in response.content
    shown = Assignment.objects.select_related("image_left").get(pk=assignment["id"])
    assert shown.status == Assignment.Status.EXPIRED
    assert shown.image_left.status == Image.Status.FAILED and "missing" in shown.image_left.error


def test_a_checkpoint_missing_on_one_machine_fails_with_that_machines_name(db, make_prompt_set, backend_cache):
    """Checkpoints are not in the bucket: each GPU machine reads a model's source path on its own disk."""
    from evalsite.runs.gpu_tasks import run_job

    model = ImageModel.objects.create(name="only-on-host-a", kind="unet_baseline", source="/nowhere/unet-checkpoint")
    run = services.create_run(
        name="missing here", prompt_set=make_prompt_set(), image_models=[model], seeds=[0], dispatch=False
    ).run
    job = run.jobs.get()
    run_job(job.pk, task_id="missing", worker="gpu-host2@b", cache=backend_cache)
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.FAILED
    assert "/nowhere/unet-checkpoint" in job.error and "(on worker gpu-host2@b)" in job.error


def test_style_covariates_are_not_cached_as_broken_while_the_store_times_out(settings, monkeypatch, make_run):
    """A read timeout from S3 is an OSError, like a missing file; but the file is fine and the store slow, so
    the image is measured again later instead of keeping an error (and an imputed average) for good."""
    from botocore.config import Config
    from botocore.exceptions import ReadTimeoutError

    from evalsite.runs.style_covariates import covariates_frame

    run = make_run(n_models=1)
    tokens = list(Image.objects.filter(run=run).values_list("token", flat=True))
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        use_s3(settings, monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}", "evalsite-slow")
        options = {**settings.STORAGES["default"]["OPTIONS"]}
        options["client_config"] = Config(read_timeout=1, connect_timeout=1, retries={"max_attempts": 1})
        settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}
        with pytest.raises(ReadTimeoutError):
            covariates_frame(tokens)
    assert not any(Image.objects.filter(run=run).values_list("style_covariates", flat=True))  # nothing cached
