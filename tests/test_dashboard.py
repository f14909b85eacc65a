"""The dashboard through Flask's test client: access, escaping, CSRF, every page and action.

A real runner on a real SQLite file (and the memory store where it
matters); the browser test is ``tests/test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient

from taskrun import TaskRunner
from taskrun.schedules import every

MakeRunner = Callable[..., TaskRunner]
PREFIX = "/taskrun/dashboard"


def dashboard_app(runner: TaskRunner, **config: Any) -> Flask:
    app = Flask("dashboard-test")
    app.config.update(TASKRUN_DASHBOARD=True, SECRET_KEY="test-secret", **config)
    runner.init_app(app)
    return app


@pytest.fixture
def shared(make_runner: MakeRunner, tmp_path: Path) -> TaskRunner:
    runner = make_runner(store=f"sqlite:///{tmp_path / 'taskrun.db'}", lock_path=None)

    @runner.task(name="dash.echo")
    def echo(value: Any) -> Any:
        return value

    @runner.task(name="dash.fail")
    def fail(message: str) -> None:
        raise RuntimeError(message)

    @runner.periodic(every(hours=1), name="dash.hourly")
    def hourly() -> None: ...

    return runner


@pytest.fixture
def client(shared: TaskRunner) -> FlaskClient:
    app = dashboard_app(shared)
    shared.dashboard_auth(lambda request: request.headers.get("X-Staff") == "yes")
    test_client = app.test_client()
    test_client.environ_base["HTTP_X_STAFF"] = "yes"
    return test_client


def token(client: FlaskClient, path: str) -> str:
    page = client.get(PREFIX + path).get_data(as_text=True)
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found[1]


def settle(runner: TaskRunner) -> None:
    assert runner.store.flush(timeout=10)


def test_without_an_access_function_the_dashboard_is_closed_unless_debug(
    make_runner: MakeRunner,
) -> None:
    runner = make_runner(lock_path=None)
    app = dashboard_app(runner)
    answer = app.test_client().get(PREFIX + "/")
    assert answer.status_code == 403
    assert "@runner.dashboard_auth" in answer.get_data(as_text=True)
    assert app.test_client().post(PREFIX + "/periodic/x/pause").status_code == 403
    app.debug = True
    assert app.test_client().get(PREFIX + "/").status_code == 200


def test_a_refusing_access_function_closes_pages_and_actions(shared: TaskRunner) -> None:
    app = dashboard_app(shared)
    shared.dashboard_auth(lambda request: False)
    client = app.test_client()
    for path in ("/", "/jobs", "/periodic", "/processes"):
        assert client.get(PREFIX + path).status_code == 403
    assert client.post(PREFIX + "/periodic/dash.hourly/pause").status_code == 403


def test_the_dashboard_is_off_unless_enabled(shared: TaskRunner) -> None:
    app = Flask("plain")
    shared.init_app(app)
    assert app.test_client().get(PREFIX + "/").status_code == 404


def test_every_page_renders_and_job_data_is_escaped(
    shared: TaskRunner, client: FlaskClient
) -> None:
    echo, fail = shared.tasks["dash.echo"], shared.tasks["dash.fail"]
    ok = echo.delay("<script>alert(1)</script>")
    bad = fail.delay("<b>boom</b>")
    ok.get(timeout=5)
    with pytest.raises(RuntimeError):
        bad.get(timeout=5)
    settle(shared)
    for path in ("/", "/jobs", "/jobs?state=FAILURE", "/periodic", "/processes"):
        answer = client.get(PREFIX + path)
        assert answer.status_code == 200, path
    page = client.get(f"{PREFIX}/jobs/{ok.id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    failed = client.get(f"{PREFIX}/jobs/{bad.id}").get_data(as_text=True)
    assert "RuntimeError" in failed and "&lt;b&gt;boom&lt;/b&gt;" in failed
    assert "Retry" in failed
    listing = client.get(PREFIX + "/jobs?state=FAILURE").get_data(as_text=True)
    assert bad.id[:12] in listing and ok.id[:12] not in listing
    found = client.get(f"{PREFIX}/jobs?q={ok.id[:8]}").get_data(as_text=True)
    assert ok.id[:12] in found and bad.id[:12] not in found
    assert client.get(f"{PREFIX}/jobs/nope").status_code == 404
    fragment = client.get(PREFIX + "/", headers={"X-Taskrun-Fragment": "1"}).get_data(as_text=True)
    assert "<html" not in fragment and "Jobs per state" in fragment
    overview = client.get(PREFIX + "/").get_data(as_text=True)
    assert "<svg" in overview and "machine-wide" in overview


def test_actions_need_post_and_a_valid_token(shared: TaskRunner, client: FlaskClient) -> None:
    job = shared.tasks["dash.echo"].apply_async(args=(1,), countdown=600)
    settle(shared)
    assert client.get(f"{PREFIX}/jobs/{job.id}/cancel").status_code == 405
    assert client.post(f"{PREFIX}/jobs/{job.id}/cancel").status_code == 400
    forged = {"csrf": "forged"}
    assert client.post(f"{PREFIX}/jobs/{job.id}/cancel", data=forged).status_code == 400
    assert job.state.value == "SCHEDULED"
    answer = client.post(
        f"{PREFIX}/jobs/{job.id}/cancel", data={"csrf": token(client, f"/jobs/{job.id}")}
    )
    assert answer.status_code == 303
    assert job.state.value == "CANCELLED"


def test_a_token_works_only_in_the_browser_whose_cookie_it_signs(
    shared: TaskRunner, client: FlaskClient
) -> None:
    job = shared.tasks["dash.echo"].apply_async(args=(2,), countdown=600)
    settle(shared)
    page = client.get(f"{PREFIX}/jobs/{job.id}")
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("taskrun_dashboard_csrf=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Path={PREFIX}" in cookie
    stolen = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert stolen
    other = client.application.test_client()
    other.environ_base["HTTP_X_STAFF"] = "yes"
    other.get(f"{PREFIX}/jobs/{job.id}")  # a browser of its own, with its own cookie
    cancel = f"{PREFIX}/jobs/{job.id}/cancel"
    assert other.post(cancel, data={"csrf": stolen[1]}).status_code == 400
    assert job.state.value == "SCHEDULED"
    assert client.get(f"{PREFIX}/").headers.get("Set-Cookie") is None  # the secret is kept
    assert client.post(cancel, data={"csrf": stolen[1]}).status_code == 303
    assert job.state.value == "CANCELLED"


def test_retry_enqueues_the_same_task_with_the_same_arguments(
    shared: TaskRunner, client: FlaskClient
) -> None:
    bad = shared.tasks["dash.fail"].delay("again")
    with pytest.raises(RuntimeError):
        bad.get(timeout=5)
    settle(shared)
    answer = client.post(f"{PREFIX}/jobs/{bad.id}/retry", data={"csrf": token(client, "/periodic")})
    assert answer.status_code == 303
    new_id = re.search(r"/jobs/([-\w]+)", answer.headers["Location"])
    assert new_id and new_id[1] != bad.id
    again = shared.job(new_id[1])
    assert again is not None and again.args == ("again",) and again.name == "dash.fail"


def test_pause_resume_and_run_now_act_on_the_periodic_job(
    shared: TaskRunner, client: FlaskClient
) -> None:
    csrf = token(client, "/periodic")
    base = f"{PREFIX}/periodic/dash.hourly"
    assert client.post(f"{base}/pause", data={"csrf": csrf}).status_code == 303
    assert shared.periodic_jobs()[0].paused
    assert "PAUSED" in client.get(PREFIX + "/periodic").get_data(as_text=True)
    assert client.post(f"{base}/resume", data={"csrf": csrf}).status_code == 303
    assert not shared.periodic_jobs()[0].paused
    answer = client.post(f"{base}/trigger", data={"csrf": csrf})
    started = re.search(r"started job ([-\w]+)", unquote_plus(answer.headers["Location"]))
    assert started
    job = shared.job(started[1])
    assert job is not None and job.name == "dash.hourly"
    job.get(timeout=5)
    assert client.post(f"{PREFIX}/periodic/unknown/pause", data={"csrf": csrf}).status_code == 404


def test_job_page_shows_progress_from_meta_when_jobs_have_it(
    make_runner: MakeRunner,
) -> None:
    from taskrun.flask.dashboard.queries import _progress

    assert _progress({"current": 3, "total": 4}) == 75.0
    assert _progress({"current": 3}) is None
    assert _progress(None) is None


def test_memory_store_dashboard_says_process_scope(make_runner: MakeRunner) -> None:
    runner = make_runner(lock_path=None)
    app = dashboard_app(runner)
    app.debug = True
    page = app.test_client().get(PREFIX + "/").get_data(as_text=True)
    assert "this process only" in page
    assert time.time()  # the page rendered with no store questions failing
