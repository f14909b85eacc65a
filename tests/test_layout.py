"""The package's shape: imports flow one way, and the core imports without the extras.

Every ``taskrun`` module sits on a floor (:data:`FLOORS`); a module imports
only from its own floor or below, lazy imports inside functions included
(imports under ``if TYPE_CHECKING:`` are for annotations only and do not
count).  A new module must be given a floor here: that is the moment to
decide where it belongs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "taskrun"

#: Floors from the ground up; a module may import from its floor and those below.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "clock", "validation", "supervision", "signals"),
    ("options", "schedules", "jobs", "limits", "meta", "current", "lifecycle"),
    ("stores",),
    ("executors", "admission", "dispatcher", "monitor"),
    ("scheduler", "periodic"),
    ("tasks", "registry", "settings", "routing", "checks", "machine"),
    ("hub_inbox", "hub_thread", "threaded", "modes", "startup", "engines"),
    ("runner",),
    ("loading", "logs", "metrics", "multiproc"),
    ("wsgi", "flask", "gunicorn", "cli", "__main__", "__init__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    """Return the floor of ``taskrun.<first part>...``; ``taskrun`` itself is the top floor."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    for floor, names in enumerate(FLOORS):
        if first in names:
            return floor
    raise AssertionError(
        f"module {module!r} has no floor in tests/test_layout.py FLOORS; add its first "
        "name to the floor it belongs on (it may import only from that floor and below)"
    )


def runtime_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line, imported taskrun module) for every import not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "taskrun" or node.module.startswith("taskrun."):
                for alias in node.names:
                    # ``from taskrun.stores.sqlite import db`` imports a module.
                    candidate = f"{node.module}.{alias.name}"
                    target = candidate if _is_module(candidate) else node.module
                    yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("taskrun."):
                    yield node.lineno, alias.name


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


MODULES = sorted(PACKAGE.rglob("*.py"))

#: The one way up: ``runner.init_app(app)`` and ``@runner.background`` are the Flask
#: extension's entry points on the runner (the public API has them there); they import
#: ``taskrun.flask`` only when called, and ``taskrun.flask`` imports the runner for
#: annotations only, so neither needs the other to import.
ALLOWED_UPWARD = {
    ("taskrun.runner", "taskrun.flask"),
    ("taskrun.runner", "taskrun.flask.background"),
}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_a_module_imports_only_from_its_floor_and_below(path: Path) -> None:
    module = module_name(path)
    own = floor_of(module)
    upward = [
        f"line {line}: {target} (floor {floor_of(target)})"
        for line, target in runtime_imports(path)
        if target != "taskrun" and floor_of(target) > own and (module, target) not in ALLOWED_UPWARD
    ]
    assert not upward, f"{module} (floor {own}) imports from above: {upward}"


def test_the_package_has_no_import_cycle() -> None:
    graph = {
        module_name(path): {t for _, t in runtime_imports(path) if t != "taskrun"}
        for path in MODULES
    }
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycle = trail[trail.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            if not target.startswith(module + "."):  # a package importing its own modules
                visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_core_imports_and_runs_a_job_without_any_extra() -> None:
    # A fresh interpreter in which the extras cannot be imported at all.
    code = """
import sys

class NoExtras:
    BLOCKED = ("flask", "werkzeug", "gunicorn", "prometheus_client", "celery", "kombu",
               "redis", "blinker", "click", "jinja2")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is an extra: the core must not need it")
        return None

sys.meta_path.insert(0, NoExtras())
from gevent import monkey
monkey.patch_all()
import taskrun

runner = taskrun.TaskRunner(lock_path=None)

@runner.task
def add(a, b):
    return a + b

with runner:
    print(add.delay(2, 3).get(timeout=5))
"""
    if "blinker" in code and _core_needs("blinker"):
        code = code.replace('"blinker", ', "")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def _core_needs(distribution: str) -> bool:
    """Whether the core dependencies in pyproject.toml name ``distribution``."""
    text = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    core = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return f'"{distribution}' in core


#: The extras each may be imported only by these packages (lazy imports included).
EXTRA_OWNERS = {
    "celery": "taskrun.engines.celery",
    "kombu": "taskrun.engines.celery",
    "redis": "taskrun.engines.celery",
}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_only_the_celery_engine_imports_celery_kombu_or_redis(path: Path) -> None:
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = [
        (node.lineno, alias.name.split(".")[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ] + [
        (node.lineno, node.module.split(".")[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    ]
    wrong = [
        f"line {line}: {name}"
        for line, name in imported
        if name in EXTRA_OWNERS
        and not (module == EXTRA_OWNERS[name] or module.startswith(EXTRA_OWNERS[name] + "."))
    ]
    assert not wrong, f"{module} imports an extra only {set(EXTRA_OWNERS.values())} may: {wrong}"
