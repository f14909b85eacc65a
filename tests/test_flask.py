"""The Flask extension: config keys, app context per job, background views, the status endpoint."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import STOP_TIMEOUT, assert_stopped_cleanly
from flask import Flask, current_app, g, has_app_context, has_request_context
from flask.testing import FlaskClient
from gevent.event import Event
from gevent.greenlet import Greenlet

from taskrun import ConfigError, ManualClock, TaskRunner, every
from taskrun.checks import reloader_parent_problem
from taskrun.flask import RequestData, init_app
from taskrun.stores.sqlite.store import SqliteStore

Waiter = Callable[..., Any]


def make_app(name: str = "taskrun_test", **config: Any) -> Flask:
    app = Flask(name)
    app.config.update(TESTING=True, **config)
    return app


@pytest.fixture
def fresh_runner() -> Iterator[TaskRunner]:
    """An unstarted runner (small pool) that is stopped, if started, on teardown."""
    runner = TaskRunner(concurrency=2, max_pending=4, threads=1, lock_path=None)
    yield runner
    runner.stop(timeout=STOP_TIMEOUT)
    assert_stopped_cleanly(runner)


def poll(client: FlaskClient, url: str, wait_for: Waiter) -> dict[str, Any]:
    """GET ``url`` until the job it describes is finished; return the last document."""

    def finished() -> dict[str, Any] | None:
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        document: dict[str, Any] = response.get_json()
        return document if document["state"] in ("SUCCESS", "FAILURE", "CANCELLED") else None

    result: dict[str, Any] = wait_for(finished, f"the job at {url} to finish")
    return result


# -- configuration and state ------------------------------------------------------


def test_init_app_sets_runner_options_from_taskrun_config_keys(fresh_runner: TaskRunner) -> None:
    app = make_app(TASKRUN_CONCURRENCY=7, TASKRUN_MAX_PENDING=3, TASKRUN_MAX_SCHEDULED=11)

    fresh_runner.init_app(app)

    stats = fresh_runner.stats()
    assert (stats["concurrency"], stats["max_pending"]) == (7, 3)
    assert fresh_runner.max_scheduled == 11
    assert fresh_runner.eager is False


def test_absent_config_keys_keep_the_runners_own_options() -> None:
    runner = TaskRunner(concurrency=9, max_pending=5, lock_path=None)

    runner.init_app(make_app())

    assert (runner.stats()["concurrency"], runner.stats()["max_pending"]) == (9, 5)


def test_eager_config_runs_background_views_inline_without_starting(
    fresh_runner: TaskRunner,
) -> None:
    app = make_app(TASKRUN_EAGER=True)

    @app.post("/double/<int:n>")
    @fresh_runner.background
    def double(n: int) -> int:
        return n * 2

    fresh_runner.init_app(app)
    response = app.test_client().post("/double/21")

    assert response.status_code == 202
    assert app.test_client().get(response.headers["Location"]).get_json()["result"] == 42
    assert not fresh_runner.is_running


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"TASKRUN_CONCURENCY": 5}, r"unknown taskrun config key\(s\) \['TASKRUN_CONCURENCY'\]"),
        (
            {"TASKRUN_CONCURRENCY": 0},
            r"app.config\['TASKRUN_CONCURRENCY'\] = 0 is not usable: concurrency must be",
        ),
        ({"TASKRUN_MAX_PENDING": -1}, r"'TASKRUN_MAX_PENDING'\] = -1 is not usable"),
        ({"TASKRUN_EAGER": "yes"}, r"'TASKRUN_EAGER'\] must be True or False, got 'yes'"),
        ({"TASKRUN_STATUS_URL_PREFIX": "jobs"}, r"must be a URL path below the root, got 'jobs'"),
        ({"TASKRUN_STATUS_URL_PREFIX": "/"}, r"must be a URL path below the root, got '/'"),
    ],
)
def test_bad_taskrun_config_is_refused_naming_the_key(
    fresh_runner: TaskRunner, config: dict[str, Any], message: str
) -> None:
    app = make_app(**config)

    with pytest.raises(ConfigError, match=message):
        fresh_runner.init_app(app)

    assert "taskrun" not in app.extensions


def test_taskrun_store_key_gives_the_runner_a_durable_store_without_opening_it(
    fresh_runner: TaskRunner, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.db"
    app = make_app(TASKRUN_STORE=f"sqlite:///{path}")

    fresh_runner.init_app(app)

    assert isinstance(fresh_runner.store, SqliteStore)
    assert fresh_runner.store.path == str(path)
    assert not path.exists()


def test_a_bad_taskrun_store_is_refused_naming_the_key(fresh_runner: TaskRunner) -> None:
    app = make_app(TASKRUN_STORE="redis://localhost")

    with pytest.raises(ConfigError, match=r"'TASKRUN_STORE'\] = 'redis://localhost' is not usable"):
        fresh_runner.init_app(app)


def test_init_app_keeps_the_runner_in_extensions_and_starts_nothing(
    fresh_runner: TaskRunner,
) -> None:
    app = make_app()
    greenlets_before = _live_greenlet_count()
    threads_before = threading.active_count()

    fresh_runner.init_app(app)

    assert app.extensions["taskrun"] is fresh_runner
    assert not fresh_runner.is_running
    assert _live_greenlet_count() == greenlets_before
    assert threading.active_count() == threads_before
    assert "taskrun.job_status" in app.view_functions


def test_taskrunner_given_an_app_attaches_itself() -> None:
    app = make_app()

    runner = TaskRunner(app, lock_path=None)

    assert app.extensions["taskrun"] is runner


def test_init_app_twice_with_the_same_app_does_nothing(fresh_runner: TaskRunner) -> None:
    app = make_app()
    fresh_runner.init_app(app)

    fresh_runner.init_app(app)

    assert app.extensions["taskrun"] is fresh_runner


def test_an_app_holds_one_runner(fresh_runner: TaskRunner) -> None:
    app = make_app()
    fresh_runner.init_app(app)

    with pytest.raises(ConfigError, match=r"app 'taskrun_test' already has a TaskRunner"):
        TaskRunner(lock_path=None).init_app(app)


def test_a_running_runner_refuses_another_app(fresh_runner: TaskRunner) -> None:
    fresh_runner.init_app(make_app("first"))
    fresh_runner.start()

    with pytest.raises(
        ConfigError, match=r"running jobs for app 'first'; attach it to app 'second'"
    ):
        fresh_runner.init_app(make_app("second"))


def test_a_stopped_runner_moves_to_the_next_app(fresh_runner: TaskRunner) -> None:
    @fresh_runner.task
    def app_name() -> str:
        return current_app.name

    fresh_runner.init_app(make_app("first"))
    fresh_runner.start()
    assert app_name.delay().get(timeout=5) == "first"
    fresh_runner.stop(timeout=STOP_TIMEOUT)

    fresh_runner.init_app(make_app("second"))
    fresh_runner.start()

    assert app_name.delay().get(timeout=5) == "second"


def test_a_stopped_runner_can_return_to_an_app_it_left(fresh_runner: TaskRunner) -> None:
    first, second = make_app("first"), make_app("second")
    fresh_runner.init_app(first)
    fresh_runner.init_app(second)

    fresh_runner.init_app(first)

    assert first.extensions["taskrun"] is second.extensions["taskrun"] is fresh_runner
    assert fresh_runner.job_context == first.app_context


def _live_greenlet_count() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Greenlet) and not obj.dead)


# -- the app context of jobs -------------------------------------------------------


def test_greenlet_job_started_outside_a_request_runs_in_the_app_context(
    runner: TaskRunner, app: Flask
) -> None:
    @runner.task
    def where() -> tuple[str, bool]:
        g.seen = True
        return current_app.name, has_request_context()

    assert not has_app_context()

    assert where.delay().get(timeout=5) == ("taskrun_test", False)


def test_thread_job_runs_in_the_app_context(runner: TaskRunner, app: Flask) -> None:
    @runner.task(executor="thread")
    def where() -> tuple[str, bool]:
        return current_app.name, threading.current_thread() is threading.main_thread()

    name, on_main_thread = where.delay().get(timeout=5)

    assert name == "taskrun_test"
    assert not on_main_thread


def test_delayed_job_runs_in_the_app_context(runner: TaskRunner, app: Flask) -> None:
    @runner.task
    def where() -> str:
        return current_app.name

    job = where.apply_async(countdown=0.05)

    assert job.get(timeout=5) == "taskrun_test"


def test_periodic_job_runs_in_the_app_context(wait_for: Waiter) -> None:
    clock = ManualClock()
    runner = TaskRunner(concurrency=2, clock=clock, lock_path=None)
    seen: list[str] = []

    @runner.periodic(every(seconds=10))
    def tick() -> None:
        seen.append(current_app.name)

    runner.init_app(make_app("periodic_app"))
    runner.start()
    try:
        clock.advance(10)
        wait_for(lambda: seen, "the periodic job to run")
    finally:
        runner.stop(timeout=STOP_TIMEOUT)

    assert seen[0] == "periodic_app"
    assert_stopped_cleanly(runner)


def test_job_submitted_in_a_request_gets_no_request(
    runner: TaskRunner, app: Flask, client: FlaskClient
) -> None:
    @runner.task
    def where() -> tuple[bool, bool]:
        return has_app_context(), has_request_context()

    @app.post("/submit")
    def submit() -> dict[str, str]:
        return {"id": where.delay().id}

    job_id = client.post("/submit").get_json()["id"]
    job = runner.job(job_id)

    assert job is not None
    assert job.get(timeout=5) == (True, False)


def test_app_context_is_torn_down_after_each_job(runner: TaskRunner, app: Flask) -> None:
    torn_down: list[str] = []
    app.teardown_appcontext(lambda error: torn_down.append(g.get("job", "?")))

    @runner.task
    def work(name: str) -> None:
        g.job = name

    work.delay("a").get(timeout=5)
    work.delay("b").get(timeout=5)

    assert torn_down == ["a", "b"]


# -- background views and the status endpoint --------------------------------------------


def test_background_view_answers_202_with_location_and_polls_to_success(
    runner: TaskRunner, app: Flask, client: FlaskClient, wait_for: Waiter
) -> None:
    @app.post("/reports/<int:year>")
    @runner.background
    def build_report(year: int, request_data: RequestData) -> dict[str, Any]:
        return {
            "year": year,
            "format": request_data.args.get("format"),
            "body": request_data.json,
            "method": request_data.method,
            "in_request": has_request_context(),
            "app": current_app.name,
        }

    response = client.post("/reports/2026?format=csv", json={"rows": 3})

    assert response.status_code == 202
    location = response.headers["Location"]
    body = response.get_json()
    assert location == f"/taskrun/jobs/{body['id']}" == body["status_url"]
    assert body["state"] in ("PENDING", "STARTED", "SUCCESS")
    status = poll(client, location, wait_for)
    assert status == {
        "id": body["id"],
        "state": "SUCCESS",
        "result": {
            "year": 2026,
            "format": "csv",
            "body": {"rows": 3},
            "method": "POST",
            "in_request": False,
            "app": "taskrun_test",
        },
    }


def test_background_view_gets_a_snapshot_of_the_form(
    runner: TaskRunner, app: Flask, client: FlaskClient, wait_for: Waiter
) -> None:
    @app.post("/tags")
    @runner.background
    def tags(request_data: RequestData) -> list[str]:
        return request_data.form.getlist("tag")

    response = client.post("/tags", data={"tag": ["a", "b"]})

    assert poll(client, response.headers["Location"], wait_for)["result"] == ["a", "b"]


def test_background_view_without_request_data_gets_only_url_arguments(
    runner: TaskRunner, app: Flask, client: FlaskClient, wait_for: Waiter
) -> None:
    @app.get("/hello/<name>")
    @runner.background(timeout=5)
    def hello(name: str) -> str:
        return f"hello {name}"

    response = client.get("/hello/ada")

    assert hello.__name__ == "hello"
    assert poll(client, response.headers["Location"], wait_for)["result"] == "hello ada"


def test_failed_background_view_shows_the_error_type_and_message(
    runner: TaskRunner, app: Flask, client: FlaskClient, wait_for: Waiter
) -> None:
    @app.post("/fail/<int:year>")
    @runner.background
    def fail(year: int) -> None:
        raise LookupError(f"no data for {year}")

    response = client.post("/fail/1066")
    status = poll(client, response.headers["Location"], wait_for)

    assert status["state"] == "FAILURE"
    assert status["result"] is None
    assert status["error"] == {"type": "LookupError", "message": "no data for 1066"}


def test_status_of_an_unknown_job_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/taskrun/jobs/no-such-id")

    assert response.status_code == 404
    assert response.get_json()["id"] == "no-such-id"
    assert "unknown job id 'no-such-id'" in response.get_json()["error"]


def test_status_endpoint_serves_any_job_of_the_runner(
    runner: TaskRunner, client: FlaskClient
) -> None:
    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)
    job.get(timeout=5)
    response = client.get(f"/taskrun/jobs/{job.id}")

    assert response.get_json() == {"id": job.id, "state": "SUCCESS", "result": 5}
    assert response.headers["Cache-Control"] == "no-store"


def test_result_that_is_not_json_is_shown_as_null(runner: TaskRunner, client: FlaskClient) -> None:
    @runner.task
    def opaque() -> object:
        return object()

    job = opaque.delay()
    job.get(timeout=5)

    assert client.get(f"/taskrun/jobs/{job.id}").get_json()["result"] is None


def test_status_url_prefix_is_configurable(fresh_runner: TaskRunner, wait_for: Waiter) -> None:
    app = make_app(TASKRUN_STATUS_URL_PREFIX="/api/v1/jobs/")

    @app.post("/work")
    @fresh_runner.background
    def work() -> str:
        return "done"

    fresh_runner.init_app(app)
    fresh_runner.start()
    client = app.test_client()
    response = client.post("/work")

    assert response.headers["Location"].startswith("/api/v1/jobs/")
    assert poll(client, response.headers["Location"], wait_for)["result"] == "done"
    assert client.get(f"/taskrun/jobs/{response.get_json()['id']}").status_code == 404


def test_background_view_works_with_a_durable_store(
    fresh_runner: TaskRunner, tmp_path: Path, wait_for: Waiter
) -> None:
    app = make_app(TASKRUN_STORE=f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.post("/sum/<int:a>")
    @fresh_runner.background
    def add(a: int, request_data: RequestData) -> int:
        return a + int(request_data.form["b"])

    fresh_runner.init_app(app)
    fresh_runner.start()
    client = app.test_client()
    response = client.post("/sum/2", data={"b": "3"})

    assert poll(client, response.headers["Location"], wait_for)["result"] == 5


def test_a_job_announced_by_a_202_is_visible_to_another_worker_at_once(
    fresh_runner: TaskRunner, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.db"
    app = make_app(TASKRUN_STORE=f"sqlite:///{path}")
    release = Event()

    @app.post("/wait")
    @fresh_runner.background
    def wait() -> str:
        release.wait(timeout=10)
        return "done"

    fresh_runner.init_app(app)
    fresh_runner.start()
    other_worker = TaskRunner(store=path, lock_path=None).start()
    try:
        response = app.test_client().post("/wait")
        seen_elsewhere = other_worker.job(response.get_json()["id"])
    finally:
        release.set()
        other_worker.stop(timeout=5)

    assert response.status_code == 202
    assert seen_elsewhere is not None


def test_background_view_with_a_full_backlog_answers_503(wait_for: Waiter) -> None:
    runner = TaskRunner(concurrency=1, max_pending=0, lock_path=None)
    release = Event()
    app = make_app()

    @app.post("/slow")
    @runner.background
    def slow() -> None:
        release.wait(timeout=10)

    runner.init_app(app)
    runner.start()
    client = app.test_client()
    try:
        first = client.post("/slow")
        wait_for(lambda: runner.stats()["running"] == 1, "the first job to start")
        second = client.post("/slow")
    finally:
        release.set()
        runner.stop(timeout=STOP_TIMEOUT)

    assert first.status_code == 202
    assert second.status_code == 503
    assert second.headers["Retry-After"] == "5"
    assert second.get_json() == {"error": "the server is busy; try again later"}
    assert_stopped_cleanly(runner)


def test_background_option_errors_fail_at_decoration(fresh_runner: TaskRunner) -> None:
    with pytest.raises(ConfigError, match=r"retries must be a whole number >= 0, got -1"):

        @fresh_runner.background(retries=-1)
        def view() -> None: ...


def test_request_data_survives_the_trip_through_plain_data() -> None:
    app = make_app()
    with app.test_request_context("/x?a=1&a=2", method="POST", data={"f": "v"}):
        data = RequestData.capture()

    copy = RequestData.from_plain(data.to_plain())

    assert copy == data
    assert copy.args.getlist("a") == ["1", "2"]
    assert copy.form["f"] == "v"
    assert copy.json is None


# -- the reloader check ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "argv", "is_problem"),
    [
        ({"FLASK_RUN_FROM_CLI": "true", "FLASK_DEBUG": "1"}, ["flask", "run"], True),
        ({"FLASK_RUN_FROM_CLI": "true"}, ["flask", "--debug", "run"], True),
        ({"FLASK_RUN_FROM_CLI": "true"}, ["flask", "run", "--reload"], True),
        (
            {"FLASK_RUN_FROM_CLI": "true", "FLASK_DEBUG": "1", "WERKZEUG_RUN_MAIN": "true"},
            ["flask", "run"],
            False,
        ),
        (
            {"FLASK_RUN_FROM_CLI": "true", "FLASK_DEBUG": "1"},
            ["flask", "run", "--no-reload"],
            False,
        ),
        ({"FLASK_RUN_FROM_CLI": "true", "FLASK_DEBUG": "0"}, ["flask", "run"], False),
        ({"FLASK_RUN_FROM_CLI": "true", "FLASK_DEBUG": "1"}, ["flask", "shell"], False),
        ({}, ["taskrun", "serve", "app:app"], False),
    ],
)
def test_reloader_watcher_process_is_detected(
    environ: dict[str, str], argv: list[str], is_problem: bool
) -> None:
    problem = reloader_parent_problem(environ, argv)

    assert (problem is not None) == is_problem
    if problem is not None:
        assert "WERKZEUG_RUN_MAIN" in problem


def test_reloader_watcher_is_warned_about_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.setattr(sys, "argv", ["flask", "run"])
    runner = TaskRunner(lock_path=None)

    runner.start()
    runner.stop()

    assert "Werkzeug reloader's watcher process" in caplog.text
    assert "flask run --no-reload" in caplog.text


def test_init_app_is_reachable_as_a_function(fresh_runner: TaskRunner) -> None:
    app = make_app()

    init_app(fresh_runner, app)

    assert app.extensions["taskrun"] is fresh_runner


def test_status_shows_started_while_the_view_runs(
    runner: TaskRunner, app: Flask, client: FlaskClient, wait_for: Waiter
) -> None:
    gate = Event()

    @app.post("/wait")
    @runner.background
    def wait() -> bool:
        return gate.wait(timeout=5)

    location = client.post("/wait").headers["Location"]
    wait_for(lambda: client.get(location).get_json()["state"] == "STARTED", "the view to start")
    gate.set()

    assert poll(client, location, wait_for)["result"] is True
