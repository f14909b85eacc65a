"""The in-memory result store: finished jobs age out and are bounded in count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskrun import JobState, ManualClock, TaskRunner
from taskrun.jobs import Job
from taskrun.stores.memory import MemoryStore


@pytest.fixture
def task() -> Any:
    """A real task of a runner that is never started: jobs of it are only records here."""
    return TaskRunner().task(name="store.task")(lambda: None)


def make_job(task: Any, state: JobState = JobState.PENDING) -> Job[None]:
    return Job(task, (), None, None, state=state)


def finish(store: MemoryStore, clock: ManualClock, job: Job[Any]) -> None:
    job._finish(JobState.SUCCESS, None, clock.time())
    store.finish(job)


def test_finished_job_is_kept_for_result_ttl_then_evicted(clock: ManualClock, task: Any) -> None:
    store = MemoryStore(clock, result_ttl=60, max_results=100)
    job = make_job(task)
    store.add(job)
    finish(store, clock, job)

    clock.advance(60)
    assert store.get(job.id) is job
    clock.advance(0.001)
    assert store.get(job.id) is None
    assert len(store) == 0


def test_oldest_finished_jobs_go_first_past_max_results(clock: ManualClock, task: Any) -> None:
    store = MemoryStore(clock, result_ttl=3600, max_results=3)
    jobs = [make_job(task) for _ in range(5)]
    for job in jobs:
        store.add(job)
    for job in jobs:
        clock.advance(1)
        finish(store, clock, job)

    assert [store.get(job.id) for job in jobs] == [None, None, *jobs[2:]]


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.SCHEDULED, JobState.STARTED, JobState.RETRY]
)
def test_unfinished_jobs_are_never_evicted(clock: ManualClock, task: Any, state: JobState) -> None:
    store = MemoryStore(clock, result_ttl=1, max_results=1)
    unfinished = [make_job(task, state) for _ in range(5)]
    for job in unfinished:
        store.add(job)
    done = [make_job(task) for _ in range(3)]
    for job in done:
        store.add(job)
        finish(store, clock, job)

    clock.advance(3600)

    assert all(store.get(job.id) is job for job in unfinished)
    assert [store.get(job.id) for job in done] == [None, None, None]
    assert len(store) == 5


def test_iterating_the_store_yields_every_kept_job(clock: ManualClock, task: Any) -> None:
    store = MemoryStore(clock, result_ttl=60, max_results=10)
    jobs = [make_job(task) for _ in range(3)]
    for job in jobs:
        store.add(job)

    assert list(store) == jobs


def test_runner_forgets_a_result_after_result_ttl(
    make_runner: Callable[..., TaskRunner], clock: ManualClock
) -> None:
    runner = make_runner(clock=clock, result_ttl=60)

    @runner.task
    def work() -> int:
        return 1

    job = work.delay()
    job.get(timeout=5)
    clock.advance(30)
    assert runner.job(job.id) is job

    clock.advance(31)
    assert runner.job(job.id) is None
    assert job.get(timeout=0) == 1  # a caller holding the handle still has the result


def test_runner_keeps_at_most_max_results(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(concurrency=1, max_results=3)  # one worker: jobs finish in order

    @runner.task
    def work(n: int) -> int:
        return n

    jobs = [work.delay(n) for n in range(6)]
    for job in jobs:
        job.get(timeout=5)

    assert [runner.job(job.id) for job in jobs] == [None, None, None, *jobs[3:]]
