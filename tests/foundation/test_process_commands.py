"""docker/ runs exactly the process commands that bin/up documents and the tests exercise."""

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_compose_service_of_ours_runs_a_bin_process_command():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["bin/process"]' in dockerfile
    ours = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert {svc["command"][0] for svc in ours.values()} == {"release", "web", "worker", "gpu-worker", "beat"}
    bin_up = (ROOT / "bin" / "up").read_text()
    for process in ("gpu-worker", "worker", "beat", "web", "crowd"):
        assert f"bin/process {process}" in bin_up
    assert 'EVALSITE_DEMO_CROWD:-1}" != "0"' in bin_up  # the demo crowd is on unless switched off


def test_bin_process_rejects_an_unknown_process_with_usage():
    result = subprocess.run([str(ROOT / "bin" / "process"), "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: bin/process web|worker|gpu-worker|beat|release|crowd" in result.stderr
