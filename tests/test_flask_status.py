"""The status endpoint and background views when things go wrong, and closing the endpoint."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import STOP_TIMEOUT, assert_stopped_cleanly
from flask import Flask, Response, abort, session
from flask.testing import FlaskClient

from taskrun import TaskRunner
from taskrun.flask import status


def make_app(runner: TaskRunner, **config: object) -> Flask:
    app = Flask("taskrun_status_test")
    app.config.update(TESTING=True, SECRET_KEY="test", **config)
    runner.init_app(app)
    return app


@pytest.fixture
def fresh_runner() -> Iterator[TaskRunner]:
    """An unstarted runner (small pool) that is stopped, if started, on teardown."""
    runner = TaskRunner(concurrency=2, max_pending=4, threads=1, lock_path=None)
    yield runner
    runner.stop(timeout=STOP_TIMEOUT)
    assert_stopped_cleanly(runner)


class Unprintable(ValueError):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def test_an_exception_whose_str_raises_still_gives_a_200_with_a_placeholder(
    runner: TaskRunner, client: FlaskClient
) -> None:
    @runner.task
    def fail() -> None:
        raise Unprintable("boom")

    job = fail.delay()
    with pytest.raises(Unprintable):
        job.get(timeout=5)
    response = client.get(f"/taskrun/jobs/{job.id}")

    assert response.status_code == 200
    assert response.get_json()["error"] == {
        "type": "Unprintable",
        "message": "<unprintable Unprintable>",
    }


@pytest.mark.parametrize("started_then_stopped", [False, True])
def test_background_view_of_a_runner_not_running_answers_503_not_500(
    fresh_runner: TaskRunner, started_then_stopped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("taskrun_status_test")
    # Not started: only when told not to start at the first delay().
    app.config["TASKRUN_AUTOSTART"] = started_then_stopped

    @app.post("/work")
    @fresh_runner.background
    def work() -> str:
        return "done"

    fresh_runner.init_app(app)
    if started_then_stopped:
        fresh_runner.start()
        fresh_runner.stop(timeout=STOP_TIMEOUT)

    response = app.test_client().post("/work")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {"error": "the server is busy; try again later"}
    assert "background view" in caplog.text and "refused a request" in caplog.text


def test_a_202_whose_job_could_not_be_committed_in_time_logs_a_warning(
    fresh_runner: TaskRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "jobs.db"
    app = make_app(fresh_runner, TASKRUN_STORE=f"sqlite:///{path}")

    @app.post("/work")
    @fresh_runner.background
    def work() -> str:
        return "done"

    fresh_runner.start()
    monkeypatch.setattr(status, "ACCEPT_FLUSH_TIMEOUT", 0.2)
    # Another process holding the write lock: the job's row cannot be committed.
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with caplog.at_level(logging.WARNING, logger="taskrun.flask.status"):
            response = app.test_client().post("/work")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert response.status_code == 202
    job_id = response.get_json()["id"]
    warnings = [r for r in caplog.records if r.name == "taskrun.flask.status"]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert job_id in message and "was not committed to the store within 0.2 s" in message
    assert "other worker processes may not see this id yet" in message


def test_a_202_committed_in_time_logs_no_warning(
    fresh_runner: TaskRunner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(fresh_runner, TASKRUN_STORE=f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.post("/work")
    @fresh_runner.background
    def work() -> str:
        return "done"

    fresh_runner.start()
    response = app.test_client().post("/work")

    assert response.status_code == 202
    assert "was not committed" not in caplog.text


# -- closing the status endpoint (the README's example) ------------------------------


def check_login() -> Response | None:
    if "user_id" not in session:
        abort(401)
    return None


def test_a_before_request_hook_added_after_init_app_closes_the_status_endpoint(
    runner: TaskRunner,
) -> None:
    app = make_app(runner)

    @app.post("/login")
    def login() -> str:
        session["user_id"] = 7
        return "ok"

    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    app.blueprints["taskrun"].before_request(check_login)
    job = add.delay(2, 3)
    job.get(timeout=5)
    client = app.test_client()

    anonymous = client.get(f"/taskrun/jobs/{job.id}")
    client.post("/login")
    logged_in = client.get(f"/taskrun/jobs/{job.id}")

    assert anonymous.status_code == 401
    assert "5" not in anonymous.get_data(as_text=True)
    assert logged_in.status_code == 200
    assert logged_in.get_json() == {"id": job.id, "state": "SUCCESS", "result": 5}


def test_status_hooks_run_in_order_and_the_first_answer_wins(runner: TaskRunner) -> None:
    app = make_app(runner)
    calls: list[str] = []
    blueprint = app.blueprints["taskrun"]

    @blueprint.before_request
    def first() -> None:
        calls.append("first")

    @blueprint.before_request
    def forbid() -> tuple[str, int]:
        calls.append("forbid")
        return "no", 403

    @blueprint.before_request
    def never() -> None:
        calls.append("never")

    response = app.test_client().get("/taskrun/jobs/any-id")

    assert (response.status_code, calls) == (403, ["first", "forbid"])
    assert app.test_client().get("/elsewhere").status_code == 404  # other routes untouched
    assert calls == ["first", "forbid"]
