"""Who may import whom: each Django app imports only the apps below it, the project's Celery app and settings
import no app, and neither generation/ nor analysis/ imports the site. Imports inside functions count too."""

import ast
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = Path(REPO_ROOT)
# Bottom to top. An app may import the apps of lower layers, never those of its own or a higher one.
LAYERS = [
    {"catalog"},  # what is compared and on what: models, prompt sets
    {"runs"},  # comparison runs, their jobs and images
    {"rating"},  # campaigns, assignments, votes, rater quality
    {"dashboards"},  # results read from runs and votes
    {"demo", "crowd", "preferences"},  # seed_demo, the simulated crowd, imported votes: built on the above
]
INFRASTRUCTURE = ["evalsite/celery.py", "evalsite/settings.py", "evalsite/env.py"]  # every app may use these


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def python_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if "migrations" not in p.parts]


def apps_imported(files: list[Path]) -> set[str]:
    return {m.split(".")[1] for f in files for m in imported_modules(f) if m.startswith("evalsite.") and m.count(".")}


def layer_of(app: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if app in layer)


def test_every_app_has_a_layer():
    apps = {p.parent.name for p in (ROOT / "evalsite").glob("*/apps.py")}
    assert apps <= set().union(*LAYERS), "place a new app in LAYERS: which apps may it import, which may import it?"


@pytest.mark.parametrize("app", sorted(set().union(*LAYERS)))
def test_an_app_imports_only_the_apps_below_it(app):
    folder = ROOT / "evalsite" / app
    if not folder.is_dir():
        pytest.skip(f"no app {app} in this checkout")
    imported = apps_imported(python_files(folder)) & set().union(*LAYERS) - {app}
    upward = {other for other in imported if layer_of(other) >= layer_of(app)}
    assert not upward, f"evalsite.{app} imports {sorted(upward)}, which are not below it"


def test_the_celery_app_and_the_settings_import_no_app():
    imported = apps_imported([ROOT / f for f in INFRASTRUCTURE]) & set().union(*LAYERS)
    assert not imported


@pytest.mark.parametrize("package", ["generation", "analysis"])
def test_the_model_and_analysis_packages_import_nothing_from_the_site(package):
    offenders = sorted(
        str(f.relative_to(ROOT))
        for f in python_files(ROOT / package)
        if any(m == "evalsite" or m.startswith("evalsite.") for m in imported_modules(f))
    )
    assert not offenders
