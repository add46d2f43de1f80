"""The generation task: its body as a function (claim, generate, store, fail) and one real worker killed with
SIGKILL in the middle of a run."""

from __future__ import annotations

import io
import shutil
import time
from datetime import timedelta

import pytest
import torch
from django.core.exceptions import ValidationError
from django.utils import timezone
from PIL import Image as PILImage

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.gpu_tasks import run_job
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from generation.backends import BackendCache
from tests.support import WorkerProcess, tiny_unet_checkpoint, use_broker_folder, wait_for

SETTINGS = {"steps": 2, "guidance_scale": 3.0, "height": 16, "width": 16}
CACHE = BackendCache(max_size=4)  # models stay loaded across this module's tests, as in a worker


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    return tiny_unet_checkpoint(tmp_path_factory.mktemp("unet") / "ckpt")


def register(name, kind, source, **settings):
    return ImageModel.objects.create(
        name=name, kind=kind, source=str(source), sampler_settings={**SETTINGS, **settings}
    )


def new_run(prompt_set, models, seeds=(0, 1), batch_size=4, name="run"):
    return services.create_run(
        name=name, prompt_set=prompt_set, image_models=models, seeds=list(seeds), batch_size=batch_size, dispatch=False
    ).run


def run_all(run, cache=CACHE):
    return [
        run_job(job.pk, task_id=f"task-{job.pk}-{time.monotonic_ns()}", cache=cache) for job in run.jobs.order_by("id")
    ]


def test_the_task_is_declared_for_at_least_once_delivery_with_time_limits(settings):
    from evalsite.runs.gpu_tasks import generate_batch

    assert generate_batch.name == "generation.generate_batch"
    assert generate_batch.acks_late is True and generate_batch.reject_on_worker_lost is True
    assert generate_batch.time_limit == settings.CELERY_TASK_TIME_LIMIT
    assert 0 < generate_batch.soft_time_limit < generate_batch.time_limit


def test_a_job_stores_every_image_with_its_settings_versions_time_and_an_unguessable_file(
    media_root, make_prompt_set, unet_dir
):
    model = register("unet-under-test", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0, 1), batch_size=4)
    assert run.jobs.count() == 2 and Image.objects.filter(run=run, status="pending").count() == 6
    results = run_all(run)
    assert [r["made"] for r in results] == [4, 2]
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.DONE and run.finished_at is not None
    for image in Image.objects.filter(run=run):
        assert image.status == Image.Status.DONE
        assert image.sampler_settings == {**SETTINGS, "shift": 1.0}
        assert image.software_versions["torch"] == torch.__version__
        assert image.generation_seconds > 0 and (image.width, image.height) == (16, 16)
        assert image.file.name == f"images/{image.token[:2]}/{image.token}.png" and len(image.token) >= 22
        data = (media_root / image.file.name).read_bytes()
        assert PILImage.open(io.BytesIO(data)).size == (16, 16)
        assert b"unet" not in data.lower() and str(unet_dir).encode() not in data
    job = run.jobs.first()
    assert job.status == GenerationJob.Status.DONE and job.attempts == 1 and job.batch_size == 4


def test_running_a_job_again_makes_no_second_image_and_redoes_nothing(media_root, make_prompt_set, unet_dir):
    model = register("unet-again", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0,), batch_size=8)
    job = run.jobs.get()
    first = run_job(job.pk, task_id="first", cache=CACHE)
    before = {
        i.pk: (i.finished_at, i.file.name, (media_root / i.file.name).stat().st_mtime_ns)
        for i in Image.objects.filter(run=run)
    }
    assert first["made"] == 3
    assert run_job(job.pk, task_id="first", cache=CACHE) == {"job": job.pk, "skipped": True}  # redelivery
    assert run_job(job.pk, task_id="another", cache=CACHE) == {"job": job.pk, "skipped": True}  # duplicate
    # Re-opened by hand (as by a lost lease): only what is missing would be made, nothing done is touched.
    GenerationJob.objects.filter(pk=job.pk).update(status="queued")
    again = run_job(job.pk, task_id="third", cache=CACHE)
    assert again == {"job": job.pk, "made": 0}
    after = {
        i.pk: (i.finished_at, i.file.name, (media_root / i.file.name).stat().st_mtime_ns)
        for i in Image.objects.filter(run=run)
    }
    assert after == before and Image.objects.filter(model=model).count() == 3


def test_a_partly_done_job_makes_only_its_missing_images(media_root, make_prompt_set, unet_dir):
    model = register("unet-partial", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0, 1), batch_size=6)
    job = run.jobs.get()
    run_job(job.pk, task_id="complete", cache=CACHE)
    # As if the worker had been killed after storing two images: the others are pending again, without files.
    undone = list(Image.objects.filter(run=run).order_by("id")[2:])
    for image in undone:
        (media_root / image.file.name).write_bytes(b"half-written by a killed worker")
    Image.objects.filter(pk__in=[i.pk for i in undone]).update(status="pending", finished_at=None)
    GenerationJob.objects.filter(pk=job.pk).update(status="running", lease_expires_at=timezone.now() - timedelta(1))
    result = run_job(job.pk, task_id="after-kill", cache=CACHE)
    assert result["made"] == 4 and result["batch_size"] == 4
    for image in Image.objects.filter(run=run):
        assert image.status == "done"
        PILImage.open(media_root / image.file.name).verify()  # the half-written file was replaced
    assert len(list((media_root / "images").rglob("*.png"))) == 6


def test_a_duplicate_delivery_while_the_job_runs_elsewhere_is_skipped(db, make_prompt_set, unet_dir):
    model = register("unet-dup", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0,))
    job = run.jobs.get()
    claimed = services.claim_job(job.pk, "worker-a-task", "worker-a")
    assert claimed is not None and claimed.status == "running"
    assert run_job(job.pk, task_id="worker-b-task", cache=CACHE) == {"job": job.pk, "skipped": True}
    job.refresh_from_db()
    assert job.task_id == "worker-a-task" and job.attempts == 1
    assert not Image.objects.filter(run=run, status="done").exists()


def test_a_broken_model_fails_its_own_jobs_with_a_reason_and_the_others_complete(
    media_root, make_prompt_set, unet_dir, tmp_path
):
    good = register("unet-good", "unet_baseline", unet_dir)
    missing = register("unet-missing", "unet_baseline", tmp_path / "deleted-checkpoint")
    corrupt_dir = tmp_path / "corrupt"
    shutil.copytree(unet_dir, corrupt_dir)
    (corrupt_dir / "model.safetensors").write_bytes(b"\x00" * 64)
    corrupt = register("unet-corrupt", "unet_baseline", corrupt_dir)
    run = new_run(make_prompt_set(), [missing, good, corrupt], seeds=(0,), batch_size=2)
    run_all(run)
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.FAILED
    assert Image.objects.filter(run=run, model=good, status="done").count() == 3
    for model, reason in [(missing, "does not exist"), (corrupt, "not a readable safetensors file")]:
        for job in run.jobs.filter(model=model):
            assert job.status == "failed" and reason in job.error and model.name in job.error
        images = Image.objects.filter(run=run, model=model)
        assert images.count() == 3 and all(i.status == "failed" and reason in i.error for i in images)
    rows = {row["model"]: row for row in services.progress_by_model(run)}
    assert rows["unet-good"]["percent"] == 100.0 and rows["unet-missing"]["failed"] == 3
    assert "does not exist" in rows["unet-missing"]["failures"][0]["error"]


class OutOfMemoryAbove:
    """The one fake: a backend whose generate raises CUDA's OOM error for batches larger than `limit`."""

    kind = "inhouse"

    def __init__(self, limit):
        self.limit, self.calls = limit, []

    def generate(self, prompts, seeds, settings):
        self.calls.append(len(prompts))
        if len(prompts) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return [PILImage.new("RGB", (16, 16), (seed, 0, 0)) for seed in seeds]


def test_out_of_memory_retries_the_job_with_a_smaller_batch(media_root, make_prompt_set):
    fake = OutOfMemoryAbove(limit=2)
    cache = BackendCache(max_size=1, loader=lambda *args: fake)
    model = register("big-model", "inhouse", "/models/big")
    run = new_run(make_prompt_set(), [model], seeds=(10, 11, 12), batch_size=9)
    result = run_all(run, cache=cache)[0]
    assert result["made"] == 9 and result["batch_size"] == 2
    assert fake.calls[:3] == [9, 4, 2]
    for image in Image.objects.filter(run=run):
        assert PILImage.open(media_root / image.file.name).getpixel((0, 0))[0] == image.seed
    assert run.jobs.get().batch_size == 2


def test_a_models_runtime_options_set_its_batch_size_and_are_recorded_with_each_image(
    media_root, make_prompt_set, unet_dir
):
    model = register("unet-batch-of-two", "unet_baseline", unet_dir)
    model.runtime_options = {"batch_size": 2}
    model.full_clean()
    model.save()
    run = new_run(make_prompt_set(), [model], seeds=(5,), batch_size=3)
    assert [r["batch_size"] for r in run_all(run)] == [2]
    assert run.jobs.get().batch_size == 2
    for image in Image.objects.filter(run=run):
        assert image.status == Image.Status.DONE
        runtime = image.software_versions["runtime"]
        assert runtime == {"precision": "float32", "compile": "off", "fullgraph": False, "channels_last": False}


def test_runtime_options_a_kind_does_not_take_fail_its_jobs_with_the_reason(db, make_prompt_set, unet_dir):
    model = register("unet-compiled", "unet_baseline", unet_dir)
    with pytest.raises(ValidationError, match="unet_baseline models do not take the runtime option"):
        ImageModel(name="x", kind="unet_baseline", source="/x", runtime_options={"compile": "default"}).full_clean()
    with pytest.raises(ValidationError, match="unknown runtime option"):
        ImageModel(name="y", kind="diffusers", source="/x", runtime_options={"compiled": True}).full_clean()
    # written past the form (a shell, an import): the worker refuses it with the same reason, on the job
    ImageModel.objects.filter(pk=model.pk).update(runtime_options={"compile": "default"})
    run = new_run(make_prompt_set(), [ImageModel.objects.get(pk=model.pk)], seeds=(0,), batch_size=3)
    result = run_all(run)[0]
    assert "do not take the runtime option(s) compile" in result["failed"]
    job = run.jobs.get()
    assert job.status == GenerationJob.Status.FAILED and "compile" in job.error


def test_a_job_started_too_often_fails_with_a_reason(db, make_prompt_set, unet_dir, settings):
    settings.EVALSITE_JOB_MAX_ATTEMPTS = 2
    model = register("unet-flaky", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0,))
    job = run.jobs.get()
    GenerationJob.objects.filter(pk=job.pk).update(
        status="running", attempts=2, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert run_job(job.pk, task_id="third-try", cache=CACHE)["skipped"]
    job.refresh_from_db()
    assert job.status == "failed" and "gave up after 2 attempts" in job.error


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_with_sigkill_finishes_the_run_after_a_restart(
    tmp_path, settings, make_prompt_set, unet_dir
):
    """A real worker (prefork, concurrency 1) on the real broker is killed with SIGKILL (its whole process group)
    while it holds a job; a new worker and the sweeper finish the run with exactly one image per (model, prompt,
    seed) and one file per image."""
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    restore_broker = use_broker_folder(tmp_path)
    prompts = make_prompt_set(texts=[f"a shape number {i}" for i in range(4)])
    # Two registered models on one checkpoint: the worker loads it once.
    models = [register(f"unet-worker-{i}", "unet_baseline", unet_dir, steps=60) for i in range(2)]
    worker = WorkerProcess(tmp_path, media, tmp_path / "worker.log").start()
    try:
        run = services.create_run(
            name="killed", prompt_set=prompts, image_models=models, seeds=[0, 1], batch_size=2
        ).run  # 2 models x 4 prompts x 2 seeds = 16 images in 8 jobs
        done = lambda: Image.objects.filter(run=run, status="done").count()  # noqa: E731
        held = lambda: list(GenerationJob.objects.filter(run=run, status="running"))  # noqa: E731
        # The worker is frozen (SIGSTOP) before its state is read, so the job seen in progress is still in progress
        # when it is killed: a job that finished between the check and the kill made this test flaky.
        for _ in range(20):
            wait_for(
                lambda: done() >= 2 and held(),
                timeout=120,
                interval=0.05,
                what="a stored batch and a job in progress",
                worker=worker,
            )
            worker.pause()
            killed = held()
            if killed and not Image.objects.filter(job=killed[0], status="done").exists():
                break
            worker.resume()
        worker.kill()
        assert len(killed) == 1 and done() < 16
        assert not Image.objects.filter(job=killed[0], status="done").exists()

        worker = WorkerProcess(tmp_path, media, tmp_path / "worker-2.log").start()
        # Celery beat runs the sweeper every minute; here we jump to just after the killed job's lease ended.
        resent = services.sweep_lost_jobs(now=killed[0].lease_expires_at + timedelta(seconds=1))
        assert resent == {"resent": 1, "failed": 0}
        wait_for(lambda: done() == 16, timeout=120, what="all 16 images", worker=worker)
        wait_for(  # the worker marks the run done just after the commit of its last job
            lambda: (
                not GenerationJob.objects.filter(run=run).exclude(status="done").exists()
                and ComparisonRun.objects.filter(pk=run.pk, status=ComparisonRun.Status.DONE).exists()
            ),
            timeout=60,
            what="every job done and the run with them",
            worker=worker,
        )
    finally:
        worker.stop()
        restore_broker()
    images = Image.objects.filter(run=run)
    keys = list(images.values_list("model_id", "prompt_id", "seed"))
    assert len(keys) == len(set(keys)) == 16
    files = sorted(p.relative_to(media).as_posix() for p in (media / "images").rglob("*.png"))
    assert files == sorted(images.values_list("file", flat=True))  # one file per image, nothing left over
    for image in images:
        PILImage.open(media / image.file.name).verify()
    attempts = dict(GenerationJob.objects.filter(run=run).values_list("id", "attempts"))
    assert attempts.pop(killed[0].pk) == 2 and set(attempts.values()) == {1}
    run.refresh_from_db()
    assert run.status == ComparisonRun.Status.DONE


def test_a_full_image_disk_defers_the_job_with_its_reason_and_serves_no_half_written_file(
    media_root, make_prompt_set, unet_dir, monkeypatch, settings
):
    """ENOSPC while the third image of a batch is written: no image of the batch is marked done (the rows are
    marked only after every file is written), so the files already written and the cut-off one are never
    served; the job goes back to the queue with the reason, and the next try, once the disk has room again,
    replaces the files and finishes."""
    model = register("unet-disk-full", "unet_baseline", unet_dir)
    run = new_run(make_prompt_set(), [model], seeds=(0,), batch_size=8)
    job = run.jobs.get()
    written = []
    real_write = services.write_image_file

    def disk_fills_up(image, png):
        if len(written) == 2:
            path = media_root / services.image_upload_to(image, "image.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png[: len(png) // 2])  # what a write cut off by ENOSPC leaves behind
            raise OSError(28, "No space left on device")
        written.append(image.pk)
        return real_write(image, png)

    monkeypatch.setattr(services, "write_image_file", disk_fills_up)
    result = run_job(job.pk, task_id="disk-full", cache=CACHE)

    assert result["made"] == 0 and "the image storage is full (No space left on device)" in result["deferred"]
    job.refresh_from_db()
    assert job.status == GenerationJob.Status.QUEUED and "storage is full" in job.error
    assert job.lease_expires_at > timezone.now() + timedelta(seconds=settings.EVALSITE_STORAGE_FULL_RETRY_SECONDS - 5)
    assert not Image.objects.filter(run=run, status="done").exists()  # nothing on disk is served
    assert len(list((media_root / "images").rglob("*.png"))) == 3  # two whole files and one cut off

    monkeypatch.undo()
    assert services.sweep_lost_jobs(now=timezone.now() + timedelta(seconds=1))["resent"] == 0  # not yet
    later = timezone.now() + timedelta(seconds=settings.EVALSITE_STORAGE_FULL_RETRY_SECONDS + 1)
    assert services.sweep_lost_jobs(now=later)["resent"] == 1
    again = run_job(job.pk, task_id="room-again", cache=CACHE)
    assert again["made"] == 3
    for image in Image.objects.filter(run=run):
        assert image.status == "done"
        PILImage.open(media_root / image.file.name).verify()  # the cut-off file was replaced


def test_a_batch_stored_by_the_worker_threads_is_the_batch_stored_one_image_after_the_other(
    media_root, make_prompt_set
):
    """store_batch with the worker's thread pool (PNG encodings and file writes side by side) and without it:
    the same files, byte for byte, and the same rows; an error in one thread surfaces once every write ended."""
    from concurrent.futures import ThreadPoolExecutor

    from evalsite.runs.gpu_tasks import store_batch

    model = register("threads-or-not", "inhouse", "/never/loaded")
    prompts = make_prompt_set(texts=[f"prompt {i}" for i in range(6)])
    stored = {}
    with ThreadPoolExecutor(3) as pool:
        for seed, way, used in ((0, "serial", None), (1, "threads", pool)):  # another seed: nothing reused
            run = new_run(prompts, [model], seeds=(seed,), batch_size=6, name=way)
            job = services.claim_job(run.jobs.get().pk, task_id=way, worker="test")
            todo = services.images_to_make(job)
            images = [PILImage.new("RGB", (24, 16), (i * 40, 255 - i * 40, 7)) for i in range(len(todo))]
            assert store_batch(job, todo, range(len(todo)), images, 0.5, {"torch": "x"}, used) == 6
            rows = Image.objects.filter(run=run).order_by("prompt__position")
            stored[way] = [((media_root / r.file.name).read_bytes(), r.status, r.width, r.height) for r in rows]
        assert stored["serial"] == stored["threads"]
        assert [s[1:] for s in stored["threads"]] == [("done", 24, 16)] * 6

        def fails_on_two(x):
            if x == 2:
                raise OSError(28, "No space left on device")
            time.sleep(0.05)
            return x

        ended = []
        with pytest.raises(OSError, match="No space"):
            services.map_settled(pool, lambda x: ended.append(fails_on_two(x)), range(6))
        assert sorted(ended) == [0, 1, 3, 4, 5]  # every other write had ended when the error came out
