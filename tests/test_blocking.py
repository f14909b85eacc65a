"""The blocking warning and greenlet timeouts: a job that holds the event loop is named and stopped.

The jobs here really block the loop: they call the unpatched ``time.sleep``
(``gevent.monkey.get_original``), as code taken before patching would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from conftest import WaitFor
from gevent import monkey
from gevent.event import Event

from taskrun import JobState, JobTimeout, TaskRunner, signals
from taskrun.errors import ConfigError
from taskrun.flask.dashboard.words import duration
from taskrun.wsgi import Server

blocking_sleep = monkey.get_original("time", "sleep")
MONITOR = "taskrun.monitor"


def blocked_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == MONITOR and r.levelno == logging.WARNING]


def test_a_job_blocking_the_loop_is_named_once_in_a_warning(
    make_runner: Callable[..., TaskRunner], caplog: pytest.LogCaptureFixture, wait_for: WaitFor
) -> None:
    runner = make_runner(blocking_warning=0.1)
    seen: list[tuple[Any, float]] = []

    def on_blocked(sender: Any, job: Any, seconds: float) -> None:
        seen.append((job, seconds))

    @runner.task
    def resize() -> str:
        blocking_sleep(1.0)  # many monitor checks, even on a loaded machine
        return "done"

    @runner.task
    def polite() -> None:
        gevent.sleep(0.01)

    signals.loop_blocked.connect(on_blocked, sender=runner, weak=False)
    try:
        with caplog.at_level(logging.WARNING, logger=MONITOR):
            cooperative = polite.delay()
            job = resize.delay()
            assert job.get(timeout=5) == "done"
            cooperative.get(timeout=5)
            wait_for(lambda: blocked_records(caplog), "the blocking warning")
            gevent.sleep(0.3)  # room for a (wrong) second warning
    finally:
        signals.loop_blocked.disconnect(on_blocked)

    (record,) = blocked_records(caplog)
    message = record.getMessage()
    assert message.startswith(f"job {job.id} ({resize.name}) blocked the event loop for ")
    assert message.endswith(" s; run it with executor='thread' or make it cooperative")
    assert job.blocked_for is not None and job.blocked_for > 0
    assert cooperative.blocked_for is None
    assert [blocked_job for blocked_job, _ in seen] == [job]


def test_without_the_option_no_monitor_runs(runner: TaskRunner) -> None:
    assert gevent.get_hub().periodic_monitoring_thread is None


def test_stop_ends_the_monitor_thread_it_started(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(blocking_warning=0.1)
    assert gevent.get_hub().periodic_monitoring_thread is not None
    runner.stop(timeout=1)
    assert gevent.get_hub().periodic_monitoring_thread is None


def test_serve_defaults_turn_the_warning_on_unless_the_app_chose() -> None:
    served = TaskRunner(lock_path=None)
    served.serve_defaults()
    chose_off = TaskRunner(lock_path=None, blocking_warning=None)
    chose_off.serve_defaults()
    plain = TaskRunner(lock_path=None)
    assert served._router.settings.blocking_threshold(served._serving) == 0.5
    assert chose_off._router.settings.blocking_threshold(chose_off._serving) is None
    assert plain._router.settings.blocking_threshold(plain._serving) is None


def test_a_bad_blocking_warning_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"blocking_warning must be a number of seconds > 0"):
        TaskRunner(blocking_warning=-1)


def test_a_greenlet_job_blocking_past_its_timeout_fails_with_job_timeout(
    runner: TaskRunner,
) -> None:
    @runner.task(timeout=0.1)
    def stuck() -> str:
        blocking_sleep(0.3)
        return "too late"

    job = stuck.delay()
    with pytest.raises(JobTimeout, match=r"ran past its timeout of 0\.1 s.*without yielding"):
        job.get(timeout=5)
    assert job.state is JobState.FAILURE


def test_a_greenlet_job_within_its_timeout_succeeds(runner: TaskRunner) -> None:
    @runner.task(timeout=5)
    def quick() -> str:
        blocking_sleep(0.01)
        return "in time"

    assert quick.delay().get(timeout=5) == "in time"


def test_taskrun_serve_turns_the_warning_on_at_half_a_second() -> None:
    runner = TaskRunner(lock_path=None)

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    server = Server(app, runner, bind="127.0.0.1:0", access_log=False).start()
    try:
        assert runner._monitor is not None and runner._monitor.threshold == 0.5
    finally:
        server.stop(grace=0)
    assert runner._monitor is None


def test_taskrun_blocking_warning_in_flask_config_sets_the_option() -> None:
    from flask import Flask

    app = Flask("blocking_config")
    app.config["TASKRUN_BLOCKING_WARNING"] = 0.2
    runner = TaskRunner(lock_path=None, app=app)
    assert runner._router.settings.blocking_threshold(serving=False) == 0.2
    other = Flask("blocking_config_bad")
    other.config["TASKRUN_BLOCKING_WARNING"] = "soon"
    with pytest.raises(ConfigError, match=r"TASKRUN_BLOCKING_WARNING.*'soon'"):
        TaskRunner(lock_path=None).init_app(other)


def test_every_process_of_a_shared_store_sees_how_long_a_job_blocked_the_loop(
    make_runner: Callable[..., TaskRunner], tmp_path: Path, wait_for: WaitFor
) -> None:
    from flask import Flask

    store = f"sqlite:///{tmp_path / 'taskrun.db'}"
    worker = make_runner(store=store, blocking_warning=0.1)
    reader = make_runner(store=store)  # another process's runner, reading the same file
    app = Flask("blocking-test")
    app.config.update(TASKRUN_DASHBOARD=True, SECRET_KEY="test-secret")
    reader.init_app(app)
    reader.dashboard_auth(lambda request: request.headers.get("X-Staff") == "yes")
    holding = Event()
    release = Event()

    @worker.task(name="blocking.resize")
    def resize() -> str:
        blocking_sleep(0.6)  # several monitor checks, even on a loaded machine
        holding.set()
        release.wait()  # cooperative from here: the stretch is over, the job still runs
        return "done"

    job = resize.delay()
    holding.wait(timeout=10)

    def remote_blocked() -> float | None:
        remote = reader.job(job.id)
        assert remote is not None and remote is not job
        return remote.blocked_for

    # While the job still runs, as soon as the monitor has measured the stretch.
    assert wait_for(remote_blocked, "the blocked time in the file", 10) == job.blocked_for
    assert reader.job(job.id).state is JobState.STARTED  # type: ignore[union-attr]
    release.set()
    assert job.get(timeout=5) == "done"
    worker.store.flush(timeout=5)
    finished = reader.job(job.id)
    assert finished is not None and finished.state is JobState.SUCCESS
    assert finished.blocked_for == job.blocked_for and finished.blocked_for >= 0.1
    page = app.test_client().get(f"/taskrun/dashboard/jobs/{job.id}", headers={"X-Staff": "yes"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f"<dt>Blocked the loop</dt><dd>{duration(job.blocked_for)} " in text
    quiet = reader.job(worker_job_id(worker))
    assert quiet is not None and quiet.blocked_for is None


def worker_job_id(runner: TaskRunner) -> str:
    """Run a cooperative job on ``runner`` to the end; return its id."""

    @runner.task(name="blocking.polite")
    def polite() -> None:
        gevent.sleep(0.01)

    job = polite.delay()
    job.get(timeout=5)
    runner.store.flush(timeout=5)
    return job.id
