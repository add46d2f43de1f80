"""analysis/ is numbers in, numbers out: no Django, Celery, model code or site, no torch outside metrics.py,
and its modules import each other in layers, without a cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "analysis"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
TORCH_MODULES = {"metrics"}  # CLIP score and FID through torchmetrics


def _banned_imports(modules: list[str], banned: set[str]) -> list[str]:
    code = (
        f"import sys\nfor name in {modules!r}:\n    __import__('analysis.' + name)\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {banned!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return [name for name in done.stdout.strip().split(",") if name]


def analysis_imports(module: str) -> set[str]:
    """The analysis modules that `module` imports at module level (not inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "analysis":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("analysis."))
    return found


def test_analysis_imports_no_django_celery_or_model_code():
    numeric = [m for m in MODULES if m not in TORCH_MODULES]
    assert {"votes", "bradley_terry", "intervals", "leaderboard", "pair_choice", "decisions", "simulate"} <= set(
        numeric
    )
    assert _banned_imports(numeric, {"django", "celery", "generation", "evalsite", "torch"}) == []
    assert _banned_imports(sorted(TORCH_MODULES), {"django", "celery", "generation", "evalsite"}) == []


def test_no_module_imports_another_inside_a_function():
    """Imports inside functions are how the old active_sampling / sequential cycle was hidden."""
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("analysis"):
                        raise AssertionError(f"{module}.{node.name} imports {inner.module} inside a function")


def test_the_import_graph_has_no_cycle():
    graph = {module: analysis_imports(module) for module in MODULES}
    assert graph["pair_choice"] and graph["decisions"]  # the parser sees the imports
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, path + (module,))
        done.add(module)

    for module in MODULES:
        visit(module, ())


def test_each_module_imports_only_modules_listed_above_it_in_the_package_map():
    """analysis/__init__.py lists the modules lowest layer first; the list is the import rule."""
    import analysis

    listed = re.findall(r"^  (\w+)\.py ", analysis.__doc__ or "", flags=re.MULTILINE)
    assert sorted(listed) == MODULES  # every module is on the map, once
    for position, module in enumerate(listed):
        above = set(listed[:position])
        assert analysis_imports(module) <= above, f"{module} imports {analysis_imports(module) - above}"
