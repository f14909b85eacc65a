"""The runner facade: life cycle, ordered shutdown, eager mode, statistics, options."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event

from taskrun import (
    ConfigError,
    InvalidSchedule,
    JobCancelled,
    JobLost,
    JobState,
    JobTimeout,
    ManualClock,
    NotSerializable,
    QueueFull,
    RunnerNotRunning,
    StoreError,
    TaskrunError,
    TaskRunner,
    WaitTimeout,
)

Wait = Callable[..., Any]


def test_start_and_stop_switch_is_running(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner()
    assert runner.is_running

    runner.stop(timeout=5)
    runner.stop(timeout=5)  # idempotent

    assert not runner.is_running


def test_construction_startsnullcontext() -> None:
    runner = TaskRunner()

    assert not runner.is_running
    assert runner._scheduler._greenlet is None
    assert runner._dispatcher._workers == set()


def test_context_manager_starts_and_stops_the_runner() -> None:
    runner = TaskRunner(concurrency=2)

    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    with runner as started:
        assert started is runner and runner.is_running
        job = add.delay(1, 2)

    assert not runner.is_running
    assert job.get(timeout=0) == 3


def test_delay_after_stop_raises_runner_not_running(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner()

    @runner.task(name="mail.welcome")
    def send_welcome() -> None:
        pass

    runner.stop(timeout=5)

    with pytest.raises(
        RunnerNotRunning,
        match=r"cannot run mail\.welcome: the runner was stopped and accepts no more jobs; "
        r"submit jobs before runner\.stop\(\), or call runner\.start\(\) again",
    ):
        send_welcome.delay()
    assert issubclass(RunnerNotRunning, RuntimeError)


def test_a_stopped_runner_can_be_started_again(
    make_runner: Callable[..., TaskRunner], clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)

    @runner.task(retries=1, retry_delay=0, retry_jitter=False)
    def flaky(calls: list[int]) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")
        return len(calls)

    runner.stop(timeout=5)
    runner.start()

    assert flaky.delay([]).get(timeout=5) == 2  # retries work again after a restart


def test_stop_lets_running_and_waiting_jobs_finish_within_the_timeout(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(concurrency=1)
    release = Event()

    @runner.task
    def work(n: int) -> int:
        if n == 0:
            release.wait(5)
        return n

    jobs = [work.delay(n) for n in range(3)]
    wait_for(lambda: jobs[0].state is JobState.STARTED, "the first job to start")
    gevent.spawn_later(0.02, release.set)  # released while stop() waits

    runner.stop(timeout=5)

    assert [job.get(timeout=0) for job in jobs] == [0, 1, 2]


def test_stop_kills_jobs_still_running_at_the_deadline_and_logs_what_was_left(
    make_runner: Callable[..., TaskRunner], wait_for: Wait, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(concurrency=1)
    finished: list[str] = []

    @runner.task(name="reports.build")
    def build() -> None:
        gevent.sleep(60)
        finished.append("build")

    @runner.task(name="reports.mail")
    def mail() -> None:
        finished.append("mail")

    running = build.delay()
    waiting = mail.delay()
    later = mail.apply_async(countdown=3600)
    wait_for(lambda: running.state is JobState.STARTED, "the job to start")

    with caplog.at_level(logging.WARNING, logger="taskrun.runner"):
        runner.stop(timeout=0.05)

    assert [job.state for job in (running, waiting, later)] == [JobState.CANCELLED] * 3
    assert finished == []
    message = caplog.text
    assert "1 scheduled job(s) not yet due" in message
    for job in (running, waiting, later):
        assert f"{job.id} ({job.name})" in message


def test_jobs_never_retry_once_the_runner_is_stopping(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner()
    release = Event()

    @runner.task(retries=5, retry_delay=0)
    def flaky() -> None:
        release.wait(5)
        raise ConnectionError("down")

    job = flaky.delay()
    wait_for(lambda: job.state is JobState.STARTED, "the job to start")
    gevent.spawn_later(0.02, release.set)

    runner.stop(timeout=5)

    assert (job.state, job.attempts) == (JobState.FAILURE, 1)


def test_eager_mode_runs_the_job_inline_at_delay() -> None:
    runner = TaskRunner(eager=True)

    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)

    assert job.state is JobState.SUCCESS
    assert job.get() == 5
    assert runner.job(job.id) is job


def test_eager_mode_ignores_countdown_and_runs_retries_at_once() -> None:
    runner = TaskRunner(eager=True)
    calls: list[int] = []

    @runner.task(retries=2, retry_delay=60)
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return len(calls)

    job = flaky.apply_async(countdown=3600)

    assert (job.state, job.attempts, job.result) == (JobState.SUCCESS, 3, 3)


def test_eager_mode_records_failures_and_get_reraises() -> None:
    runner = TaskRunner(eager=True)

    @runner.task
    def broken() -> None:
        raise KeyError("missing")

    job = broken.delay()

    assert job.state is JobState.FAILURE
    with pytest.raises(KeyError, match="missing"):
        job.get()


def test_eager_mode_with_a_sqlite_store_needs_no_start(tmp_path: Path) -> None:
    path = tmp_path / "taskrun.db"
    runner = TaskRunner(eager=True, store=path)

    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)

    assert (job.state, job.get()) == (JobState.SUCCESS, 5)
    assert runner.job(job.id) is job
    assert not runner.is_running
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_stats_count_jobs_by_state_and_totals(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(concurrency=1, max_pending=4)
    release = Event()

    @runner.task
    def work(fail: bool) -> None:
        release.wait(5)
        if fail:
            raise ValueError("no")

    done = [work.delay(False), work.delay(True)]
    release.set()
    for job in done:
        with pytest.raises(ValueError) if job.args[0] else nullcontext():
            job.get(timeout=5)
    release.clear()
    running = work.delay(False)
    waiting = work.delay(False)
    later = work.apply_async(args=(False,), countdown=3600)
    gevent.sleep(0.01)

    stats = runner.stats()

    assert stats["states"] == {
        "PENDING": 1,
        "SCHEDULED": 1,
        "STARTED": 1,
        "RETRY": 0,
        "SUCCESS": 1,
        "FAILURE": 1,
        "CANCELLED": 0,
    }
    assert {key: stats[key] for key in ("backlog", "running", "scheduled", "submitted")} == {
        "backlog": 1,
        "running": 1,
        "scheduled": 1,
        "submitted": 5,
    }
    assert (stats["completed"], stats["failed"]) == (2, 1)
    assert (stats["concurrency"], stats["max_pending"]) == (1, 4)
    release.set()
    later.cancel()
    running.get(timeout=5)
    waiting.get(timeout=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"concurrency": 0},
            r"concurrency must be a whole number >= 1, got 0; e\.g\. concurrency=100",
        ),
        ({"concurrency": 2.5}, r"concurrency must be a whole number >= 1, got 2\.5"),
        ({"max_pending": -1}, r"max_pending must be a whole number >= 0, got -1"),
        ({"max_scheduled": 0}, r"max_scheduled must be a whole number >= 1, got 0"),
        ({"max_results": 0}, r"max_results must be a whole number >= 1, got 0"),
        ({"result_ttl": -5}, r"result_ttl must be a number of seconds >= 0, got -5"),
        ({"threads": -2}, r"threads must be a whole number >= 1, got -2"),
        ({"threads": 0}, r"threads must be a whole number >= 1, got 0"),
    ],
)
def test_bad_runner_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskRunner(**options)


def test_configure_changes_options_before_start_only() -> None:
    runner = TaskRunner()
    runner.configure(concurrency=7, max_pending=3)

    with pytest.raises(ConfigError, match=r"unknown runner option 'workers'; known: concurrency"):
        runner.configure(workers=3)
    with runner:
        assert (runner.stats()["concurrency"], runner.stats()["max_pending"]) == (7, 3)
        with pytest.raises(
            ConfigError,
            match=r"cannot change concurrency of a running runner: call configure\(\) before "
            r"start\(\), or stop\(\) first",
        ):
            runner.configure(concurrency=1)
        with pytest.raises(ConfigError, match=r"cannot change eager of a running runner"):
            runner.eager = True


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (QueueFull, None),
        (RunnerNotRunning, RuntimeError),
        (JobTimeout, TimeoutError),
        (WaitTimeout, TimeoutError),
        (JobCancelled, None),
        (StoreError, None),
        (JobLost, None),
        (NotSerializable, TypeError),
        (InvalidSchedule, ValueError),
    ],
)
def test_every_error_is_a_taskrun_error_and_its_fitting_builtin(
    error: type[Exception], builtin: type[Exception] | None
) -> None:
    assert issubclass(error, TaskrunError)
    if builtin is not None:
        assert issubclass(error, builtin)
