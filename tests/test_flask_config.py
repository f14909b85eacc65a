"""The Flask extension's config: a key per runner option, all or nothing; start at first use."""

from __future__ import annotations

import inspect
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import STOP_TIMEOUT, assert_stopped_cleanly
from flask import Flask

from taskrun import ConfigError, JobState, RunnerNotRunning, TaskRunner
from taskrun.errors import StoreError
from taskrun.flask.extension import RUNNER_OPTIONS
from taskrun.settings import CONFIGURABLE
from taskrun.stores.sqlite.store import SqliteStore


def make_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("config_test", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, **config)
    return app


@pytest.fixture
def runner() -> Iterator[TaskRunner]:
    """An unstarted runner, stopped (if started) on teardown."""
    runner = TaskRunner(concurrency=2, max_pending=4, threads=1, lock_path=None)
    yield runner
    runner.stop(timeout=STOP_TIMEOUT)
    assert_stopped_cleanly(runner)


def test_every_runner_option_has_a_config_key_and_is_configurable() -> None:
    options = set(inspect.signature(TaskRunner).parameters) - {"app", "clock"}

    assert set(RUNNER_OPTIONS.values()) == options
    assert set(CONFIGURABLE) == options
    assert all(key == "TASKRUN_" + option.upper() for key, option in RUNNER_OPTIONS.items())


def test_every_config_key_reaches_the_runner(runner: TaskRunner, tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        TASKRUN_RESULT_TTL=60,
        TASKRUN_MAX_RESULTS=10,
        TASKRUN_THREADS=3,
        TASKRUN_NAME="shop",
        TASKRUN_LOCK_PATH=None,
        TASKRUN_MAX_SCHEDULED=9,
    )

    runner.init_app(app)

    settings = runner._router.settings
    assert (settings.result_ttl, settings.max_results, settings.threads) == (60, 10, 3)
    assert runner._dispatcher.threads == 3
    assert runner.name == "shop" and runner._lock_path is None
    assert runner.max_scheduled == 9
    assert runner.store._ttl == 60 and runner.store._max == 10  # type: ignore[attr-defined]


def test_one_bad_key_applies_none(runner: TaskRunner, tmp_path: Path) -> None:
    app = make_app(tmp_path, TASKRUN_CONCURRENCY=9, TASKRUN_MAX_RESULTS=0)

    with pytest.raises(ConfigError, match=r"'TASKRUN_MAX_RESULTS'\] = 0 is not usable"):
        runner.init_app(app)

    assert runner._dispatcher.concurrency == 2


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"TASKRUN": {"concurrency": 5}}, r"one flat key per option, e.g\. .*TASKRUN_CONCURRENCY"),
        ({"taskrun_concurrency": 5}, r"unknown taskrun config key\(s\) \['taskrun_concurrency'\]"),
        ({"TASKRUN_AUTOSTART": "no"}, r"'TASKRUN_AUTOSTART'\] must be True or False, got 'no'"),
        ({"TASKRUN_NAME": 7}, r"'TASKRUN_NAME'\] = 7 is not usable: name must be a string"),
    ],
)
def test_config_in_a_shape_that_would_be_ignored_is_an_error(
    runner: TaskRunner, tmp_path: Path, config: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        runner.init_app(make_app(tmp_path, **config))


def test_a_relative_sqlite_store_lives_in_the_instance_folder(
    runner: TaskRunner, tmp_path: Path
) -> None:
    app = make_app(tmp_path, TASKRUN_STORE="sqlite:///jobs/taskrun.db")
    os.makedirs(tmp_path / "instance" / "jobs")

    runner.init_app(app)

    assert isinstance(runner.store, SqliteStore)
    assert runner.store.path == str(tmp_path / "instance" / "jobs" / "taskrun.db")


def test_the_instance_folder_is_made_for_a_relative_store(
    runner: TaskRunner, tmp_path: Path
) -> None:
    app = make_app(tmp_path, TASKRUN_STORE="taskrun.db")

    runner.init_app(app)

    assert (tmp_path / "instance").is_dir()
    assert runner.store.path == str(tmp_path / "instance" / "taskrun.db")  # type: ignore[attr-defined]


def test_the_first_delay_starts_the_runner(runner: TaskRunner, tmp_path: Path) -> None:
    @runner.task
    def double(x: int) -> int:
        return 2 * x

    runner.init_app(make_app(tmp_path))
    assert not runner.is_running

    assert double.delay(21).get(timeout=5) == 42
    assert runner.is_running and runner.runs_jobs


def test_without_autostart_delay_names_every_way_to_start(
    runner: TaskRunner, tmp_path: Path
) -> None:
    @runner.task
    def noop() -> None: ...

    runner.init_app(make_app(tmp_path, TASKRUN_AUTOSTART=False))

    with pytest.raises(RunnerNotRunning) as raised:
        noop.delay()
    message = str(raised.value)
    for fix in ("runner.start()", "taskrun serve", "taskrun.gunicorn.GeventWorker"):
        assert fix in message
    assert "TASKRUN_EAGER=True" in message and "a thread of its own" in message


def test_a_flask_command_with_the_memory_store_is_told_a_shared_store_is_needed(
    runner: TaskRunner, tmp_path: Path
) -> None:
    @runner.task
    def noop() -> None: ...

    app = make_app(tmp_path)
    runner.init_app(app)

    @app.cli.command("enqueue")
    def enqueue() -> None:
        noop.delay()

    result = app.test_cli_runner().invoke(args=["enqueue"])

    assert isinstance(result.exception, ConfigError), result.output
    assert "needs the store they share" in str(result.exception)
    assert not runner.is_running


def test_a_flask_command_submits_into_the_shared_store_and_runs_nothing(
    runner: TaskRunner, tmp_path: Path
) -> None:
    @runner.task(name="reports.build")
    def build(year: int) -> int:
        return year

    app = make_app(tmp_path, TASKRUN_STORE="taskrun.db")
    runner.init_app(app)
    seen: dict[str, Any] = {}

    @app.cli.command("enqueue")
    def enqueue() -> None:
        job = build.delay(2026)
        seen["job"] = job
        seen["runs_jobs"] = runner.runs_jobs
        seen["looked_up"] = runner.job(job.id)
        click.echo(job.id)

    result = app.test_cli_runner().invoke(args=["enqueue"])

    assert result.exit_code == 0, result.output
    assert seen["runs_jobs"] is False
    assert seen["looked_up"].state is JobState.PENDING
    with sqlite3.connect(tmp_path / "instance" / "taskrun.db") as conn:
        rows = conn.execute("SELECT id, owner FROM jobs").fetchall()
        processes = conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0]
    assert rows == [(seen["job"].id, None)]  # unowned: a serving process takes it
    assert processes == 0  # the submitter registered no process that would own jobs


def test_a_runner_that_cannot_start_raises_its_error_at_the_first_delay(
    runner: TaskRunner, tmp_path: Path
) -> None:
    @runner.task
    def noop() -> None: ...

    (tmp_path / "instance").mkdir()
    (tmp_path / "instance" / "taskrun.db").write_bytes(b"not a database" * 100)
    os.chmod(tmp_path / "instance" / "taskrun.db", 0o600)
    runner.init_app(make_app(tmp_path, TASKRUN_STORE="taskrun.db"))

    for _ in range(2):  # not started, so the next delay() tries again
        with pytest.raises(StoreError, match=r"taskrun\.db"):
            noop.delay()
        assert not runner.is_running


def test_submit_only_needs_a_shared_store() -> None:
    runner = TaskRunner(lock_path=None)

    with pytest.raises(ConfigError, match=r"start\(run_jobs=False\) submits jobs for the serving"):
        runner.start(run_jobs=False)

    assert not runner.is_running


def test_a_job_submitted_by_a_submit_only_runner_can_be_cancelled_there(tmp_path: Path) -> None:
    runner = TaskRunner(lock_path=None, store=tmp_path / "taskrun.db")

    @runner.task(name="reports.build")
    def build() -> None: ...

    runner.start(run_jobs=False)
    try:
        job = build.apply_async(countdown=3600)
        assert job.state is JobState.SCHEDULED

        assert job.cancel() is True  # unowned: cancelled in the file at once

        found = runner.job(job.id)
        assert found is not None and found.state is JobState.CANCELLED
        assert not runner.runs_jobs
    finally:
        runner.stop()
    assert not runner.is_running


def test_a_submit_only_runner_keeps_a_unique_key_unique(tmp_path: Path) -> None:
    runner = TaskRunner(lock_path=None, store=tmp_path / "taskrun.db")

    @runner.task(name="reports.build")
    def build(year: int) -> None: ...

    runner.start(run_jobs=False)
    try:
        first = build.apply_async(args=(2026,), unique_key="year:2026")
        again = build.apply_async(args=(2026,), unique_key="year:2026")
        other = build.apply_async(args=(2027,), unique_key="year:2027")
    finally:
        runner.stop()

    assert again.id == first.id
    assert other.id != first.id
