"""Fixtures shared by every area's tests (helpers that are not fixtures are in tests/support.py).

Factories build real rows and real PNG files; nothing here is mocked.
"""

from __future__ import annotations

import os

import pytest

from tests.support import WorkerProcess, broker_options, drawn_png, queued_messages, switch_broker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """Password hashing is deliberately slow (PBKDF2 costs ~0.5 s per user on a shared core); tests create
    many users, and the production hasher's work factor is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_default_cache():
    """The engine's hints (wins, open pairs, sweeps) are cached by campaign id, and ids come again after a
    flush: none may leak from one test into another."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def fresh_shared_cache():
    """Rate limits and join / login throttles live in the shared cache (files under var/ here), which outlives
    a test: each test starts with none counted."""
    from django.core.cache import caches

    from evalsite.outages import CACHE_AWAY

    caches["shared"].clear()
    yield
    try:
        caches["shared"].clear()
    except CACHE_AWAY:  # a test pointed the shared cache at a Redis that is not there
        pass


@pytest.fixture
def media_root(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    return settings.MEDIA_ROOT


@pytest.fixture
def make_prompt_set(db):
    from evalsite.catalog.models import Prompt, PromptSet

    def make(name="demo prompts", texts=None, categories=None):
        texts = texts or [
            "a red circle on a blue background",
            'the word "CAT" in red letters',
            "a green square on a white background",
        ]
        prompt_set = PromptSet.objects.create(name=name)
        for i, text in enumerate(texts):
            Prompt.objects.create(
                prompt_set=prompt_set,
                position=i,
                text=text,
                category=(categories or ["Shapes"] * len(texts))[i],
                detected_needs_text='"' in text,
                rendered_text="CAT" if '"' in text else "",
            )
        return prompt_set

    return make


@pytest.fixture
def make_image_models(db):
    from evalsite.catalog.models import ImageModel

    def make(n=3, prefix="model"):
        return [
            ImageModel.objects.create(
                name=f"{prefix}-{i}", kind=ImageModel.Kind.INHOUSE, source=f"/checkpoints/{prefix}-{i}"
            )
            for i in range(n)
        ]

    return make


@pytest.fixture
def make_run(db, media_root, make_prompt_set, make_image_models):
    """A finished comparison run: every model × prompt × seed has a stored PNG."""
    from django.core.files.base import ContentFile

    from evalsite.runs.models import ComparisonRun, Image

    def make(n_models=3, seeds=(0,), prompt_texts=None, name="run"):
        prompt_set = make_prompt_set(name=f"{name} prompts", texts=prompt_texts)
        image_models = make_image_models(n_models, prefix=f"{name}-model")
        run = ComparisonRun.objects.create(
            name=name, prompt_set=prompt_set, seeds=list(seeds), status=ComparisonRun.Status.DONE
        )
        run.image_models.set(image_models)
        counter = 0
        for model in image_models:
            for prompt in prompt_set.prompts.all():
                for seed in seeds:
                    image = Image(
                        run=run,
                        model=model,
                        prompt=prompt,
                        seed=seed,
                        sampler_settings={"steps": 2},
                        status=Image.Status.DONE,
                        width=32,
                        height=32,
                    )
                    image.file.save("ignored.png", ContentFile(drawn_png(prompt.text, counter)), save=False)
                    image.save()
                    counter += 1
        return run

    return make


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user("researcher", password="pw-researcher-1", is_staff=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_rater(db, django_user_model):
    from evalsite.rating.models import Rater

    def make(username="rater"):
        user = django_user_model.objects.create_user(username, password=f"pw-{username}-1")
        return Rater.objects.create(user=user)

    return make


@pytest.fixture
def make_campaign(db, make_run):
    from evalsite.rating.models import Campaign

    def make(raters=(), **kwargs):
        run = kwargs.pop("run", None) or make_run()
        campaign = Campaign.objects.create(name=kwargs.pop("name", "campaign"), run=run, **kwargs)
        campaign.raters.set(raters)
        return campaign

    return make


@pytest.fixture
def broker(tmp_path, monkeypatch):
    """Tasks sent by this process go to a filesystem broker in tmp_path, whatever CELERY_BROKER_URL says;
    `broker.messages()` lists what waits there."""
    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")  # Celery reads this variable before its config
    restore = switch_broker("filesystem://", broker_options(tmp_path))

    class Broker:
        @staticmethod
        def messages():
            return queued_messages(tmp_path)

    yield Broker()
    restore()


@pytest.fixture
def celery_worker_process(transactional_db, media_root, tmp_path, settings):
    """A real worker process consuming both queues (a started WorkerProcess) on this process's broker folder.
    Its log is in tmp_path/worker.log."""
    worker = WorkerProcess(settings.VAR_DIR, media_root, tmp_path / "worker.log", queues="default,gpu").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core CPU: with one torch thread no OpenMP threads wait on each other (with two,
    steps ran 17-70x slower here). Use it per module: pytestmark = pytest.mark.usefixtures("one_torch_thread")."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
