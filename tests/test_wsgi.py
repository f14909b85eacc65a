"""``taskrun.wsgi.Server`` in this process: a real pywsgi server on 127.0.0.1, a real runner."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import gevent
import pytest
from gevent.event import Event
from serving_helpers import http_get

from taskrun import ConfigError, Job, JobState, TaskRunner
from taskrun.wsgi import Server, parse_bind

WAIT = 10.0  # seconds any single wait in these tests may take


class SlowApp:
    """A WSGI app whose ``/slow`` request waits for ``release``; counts the requests it saw."""

    def __init__(self) -> None:
        self.entered = Event()
        self.release = Event()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            self.entered.set()
            self.release.wait(WAIT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]


@pytest.fixture
def serving(make_runner: Callable[..., TaskRunner]) -> Iterator[tuple[Server, SlowApp, TaskRunner]]:
    """A started server (free port, no access log) with its own runner; stopped on teardown."""
    runner = make_runner()
    app = SlowApp()
    server = Server(app, runner, bind="127.0.0.1:0", grace=WAIT, access_log=False).start()
    try:
        yield server, app, runner
    finally:
        server.stop_now()
        server.stop(grace=0)


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        (":8080", ("127.0.0.1", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_bind_reads_host_and_port(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["localhost", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_parse_bind_rejects_a_missing_or_bad_port(bind: str) -> None:
    with pytest.raises(ConfigError, match=r"bind must be HOST:PORT with a port from 0 to 65535"):
        parse_bind(bind)


@pytest.mark.parametrize("grace", [-1, float("inf"), "30", True])
def test_server_rejects_a_grace_that_is_not_seconds(grace: object) -> None:
    with pytest.raises(ConfigError, match=r"grace must be a number of seconds >= 0, got"):
        Server(SlowApp(), None, bind="127.0.0.1:0", grace=grace)  # type: ignore[arg-type]


def test_server_answers_requests_once_started(serving: tuple[Server, SlowApp, TaskRunner]) -> None:
    server, _, _ = serving

    status, body, _ = http_get(server.url + "/")

    assert (status, body) == (200, "done")
    assert server.address[1] > 0


def test_stop_lets_an_in_flight_request_finish_and_asks_its_client_to_close(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, app, _ = serving
    request = gevent.spawn(http_get, server.url + "/slow")
    assert app.entered.wait(WAIT)

    stopper = gevent.spawn(server.stop)
    gevent.sleep(0.1)
    app.release.set()
    stopper.get(timeout=WAIT)

    status, body, headers = request.get(timeout=WAIT)
    assert (status, body, headers["connection"]) == (200, "done", "close")


def test_stop_refuses_new_connections(serving: tuple[Server, SlowApp, TaskRunner]) -> None:
    server, _, _ = serving
    url = server.url

    server.stop()

    with pytest.raises(ConnectionRefusedError):
        http_get(url + "/")


def test_stop_lets_running_jobs_finish_after_the_requests(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, _, runner = serving
    release = Event()

    @runner.task
    def wait_for_release() -> str:
        release.wait(WAIT)
        return "finished"

    job = wait_for_release.delay()
    stopper = gevent.spawn(server.stop)
    gevent.sleep(0.1)
    release.set()
    stopper.get(timeout=WAIT)

    assert (job.state, job.result) == (JobState.SUCCESS, "finished")
    assert not runner.is_running


def start_sleeping_job(runner: TaskRunner) -> Job[None]:
    """Enqueue a job that sleeps for a minute and let it start."""

    @runner.task
    def sleep_long() -> None:
        gevent.sleep(60)

    job = sleep_long.delay()
    gevent.sleep(0)
    return job


def test_stop_cancels_a_job_still_running_when_the_grace_period_ends(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, _, runner = serving
    job = start_sleeping_job(runner)

    server.stop(grace=0.2)

    assert job.state is JobState.CANCELLED


def test_stop_now_cuts_a_stop_in_progress_short(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, _, runner = serving
    job = start_sleeping_job(runner)
    stopper = gevent.spawn(server.stop, 60)
    gevent.sleep(0.1)

    server.stop_now()

    stopper.get(timeout=WAIT)
    assert job.state is JobState.CANCELLED


def test_an_idle_keep_alive_connection_does_not_hold_up_stop(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, _, _ = serving
    host, port = server.address
    idle = http.client.HTTPConnection(host, port, timeout=WAIT)
    try:
        idle.request("GET", "/")
        assert idle.getresponse().read() == b"done"  # the connection stays open, idle

        with gevent.Timeout(WAIT, AssertionError("stop() waited for an idle connection")):
            server.stop(grace=60)
    finally:
        idle.close()


def test_server_finds_the_runner_the_app_leads_to(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner()
    app = SlowApp()
    app.extensions = {"taskrun": runner}  # type: ignore[attr-defined]

    server = Server(app, bind="127.0.0.1:0")

    assert server.runner is runner


def test_server_rejects_a_bad_connection_limit() -> None:
    with pytest.raises(ConfigError, match=r"connections must be a whole number >= 1, got 0"):
        Server(SlowApp(), bind="127.0.0.1:0", connections=0)


def test_server_grace_takes_a_timedelta() -> None:
    server = Server(SlowApp(), None, bind="127.0.0.1:0", grace=timedelta(minutes=1))

    assert server.grace == 60.0


def test_stop_takes_a_timedelta_grace_and_refuses_a_bad_one_before_stopping(
    serving: tuple[Server, SlowApp, TaskRunner],
) -> None:
    server, _, runner = serving
    job = start_sleeping_job(runner)

    with pytest.raises(ConfigError, match=r"grace must be a number of seconds >= 0, got -1"):
        server.stop(grace=-1)
    assert runner.is_running  # the bad call stopped nothing
    server.stop(grace=timedelta(milliseconds=200))

    assert job.state is JobState.CANCELLED
    assert not runner.is_running
