"""Finding what to serve: ``"module:app"`` strings, factory calls, and the app's runner."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from serving_helpers import APPS

from taskrun import ConfigError, TaskRunner
from taskrun.loading import (
    RUNNER_ENV,
    find_runner,
    load_app,
    load_object,
    load_runner,
    split_target,
)


@pytest.fixture(autouse=True)
def apps_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``tests/apps`` importable and forget the test apps' modules afterwards."""
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.delenv(RUNNER_ENV, raising=False)
    yield
    for name in ("jobs_app", "flask_app"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("pkg.mod:app", ("pkg.mod", "app")),
        ("pkg.mod", ("pkg.mod", "app")),
        ("mod:create_app()", ("mod", "create_app()")),
    ],
)
def test_split_target_defaults_the_attribute_to_app(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


def test_load_object_imports_a_module_attribute() -> None:
    import jobs_app

    assert load_object("jobs_app:app") is jobs_app.app
    assert load_object("jobs_app") is jobs_app.app
    assert load_object("jobs_app:record.fn") is jobs_app.record.fn


def test_load_object_calls_a_factory_with_literal_arguments() -> None:
    app = load_object("flask_app:create_app('named-by-test')")

    assert app.name == "named-by-test"
    assert isinstance(app.extensions["taskrun"], TaskRunner)


def test_load_app_calls_a_factory_named_without_parentheses() -> None:
    from flask import Flask

    app = load_app("flask_app:create_app")

    assert isinstance(app, Flask) and app.name == "flask-app-test"
    assert isinstance(app.extensions["taskrun"], TaskRunner)


def test_load_app_never_calls_a_wsgi_function_or_an_app_object() -> None:
    import jobs_app

    flask_app = load_app("flask_app:create_app('x')")
    sys.modules["flask_app"].made = flask_app  # type: ignore[attr-defined]

    assert load_app("jobs_app:app") is jobs_app.app  # takes (environ, start_response)
    assert load_app("flask_app:made") is flask_app  # a Flask app is callable, not a factory


def test_load_object_refuses_a_factory_call_that_does_not_fit_its_signature() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cannot load .*: the factory create_app\(name: 'str' = 'flask-app-test'\) "
        r"-> 'Flask' cannot be called with \(1, 2\): too many positional arguments; pass",
    ):
        load_object("flask_app:create_app(1, 2)")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (":app", r"cannot load ':app': no module name"),
        ("jobs_app:missing", r"module 'jobs_app' has no attribute 'missing'"),
        ("no_such_module_here:app", r"no module named 'no_such_module_here'"),
        ("jobs_app:app[0]", r"'app\[0\]' is not a name or a call"),
        ("jobs_app:app(", r"'app\(' is not a name or a call"),
        ("flask_app:create_app(name)", r"a factory's arguments must be literals"),
    ],
)
def test_load_object_says_what_is_wrong_with_a_target(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_object(target)


def test_load_object_lets_an_import_error_inside_the_app_propagate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken_app_for_loading.py"
    broken.write_text("import no_such_dependency_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_here"):
        load_object("broken_app_for_loading:app")


def test_find_runner_takes_the_runner_from_the_flask_extension() -> None:
    runner = TaskRunner()
    app = SimpleNamespace(extensions={"taskrun": runner})

    assert find_runner(app) is runner


def test_find_runner_takes_the_runner_from_an_extension_state_object() -> None:
    runner = TaskRunner()
    app = SimpleNamespace(extensions={"taskrun": SimpleNamespace(runner=runner)})

    assert find_runner(app) is runner


def test_find_runner_falls_back_to_the_app_modules_taskrun_runner() -> None:
    import jobs_app

    assert find_runner(jobs_app.app, "jobs_app") is jobs_app.runner


def test_find_runner_falls_back_to_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jobs_app

    monkeypatch.setenv(RUNNER_ENV, "jobs_app:runner")

    assert find_runner(object()) is jobs_app.runner


def test_find_runner_returns_none_when_nothing_leads_to_a_runner() -> None:
    assert find_runner(object(), "module_that_is_not_loaded") is None


def test_a_runner_target_that_is_not_a_runner_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(RUNNER_ENV, "jobs_app:app")

    with pytest.raises(ConfigError, match=r"\$TASKRUN_RUNNER='jobs_app:app' names function"):
        find_runner(object())
    with pytest.raises(ConfigError, match=r"--runner='jobs_app:app' names function .*not a"):
        load_runner("jobs_app:app")
