"""The timer heap: delayed jobs and retries run when due, driven by a manual clock."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import gevent
import pytest
from gevent.event import Event
from serving_helpers import wait_for

from taskrun import JobState, ManualClock, QueueFull, TaskRunner

Wait = Callable[..., Any]


def test_countdown_job_runs_only_after_the_clock_reaches_it(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    ran: list[str] = []

    @manual_runner.task
    def later() -> str:
        ran.append("later")
        return "done"

    job = later.apply_async(countdown=60)
    assert manual_runner.join(timeout=5)
    clock.advance(59.9)
    assert manual_runner.join(timeout=5)

    assert (job.state, ran) == (JobState.SCHEDULED, [])
    clock.advance(0.1)
    assert job.get(timeout=5) == "done"
    assert ran == ["later"]


def test_eta_job_runs_when_the_clock_passes_it(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    @manual_runner.task
    def later() -> int:
        return 1

    job = later.apply_async(eta=clock.now() + timedelta(hours=2))
    clock.advance(timedelta(hours=1))
    assert manual_runner.join(timeout=5)

    assert job.state is JobState.SCHEDULED
    clock.advance(timedelta(hours=2))
    assert job.get(timeout=5) == 1


def test_delayed_jobs_run_in_due_order(manual_runner: TaskRunner, clock: ManualClock) -> None:
    order: list[int] = []

    @manual_runner.task
    def record(n: int) -> None:
        order.append(n)

    jobs = [
        record.apply_async(args=(n,), countdown=countdown)
        for n, countdown in [(3, 30), (1, 10), (4, 40), (2, 20)]
    ]
    for _ in range(4):
        clock.advance(10)
        assert manual_runner.join(timeout=5)

    assert [job.get(timeout=5) for job in jobs] == [None] * 4
    assert order == [1, 2, 3, 4]


def test_an_earlier_entry_wakes_the_sleeping_timer(runner: TaskRunner) -> None:
    @runner.task
    def work(name: str) -> str:
        return name

    far = work.apply_async(args=("far",), countdown=10)
    gevent.sleep(0.01)  # the timer now sleeps until the far job is due
    near = work.apply_async(args=("near",), countdown=0.05)

    assert near.get(timeout=2) == "near"
    assert far.state is JobState.SCHEDULED
    far.cancel()


def test_a_cancelled_scheduled_job_never_runs(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    ran: list[str] = []

    @manual_runner.task
    def later() -> None:
        ran.append("later")

    job = later.apply_async(countdown=60)
    assert job.cancel() is True
    clock.advance(120)
    assert manual_runner.join(timeout=5)

    assert (job.state, ran) == (JobState.CANCELLED, [])


def test_a_due_job_waits_while_the_pool_is_full_without_blocking_the_timer(
    make_runner: Callable[..., TaskRunner], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(clock=clock, concurrency=1, max_pending=0)
    release = Event()

    @runner.task
    def block() -> None:
        release.wait(5)

    @runner.task
    def later() -> str:
        return "ran"

    blocker = block.delay()
    delayed = later.apply_async(countdown=10)
    afterwards = later.apply_async(countdown=20)
    with caplog.at_level(logging.WARNING, logger="taskrun.dispatcher"):
        clock.advance(10)
        wait_for(lambda: runner.stats()["overdue"] == 1, 5, "the first due job to wait")
        clock.advance(10)  # the timer still fires while the first due job waits
        wait_for(lambda: runner.stats()["overdue"] == 2, 5, "the second due job to wait")

    assert (delayed.state, afterwards.state) == (JobState.PENDING, JobState.PENDING)
    assert f"job {delayed.id}" in caplog.text and "pool and backlog are full" in caplog.text
    release.set()
    blocker.get(timeout=5)
    # No clock advance and no polling: the freed worker takes the waiting jobs.
    assert delayed.get(timeout=5) == "ran"
    assert afterwards.get(timeout=5) == "ran"


def test_due_jobs_on_a_full_pool_warn_once_and_run_in_due_order_once_it_frees(
    make_runner: Callable[..., TaskRunner], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(clock=clock, concurrency=1, max_pending=2)
    release = Event()
    order: list[int] = []

    @runner.task
    def block() -> None:
        release.wait(5)

    @runner.task
    def record(n: int) -> None:
        order.append(n)

    blocker = block.delay()
    queued = [record.delay(-2), record.delay(-1)]  # the backlog is full
    countdowns = list(range(1, 201))
    random.Random(7).shuffle(countdowns)
    delayed = [record.apply_async(args=(n,), countdown=n) for n in countdowns]
    with caplog.at_level(logging.INFO, logger="taskrun.dispatcher"):
        clock.advance(100)
        wait_for(lambda: runner.stats()["overdue"] == 100, 5, "100 due jobs to wait")
        clock.advance(100)
        wait_for(lambda: runner.stats()["overdue"] == 200, 5, "200 due jobs to wait")
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1, [r.getMessage() for r in warned]
        assert all(job.state is JobState.PENDING for job in delayed)
        release.set()
        for job in [blocker, *queued, *delayed]:
            job.get(timeout=5)

    assert order == [-2, -1, *range(1, 201)]
    drained = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(drained) == 1 and "the 200 due job(s)" in drained[0]
    assert runner.stats()["scheduled"] == 0


def test_stop_reports_the_time_it_took_not_its_budget(
    make_runner: Callable[..., TaskRunner], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(clock=clock)

    @runner.task
    def later() -> None:
        pass

    later.apply_async(countdown=60)
    with caplog.at_level(logging.INFO, logger="taskrun.runner"):
        runner.stop(timeout=30)  # nothing runs: it returns at once

    assert "after 30" not in caplog.text
    assert re.search(r"unfinished after 0\.\d s", caplog.text)
    assert re.search(r"taskrun stopped in 0\.\d s", caplog.text)


def test_stop_reports_due_jobs_still_waiting_for_a_worker_as_due(
    make_runner: Callable[..., TaskRunner], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_runner(clock=clock, concurrency=1, max_pending=0)

    @runner.task
    def block() -> None:
        gevent.sleep(60)

    @runner.task
    def later() -> None:
        pass

    blocker = block.delay()
    due = later.apply_async(countdown=10)
    not_due = later.apply_async(countdown=60)
    clock.advance(10)
    wait_for(lambda: runner.stats()["overdue"] == 1, 5, "the due job to wait")
    with caplog.at_level(logging.WARNING, logger="taskrun.runner"):
        runner.stop(timeout=0.05)

    assert [job.state for job in (blocker, due, not_due)] == [JobState.CANCELLED] * 3
    assert re.search(
        r"1 job\(s\) unfinished after \d+\.\d s, 1 due job\(s\) still waiting for a free "
        r"worker and 1 scheduled job\(s\) not yet due; 0 handed back to the store, 3 cancelled",
        caplog.text,
    )


def test_retries_wait_with_backoff_then_succeed(
    manual_runner: TaskRunner, clock: ManualClock, wait_for: Wait
) -> None:
    attempts: list[int] = []

    @manual_runner.task(retries=3, retry_delay=1.0, retry_backoff=2.0, retry_jitter=False)
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    job = flaky.delay()
    wait_for(lambda: job.state is JobState.RETRY, "the first retry")
    assert (job.attempts, job.eta) == (1, clock.now() + timedelta(seconds=1))

    clock.advance(1)  # attempt 2 fails; the next wait is doubled
    wait_for(lambda: job.attempts == 2 and job.state is JobState.RETRY, "the second retry")
    assert job.eta == clock.now() + timedelta(seconds=2)
    assert isinstance(job.result, ConnectionError)
    assert job.traceback is not None and "ConnectionError: try again" in job.traceback

    clock.advance(1.9)
    assert manual_runner.join(timeout=5)
    assert job.state is JobState.RETRY
    clock.advance(0.1)

    assert job.get(timeout=5) == "ok"
    assert (job.attempts, attempts) == (3, [1, 2, 3])


def test_retries_run_out_into_failure(
    manual_runner: TaskRunner, clock: ManualClock, wait_for: Wait
) -> None:
    @manual_runner.task(retries=2, retry_delay=1.0, retry_backoff=1.0, retry_jitter=False)
    def broken() -> None:
        raise ConnectionError("down")

    job = broken.delay()
    for attempt in (1, 2):
        wait_for(lambda a=attempt: job.attempts == a and job.state is JobState.RETRY, "a retry")
        clock.advance(1)

    with pytest.raises(ConnectionError, match="down"):
        job.get(timeout=5)
    assert job.attempts == 3
    assert manual_runner.stats()["failed"] == 1


def test_retry_on_limits_which_errors_are_retried(manual_runner: TaskRunner) -> None:
    @manual_runner.task(retries=3, retry_on=(ConnectionError,))
    def wrong_input() -> None:
        raise ValueError("bad input")

    job = wrong_input.delay()

    with pytest.raises(ValueError, match="bad input"):
        job.get(timeout=5)
    assert (job.state, job.attempts) == (JobState.FAILURE, 1)


def test_a_retrying_job_can_be_cancelled(
    manual_runner: TaskRunner, clock: ManualClock, wait_for: Wait
) -> None:
    @manual_runner.task(retries=3, retry_jitter=False)
    def flaky() -> None:
        raise ConnectionError("down")

    job = flaky.delay()
    wait_for(lambda: job.state is JobState.RETRY, "the first retry")

    assert job.cancel() is True
    clock.advance(60)
    assert manual_runner.join(timeout=5)
    assert (job.state, job.attempts) == (JobState.CANCELLED, 1)


def test_jitter_keeps_retry_waits_within_the_upper_half(
    manual_runner: TaskRunner, clock: ManualClock, wait_for: Wait
) -> None:
    @manual_runner.task(retries=1, retry_delay=10.0)
    def flaky() -> None:
        raise ConnectionError("down")

    jobs = [flaky.delay() for _ in range(8)]
    for job in jobs:
        wait_for(lambda job=job: job.state is JobState.RETRY, "a retry")

    now = clock.time()
    assert all(5.0 <= job.due - now <= 10.0 for job in jobs)
    for job in jobs:
        job.cancel()


def test_too_many_scheduled_jobs_raise_queue_full(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(max_scheduled=2)

    @runner.task(name="reports.build")
    def build() -> None:
        pass

    jobs = [build.apply_async(countdown=60) for _ in range(2)]

    with pytest.raises(
        QueueFull,
        match=r"cannot schedule job \S+ \(reports\.build\): 2 jobs already wait for their time "
        r"\(max_scheduled=2\); raise max_scheduled",
    ):
        build.apply_async(countdown=60)
    for job in jobs:
        job.cancel()


def test_cancelled_scheduled_jobs_free_their_place_and_memory(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(max_scheduled=200)

    @runner.task(name="reports.later")
    def later() -> None:
        pass

    jobs = [later.apply_async(countdown=60) for _ in range(200)]
    for job in jobs:
        job.cancel()
    replacement = later.apply_async(countdown=60)  # room again: cancelled ones no longer count

    assert runner.stats()["scheduled"] == 1
    assert sum(len(s.heap) for s in runner._scheduler._segments) < 100  # compacted
    replacement.cancel()
