"""Job lifecycle lines on ``taskrun.jobs``; where a runner refuses jobs, the error says why."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from gunicorn.glogging import Logger as GunicornLogger

from taskrun import RunnerNotRunning, TaskRunner
from taskrun.gunicorn import route_logs
from taskrun.lifecycle import JOB_LOGGER


def job_lines(caplog: pytest.LogCaptureFixture, job_id: str) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == JOB_LOGGER and job_id in record.getMessage()
    ]


def test_a_job_can_be_followed_by_its_id_through_the_log(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = [0]

    @runner.task(name="mail.send", retries=1, retry_delay=0.01)
    def send() -> str:
        attempts[0] += 1
        if attempts[0] == 1:
            raise ConnectionError("smtp down")
        return "sent"

    with caplog.at_level(logging.INFO, logger=JOB_LOGGER):
        job = send.delay()
        assert job.get(timeout=5) == "sent"

    lines = job_lines(caplog, job.id)
    assert [level for level, _ in lines] == [logging.INFO] * 2 + [logging.WARNING] + [
        logging.INFO
    ] * 2
    messages = [message for _, message in lines]
    assert messages[0] == f"job {job.id} (mail.send) accepted"
    assert messages[1] == f"job {job.id} (mail.send) started (attempt 1)"
    assert messages[2].startswith(f"job {job.id} (mail.send) failed on attempt 1 (ConnectionError")
    assert "; retrying in 0.01 s" in messages[2]
    assert messages[3] == f"job {job.id} (mail.send) started (attempt 2)"
    assert messages[4].startswith(f"job {job.id} (mail.send) succeeded in ")
    assert messages[4].endswith(" ms")


def test_a_delayed_job_s_acceptance_says_when_it_is_due(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @runner.task(name="report.build")
    def build() -> None: ...

    with caplog.at_level(logging.INFO, logger=JOB_LOGGER):
        job = build.apply_async(countdown=60)

    assert job_lines(caplog, job.id) == [
        (logging.INFO, f"job {job.id} (report.build) accepted, due in 60.00 s")
    ]


def test_lifecycle_lines_are_silenced_by_level_and_failures_still_show(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @runner.task(name="mail.fail")
    def fail() -> None:
        raise ValueError("bad address")

    with caplog.at_level(logging.WARNING, logger=JOB_LOGGER):
        job = fail.delay()
        with pytest.raises(ValueError):
            job.get(timeout=5)

    assert job_lines(caplog, job.id) == [
        (logging.ERROR, f"job {job.id} (mail.fail) failed after 1 attempt(s)")
    ]


def test_the_reloader_s_watcher_starts_nothing_and_refuses_jobs_with_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.setattr(sys, "argv", ["flask", "run", "--reload"])
    runner = TaskRunner(lock_path=None)

    @runner.task(name="mail.send")
    def send() -> None: ...

    runner.start()

    assert not runner.is_running
    with pytest.raises(RunnerNotRunning) as raised:
        send.delay()
    message = str(raised.value)
    assert "a job submitted here would never run" in message
    assert "Werkzeug reloader's watcher process" in message


def test_a_runner_never_started_names_every_way_to_start_it() -> None:
    runner = TaskRunner(lock_path=None)

    @runner.task(name="mail.send")
    def send() -> None: ...

    with pytest.raises(RunnerNotRunning) as raised:
        send.delay()

    message = str(raised.value)
    for fix in (
        "call runner.start() after any fork",
        "a thread of its own",
        "TASKRUN_AUTOSTART",
        "taskrun serve module:app",
        "-k taskrun.gunicorn.GeventWorker",
        "TASKRUN_EAGER=True",
    ):
        assert fix in message, fix


@pytest.fixture
def bare_taskrun_logger() -> Iterator[logging.Logger]:
    """The ``taskrun`` logger without handlers, restored afterwards (the test clears root's)."""
    ours, root = logging.getLogger("taskrun"), logging.getLogger()
    saved = (ours.handlers[:], ours.level, root.handlers[:])
    ours.handlers.clear()
    yield ours
    ours.handlers[:], root.handlers[:] = saved[0], saved[2]
    ours.setLevel(saved[1])


class _Cfg:
    """The settings gunicorn's logger reads, for a log written to stderr at INFO."""

    errorlog = "-"
    loglevel = "info"
    accesslog = None
    syslog = False
    logconfig = None
    logconfig_dict: dict[str, object] = {}
    logconfig_json = None
    capture_output = False
    disable_redirect_access_to_syslog = False
    user = group = None
    access_log_format = ""
    proc_name = "test"


def test_taskrun_lines_go_to_gunicorn_s_error_log_unless_logging_is_set_up(
    bare_taskrun_logger: logging.Logger,
) -> None:
    log = GunicornLogger(_Cfg())
    logging.getLogger().handlers.clear()  # pytest's own capture handlers, for this test only

    assert route_logs(log) is True
    assert bare_taskrun_logger.handlers == log.error_log.handlers
    assert bare_taskrun_logger.level == logging.INFO

    assert route_logs(log) is False  # the logger has handlers now: left alone
    assert bare_taskrun_logger.handlers == log.error_log.handlers
