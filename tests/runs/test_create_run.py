"""Creating a run: every image row up front, in jobs, settings merged and checked, images reused across runs,
and tasks sent to the gpu queue only after the commit."""

from __future__ import annotations

import pytest
from django.db import transaction

from evalsite.catalog.models import ImageModel
from evalsite.runs import services
from evalsite.runs.models import ComparisonRun, GenerationJob, Image
from generation import contract


def models(*specs):
    return [
        ImageModel.objects.create(
            name=name, kind=kind, source=f"/models/{name}", sampler_settings={"steps": 10, "height": 32, "width": 32}
        )
        for name, kind in specs
    ]


def test_a_run_creates_every_image_row_up_front_grouped_in_jobs(db, make_prompt_set):
    prompt_set = make_prompt_set()
    a, b = models(("a", "inhouse"), ("b", "unet_baseline"))
    planned = services.create_run(
        name="r",
        prompt_set=prompt_set,
        image_models=[a, b],
        seeds=[0, 1, 2],
        sampler_overrides={"guidance_scale": 5.0},
        batch_size=4,
        dispatch=False,
    )
    run = planned.run
    assert planned.new_images == 18 and planned.reused_images == 0
    assert Image.objects.filter(run=run, status="pending").count() == 18
    assert sorted(run.jobs.values_list("model__name", "batch_index")) == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
        ("b", 2),
    ]
    assert sorted(job.images.count() for job in run.jobs.all()) == [1, 1, 4, 4, 4, 4]
    image = Image.objects.filter(run=run, model=a).first()
    assert image.sampler_settings == {"steps": 10, "guidance_scale": 5.0, "shift": 1.0, "height": 32, "width": 32}
    assert image.settings_hash and image.job.sampler_settings == image.sampler_settings
    assert run.status == ComparisonRun.Status.PENDING and run.progress() == {"pending": 18, "total": 18}


def test_a_second_run_reuses_the_images_it_shares_with_an_earlier_one(db, make_prompt_set):
    prompt_set = make_prompt_set()
    baseline, new = models(("baseline", "inhouse"), ("new", "inhouse"))
    first = services.create_run(
        name="first", prompt_set=prompt_set, image_models=[baseline], seeds=[0, 1], dispatch=False
    ).run
    second = services.create_run(
        name="second", prompt_set=prompt_set, image_models=[baseline, new], seeds=[0, 1], dispatch=False
    )
    assert (second.new_images, second.reused_images) == (6, 6)
    assert Image.objects.filter(model=baseline).count() == 6  # made once, shared
    assert second.run.all_images().count() == 12 and second.run.images.count() == 6
    assert set(second.run.all_images().filter(model=baseline)) == set(first.images.all())
    assert not second.run.jobs.filter(model=baseline).exists()


def test_images_with_other_settings_are_other_images(db, make_prompt_set):
    prompt_set = make_prompt_set()
    (baseline,) = models(("baseline", "inhouse"))
    services.create_run(name="first", prompt_set=prompt_set, image_models=[baseline], seeds=[0, 1], dispatch=False)
    third = services.create_run(
        name="third",
        prompt_set=prompt_set,
        image_models=[baseline],
        seeds=[0],
        sampler_overrides={"steps": 3},
        dispatch=False,
    )
    assert (third.new_images, third.reused_images) == (3, 0)


@pytest.mark.parametrize(
    "choice, message",
    [
        (dict(model="inhouse", sampler_overrides={"scheduler": "ddim"}), "does not take the setting"),
        (dict(model="unet", sampler_overrides={"shift": 3.0}), "has no timestep shift"),
        (dict(model="unet", sampler_overrides={"scheduler": "euler"}), "samples with 'ddim' or 'ddpm'"),
        (dict(model="inhouse", sampler_overrides={"steps": 0}), "steps must be at least 1"),
        (dict(model="inhouse", sampler_overrides={"height": "big"}), "must be a number"),
        (dict(model=None, sampler_overrides={}), "at least one model"),
        (dict(model="inhouse", seeds=[]), "at least one seed"),
        (dict(model="inhouse", seeds=[1, 1]), "seeds repeat"),
        (dict(model="inhouse", seeds=[-1]), "non-negative"),
        (dict(model="inhouse", prompts="of another set"), "must belong to the prompt set"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_settings_and_choices_are_checked_with_readable_errors(db, make_prompt_set, choice, message):
    prompt_set, other_set = make_prompt_set(), make_prompt_set(name="other")
    by_name = {m.name: m for m in models(("inhouse", "inhouse"), ("unet", "unet_baseline"))}
    kwargs = dict(choice)
    model = kwargs.pop("model")
    kwargs["image_models"] = [by_name[model]] if model else []
    if kwargs.get("prompts") == "of another set":
        kwargs["prompts"] = list(other_set.prompts.all())
    kwargs.setdefault("seeds", [0])
    with pytest.raises(services.RunError, match=message):
        services.create_run(name="bad", prompt_set=prompt_set, dispatch=False, **kwargs)
    assert not ComparisonRun.objects.exists() and not Image.objects.exists()


def test_a_subset_of_prompts_gives_images_for_those_prompts_only(db, make_prompt_set):
    prompt_set = make_prompt_set()
    (model,) = models(("m", "inhouse"))
    chosen = list(prompt_set.prompts.filter(position__in=[0, 2]))
    run = services.create_run(
        name="subset", prompt_set=prompt_set, image_models=[model], seeds=[5], prompts=chosen, dispatch=False
    ).run
    assert set(run.images.values_list("prompt__position", flat=True)) == {0, 2}
    assert list(run.selected_prompts()) == chosen


def test_no_job_is_sent_when_the_transaction_that_created_the_run_rolls_back(
    db, make_prompt_set, broker, django_capture_on_commit_callbacks
):
    prompt_set = make_prompt_set()
    (model,) = models(("m", "inhouse"))
    with django_capture_on_commit_callbacks(execute=False):
        with transaction.atomic():
            services.create_run(name="rolled back", prompt_set=prompt_set, image_models=[model], seeds=[0])
            transaction.set_rollback(True)
    assert not ComparisonRun.objects.exists() and broker.messages() == []


def test_jobs_are_sent_to_the_gpu_queue_after_the_commit(
    db, make_prompt_set, broker, django_capture_on_commit_callbacks
):
    prompt_set = make_prompt_set()
    (model,) = models(("m", "inhouse"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        planned = services.create_run(
            name="sent", prompt_set=prompt_set, image_models=[model], seeds=[0, 1], batch_size=4
        )
        assert broker.messages() == []  # nothing is sent before the commit
    assert len(callbacks) == 1
    callbacks[0]()
    sent = broker.messages()
    jobs = {job.task_id: job for job in GenerationJob.objects.filter(run=planned.run)}
    assert len(sent) == 2 and {m["task"] for m in sent} == {"generation.generate_batch"}
    assert {m["queue"] for m in sent} == {"gpu"}
    assert {m["id"] for m in sent} == set(jobs) and all(j.status == "queued" for j in jobs.values())
    assert sorted(m["args"] for m in sent) == sorted(f"[{job.pk}]" for job in jobs.values())


VALID_SETTING = {
    "steps": 3,
    "guidance_scale": 2.0,
    "shift": 1.0,
    "height": 16,
    "width": 16,
    "scheduler": "ddim",
    "view_size": 16,
}


@pytest.mark.parametrize("kind", contract.GENERATING_KINDS)
def test_a_run_takes_exactly_the_settings_the_contract_lists_for_the_model_kind(db, kind):
    """The web side checks settings against generation.contract, the list the backends check against too."""
    model = ImageModel(name=f"a {kind} model", kind=kind, source="/models/x", sampler_settings={})
    every_setting = {key: VALID_SETTING[key] for key in contract.SETTING_KEYS[kind]}
    assert set(services.effective_settings(model, every_setting)) == contract.SETTING_KEYS[kind]
    for foreign in set().union(*contract.SETTING_KEYS.values(), {"eta"}) - contract.SETTING_KEYS[kind]:
        with pytest.raises(services.RunError, match=f"does not take the setting.*{foreign}"):
            services.effective_settings(model, {foreign: VALID_SETTING.get(foreign, 1)})


def test_an_external_model_takes_no_settings_and_a_run_of_it_generates_nothing(db, make_prompt_set):
    """Imported images are as they were made elsewhere: a run's overrides (meant for the models it generates)
    do not apply to them, and no job is ever planned for an external model."""
    external = ImageModel.objects.create(name="outside", kind=contract.EXTERNAL, source="manifest.csv")
    assert services.effective_settings(external, {"steps": 3, "eta": 1}) == {}
    planned = services.create_run(
        name="r", prompt_set=make_prompt_set(), image_models=[external], seeds=[0], dispatch=False
    )
    assert planned.new_images == 0 and not planned.run.jobs.exists()
