"""docker/'s multi-machine shape, read the way Compose merges it (docker is not run here): compose.s3.yaml over
compose.yaml puts every process on S3, shares no folder, and runs two gpu-workers and an S3 service;
compose.gpu-host.yaml is a GPU machine with nothing but its own gpu-worker."""

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
APP_PROCESSES = {"release", "web", "worker", "gpu-worker", "beat"}


class Override(list):
    """A list marked `!override`: it replaces the base file's list instead of adding to it."""


class Loader(yaml.SafeLoader):
    pass


def _override(loader, node):
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return loader.construct_mapping(node, deep=True)  # a mapping replaced whole: nothing below merges into it


Loader.add_constructor("!override", _override)


def load(name: str) -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=Loader)


def merged(base: dict, extra: dict) -> dict:
    """Compose's merge of two files' services: mappings key by key, lists appended unless `!override`."""
    services = {name: dict(svc) for name, svc in base["services"].items()}
    for name, svc in extra["services"].items():
        out = services.setdefault(name, {})
        for key, value in svc.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            elif isinstance(value, list) and not isinstance(value, Override):
                out[key] = [*out.get(key, []), *value]
            else:
                out[key] = value
    return services


def ours(services: dict) -> dict:
    return {name: svc for name, svc in services.items() if "build" in svc}


def test_the_s3_shape_puts_every_process_on_the_bucket_and_shares_no_folder():
    services = merged(load("compose.yaml"), load("compose.s3.yaml"))
    apps = ours(services)
    assert {svc["command"][0] for svc in apps.values()} == APP_PROCESSES
    gpu_workers = [name for name, svc in apps.items() if svc["command"] == ["gpu-worker"]]
    assert len(gpu_workers) == 2
    assert len({services[name]["environment"]["WORKER_NAME"] for name in gpu_workers}) == 2
    for name, svc in apps.items():
        env = svc["environment"]
        assert env["EVALSITE_STORAGE"] == "s3" and env["AWS_STORAGE_BUCKET_NAME"], name
        named_volumes = [v for v in svc.get("volumes", []) if not v.split(":")[0].startswith(("$", ".", "/"))]
        assert named_volumes == [], (name, svc["volumes"])  # only the read-only checkpoints folder
    assert any(str(svc.get("image", "")).startswith("minio/minio") for svc in services.values())
    assert services["release"]["depends_on"]["s3-bucket"] == {"condition": "service_completed_successfully"}
    devices = [services[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for n in gpu_workers]
    assert sorted(devices) == [["0"], ["1"]]  # one GPU each


def test_the_default_shape_still_shares_one_media_volume_on_the_filesystem():
    apps = ours(load("compose.yaml")["services"])
    for name, svc in apps.items():
        assert "EVALSITE_STORAGE" not in svc["environment"], name
        assert any(v.startswith("media:") for v in svc["volumes"]), name


def test_a_gpu_host_runs_only_gpu_workers_on_the_shared_services_and_the_bucket():
    services = load("compose.gpu-host.yaml")["services"]
    assert services and all(svc["command"] == ["gpu-worker"] for svc in services.values())
    for svc in services.values():
        env = svc["environment"]
        assert env["EVALSITE_STORAGE"] == "s3"
        for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL"):
            assert "MAIN_HOST" in env[key], key
        assert all(v.startswith("${CHECKPOINTS_DIR") for v in svc["volumes"])
    example = (DOCKER / "env.example").read_text()
    for name in ("MAIN_HOST", "SERVICES_BIND", "AWS_ACCESS_KEY_ID", "AWS_S3_ENDPOINT_URL", "WORKER_NAME"):
        assert name in example, name
