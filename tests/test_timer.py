"""The timer greenlet: it survives faulty entries, waits on the monotonic clock, re-reads time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskrun import JobState, ManualClock, TaskRunner
from taskrun.jobs import Job
from taskrun.schedules import every
from taskrun.stores.memory import MemoryStore

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Flaky:
    """A user schedule (every 60 s) whose ``next_after`` raises from its ``fail_from``-th call."""

    def __init__(self, fail_from: int) -> None:
        self.calls = 0
        self.fail_from = fail_from

    def next_after(self, dt: datetime) -> datetime:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise ZeroDivisionError("the schedule's own bug")
        return datetime.fromtimestamp((dt.timestamp() // 60 + 1) * 60, UTC)

    def describe(self) -> str:
        return "flaky every minute"


class SlowFiring:
    """A user schedule (every 60 s) that advances the manual clock while the timer fires it."""

    def __init__(self, clock: ManualClock, by: float) -> None:
        self.clock = clock
        self.by = by
        self.armed = False

    def next_after(self, dt: datetime) -> datetime:
        if self.armed:
            self.armed = False
            self.clock.advance(self.by)  # firing took this long (e.g. a blocking claim)
        return datetime.fromtimestamp((dt.timestamp() // 60 + 1) * 60, UTC)

    def describe(self) -> str:
        return "slow every minute"


def runner_on(clock: ManualClock, make_runner: Callable[..., TaskRunner], **options: Any) -> Any:
    return make_runner(clock=clock, **options)


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(START)


def declare(runner: TaskRunner, schedule: Any, name: str, ran: list[str]) -> None:
    @runner.periodic(schedule, name=name)
    def tick() -> None:
        ran.append(name)


# -- 1. the timer never dies -------------------------------------------------------


def test_a_schedule_that_raises_disables_its_entry_and_the_rest_goes_on(
    make_runner: Callable[..., TaskRunner],
    manual: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = TaskRunner(clock=manual, lock_path=None, concurrency=2)
    ran: list[str] = []
    declare(runner, Flaky(fail_from=3), "flaky", ran)  # raises at its second slot
    declare(runner, every(minutes=1), "steady", ran)

    @runner.task
    def later() -> str:
        return "ran"

    runner.start()
    try:
        job = later.apply_async(countdown=90)
        with caplog.at_level(logging.ERROR, logger="taskrun"):
            manual.advance(60)  # both run their first slot
            assert runner.join(timeout=5)
        manual.advance(30)
        assert job.get(timeout=5) == "ran"
        manual.advance(30)
        assert runner.join(timeout=5)

        assert ran.count("steady") == 2
        assert ran.count("flaky") == 1  # its first slot ran, then it was disabled
        info = {p.name: p for p in runner.periodic_jobs()}
        assert info["flaky"].disabled == "ZeroDivisionError: the schedule's own bug"
        assert info["steady"].disabled is None
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("flaky" in m and "ZeroDivisionError" in m and "disabled" in m for m in errors)
    finally:
        runner.stop(timeout=5)


def test_a_schedule_that_raises_at_start_is_disabled_not_fatal(manual: ManualClock) -> None:
    runner = TaskRunner(clock=manual, lock_path=None)
    ran: list[str] = []
    declare(runner, Flaky(fail_from=1), "broken", ran)
    declare(runner, every(minutes=1), "steady", ran)
    with runner:
        manual.advance(60)
        assert runner.join(timeout=5)
        assert ran == ["steady"]
        (broken,) = (p for p in runner.periodic_jobs() if p.name == "broken")
        assert broken.disabled is not None and "ZeroDivisionError" in broken.disabled


class Repeating:
    """A user schedule whose ``next_after`` returns its argument: not later, a bug."""

    def next_after(self, dt: datetime) -> datetime:
        return (
            dt
            if dt.second == 0 and dt.microsecond == 0
            else dt.replace(second=0) + timedelta(minutes=1)
        )

    def describe(self) -> str:
        return "repeats"


def test_a_schedule_that_does_not_move_forward_is_disabled(manual: ManualClock) -> None:
    runner = TaskRunner(clock=manual, lock_path=None)
    ran: list[str] = []
    declare(runner, Repeating(), "stuck", ran)
    with runner:
        manual.advance(60)
        assert runner.join(timeout=5)
        (stuck,) = runner.periodic_jobs()
        assert stuck.disabled is not None and "must return a later time" in stuck.disabled


class FailingUpdates(MemoryStore):
    """A user store whose ``update`` raises for jobs of one task."""

    def update(self, job: Job[Any]) -> None:
        if job.name.endswith("doomed") and job.state is JobState.PENDING:
            raise OSError("disk full")
        super().update(job)


def test_an_error_firing_a_job_is_logged_and_the_job_still_runs(
    manual: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = TaskRunner(clock=manual, lock_path=None, store=FailingUpdates(manual, 60, 100))

    @runner.task
    def doomed() -> str:
        return "doomed ran"

    @runner.task
    def fine() -> str:
        return "fine ran"

    with runner:
        first = doomed.apply_async(countdown=5)
        second = fine.apply_async(countdown=5)
        with caplog.at_level(logging.ERROR, logger="taskrun"):
            manual.advance(5)
            assert first.get(timeout=5) == "doomed ran"
            assert second.get(timeout=5) == "fine ran"
        later = fine.apply_async(countdown=5)
        manual.advance(5)
        assert later.get(timeout=5) == "fine ran"  # the timer lives on
    assert any(
        first.id in r.getMessage() and "disk full" in str(r.exc_info) for r in caplog.records
    )


# -- 2. waits are monotonic, slots are wall-clock ----------------------------------------


def test_a_wall_clock_step_back_does_not_delay_a_countdown(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    @manual_runner.task
    def soon() -> str:
        return "on time"

    job = soon.apply_async(countdown=2)
    clock.step_wall(-3600)
    clock.advance(2)
    assert job.get(timeout=5) == "on time"


def test_a_wall_clock_step_forward_does_not_fire_a_countdown_early(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    @manual_runner.task
    def in_an_hour() -> str:
        return "later"

    job = in_an_hour.apply_async(countdown=3600)
    due = job.eta
    clock.step_wall(3600)
    assert manual_runner.join(timeout=5)
    assert job.state is JobState.SCHEDULED
    assert job.eta == due  # the wall-clock instant computed when accepted
    clock.advance(3599)
    assert manual_runner.join(timeout=5)
    assert job.state is JobState.SCHEDULED
    clock.advance(1)
    assert job.get(timeout=5) == "later"


def test_a_wall_clock_step_back_does_not_delay_a_retry(
    manual_runner: TaskRunner, clock: ManualClock
) -> None:
    attempts: list[int] = []

    @manual_runner.task(retries=1, retry_delay=10, retry_backoff=1.0, retry_jitter=False)
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first try fails")
        return len(attempts)

    job = flaky.delay()
    assert manual_runner.join(timeout=5)
    assert job.state is JobState.RETRY
    clock.step_wall(-3600)
    clock.advance(10)
    assert job.get(timeout=5) == 2


def test_periodic_slots_follow_the_wall_clock_through_steps(
    make_runner: Callable[..., TaskRunner], manual: ManualClock
) -> None:
    runner = TaskRunner(clock=manual, lock_path=None)
    ran: list[str] = []
    declare(runner, every(minutes=5), "report", ran)
    with runner:
        manual.step_wall(-3600)  # the next slot (12:05) is now 65 minutes away
        manual.advance(timedelta(minutes=5))
        assert runner.join(timeout=5)
        assert ran == []  # woke on the monotonic clock, re-checked the wall: not due
        manual.step_wall(3600 + 60)  # now 12:06: the 12:05 slot is due, and fires
        assert runner.join(timeout=5)
        assert ran == ["report"]
        manual.step_wall(3600)  # 13:06: eleven slots passed, coalesced into one run
        assert runner.join(timeout=5)
        assert ran == ["report"] * 2
        (info,) = runner.periodic_jobs()
        assert info.missed >= 11


# -- 3. the next sleep is measured after firing ------------------------------------------


def test_time_passing_while_the_timer_fires_is_not_lost(manual: ManualClock) -> None:
    slow = SlowFiring(manual, by=30)
    runner = TaskRunner(clock=manual, lock_path=None)
    ran: list[str] = []
    declare(runner, slow, "slow", ran)

    @runner.task
    def after_it() -> str:
        return "ran"

    with runner:
        job = after_it.apply_async(countdown=70)
        slow.armed = True
        manual.advance(60)  # the slot fires and, meanwhile, 30 s pass: the job is due
        assert job.get(timeout=5) == "ran"
