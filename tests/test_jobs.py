"""Jobs: ids, states, waiting on results, outcomes and timestamps."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import gevent
import pytest
from gevent.event import Event

from taskrun import JobCancelled, JobState, ManualClock, TaskRunner, WaitTimeout
from taskrun.jobs import FINISHED, Job, new_job_id

S = JobState


class AppError(Exception):
    """An application's own exception with several arguments."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code


def test_finished_states_are_success_failure_and_cancelled() -> None:
    assert FINISHED == {S.SUCCESS, S.FAILURE, S.CANCELLED}


@pytest.mark.parametrize(
    ("state", "ready", "successful", "failed"),
    [
        (S.PENDING, False, False, False),
        (S.SCHEDULED, False, False, False),
        (S.STARTED, False, False, False),
        (S.RETRY, False, False, False),
        (S.SUCCESS, True, True, False),
        (S.FAILURE, True, False, True),
        (S.CANCELLED, True, False, False),
    ],
)
def test_ready_successful_failed_follow_the_state(
    state: JobState, ready: bool, successful: bool, failed: bool
) -> None:
    task = TaskRunner().task(name="t")(lambda: None)  # never started: only the handle matters

    handle: Job[None] = Job(task, (), None, None, state=state)

    assert (handle.ready(), handle.successful(), handle.failed()) == (ready, successful, failed)


def test_job_state_is_a_str_enum_with_celery_names() -> None:
    assert [state.value for state in JobState] == [
        "PENDING",
        "SCHEDULED",
        "STARTED",
        "RETRY",
        "SUCCESS",
        "FAILURE",
        "CANCELLED",
    ]
    assert JobState.SUCCESS == "SUCCESS"


def test_job_ids_are_unique_url_safe_and_carry_128_random_bits() -> None:
    ids = {new_job_id() for _ in range(1000)}

    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", job_id) for job_id in ids)


def test_no_job_id_starts_with_a_dash_so_a_command_line_takes_it_as_an_argument() -> None:
    # About one base64 id in 64 would start with "-" (``flask taskrun show -x...``
    # then reads an option): 20,000 ids meet some 300 such cases.
    ids = [new_job_id() for _ in range(20_000)]

    assert not [job_id for job_id in ids if job_id.startswith("-")]
    rotated = [job_id for job_id in ids if job_id.endswith("-")]
    assert 150 < len(rotated) < 500  # kept, not redrawn: each still holds its 128 bits
    assert len(set(ids)) == len(ids)


def test_a_job_moves_pending_started_success(
    runner: TaskRunner, wait_for: Callable[..., Any]
) -> None:
    release = Event()
    seen: list[JobState] = []

    @runner.task
    def work() -> str:
        release.wait(5)
        return "done"

    job = work.delay()
    seen.append(job.state)
    wait_for(lambda: job.state is S.STARTED, "the job to start")
    seen.append(job.state)
    release.set()

    assert job.get(timeout=5) == "done"
    assert seen + [job.state] == [S.PENDING, S.STARTED, S.SUCCESS]


def test_get_returns_the_value_and_result_holds_it(runner: TaskRunner) -> None:
    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)

    assert job.get(timeout=5) == 5
    assert job.result == 5
    assert job.traceback is None
    assert job.attempts == 1
    assert job.name == add.name


def test_get_reraises_the_tasks_own_exception_with_type_and_args(runner: TaskRunner) -> None:
    @runner.task
    def fail() -> None:
        raise AppError(402, "payment required")

    job = fail.delay()

    with pytest.raises(AppError) as raised:
        job.get(timeout=5)
    assert raised.value.args == (402, "payment required")
    assert raised.value.code == 402
    assert job.state is S.FAILURE
    assert job.result is raised.value
    assert job.traceback is not None
    assert "in fail" in job.traceback and "AppError: (402, 'payment required')" in job.traceback


def test_get_gives_up_after_its_timeout_and_the_job_goes_on(runner: TaskRunner) -> None:
    release = Event()

    @runner.task
    def slow() -> str:
        release.wait(5)
        return "late"

    job = slow.delay()

    with pytest.raises(WaitTimeout, match=r"did not finish within 0\.05 s .*wait longer"):
        job.get(timeout=0.05)
    release.set()
    assert job.get(timeout=5) == "late"


def test_wait_timeout_is_a_builtin_timeout_error() -> None:
    assert issubclass(WaitTimeout, TimeoutError)


def test_get_on_a_cancelled_job_raises_job_cancelled(runner: TaskRunner) -> None:
    @runner.task
    def later() -> None:
        pass

    job = later.apply_async(countdown=60)
    job.cancel()

    with pytest.raises(JobCancelled, match=r"was cancelled"):
        job.get(timeout=1)


def test_many_greenlets_can_wait_on_one_job(runner: TaskRunner) -> None:
    release = Event()

    @runner.task
    def work() -> int:
        release.wait(5)
        return 7

    job = work.delay()
    waiters = [gevent.spawn(job.get, 5) for _ in range(3)]
    gevent.sleep(0)
    release.set()

    assert [waiter.get(timeout=5) for waiter in waiters] == [7, 7, 7]


def test_timestamps_follow_the_clock(
    make_runner: Callable[..., TaskRunner], clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)

    @runner.task
    def later() -> None:
        pass

    job = later.apply_async(countdown=timedelta(minutes=5))
    enqueued = clock.now()
    assert (job.enqueued_at, job.eta, job.started_at, job.finished_at) == (
        enqueued,
        enqueued + timedelta(minutes=5),
        None,
        None,
    )

    clock.advance(timedelta(minutes=5))
    job.get(timeout=5)

    assert job.started_at == job.finished_at == enqueued + timedelta(minutes=5)
    assert job.eta is None


def test_runner_looks_a_job_up_by_id(runner: TaskRunner) -> None:
    @runner.task
    def work() -> int:
        return 1

    job = work.delay()
    job.get(timeout=5)

    assert runner.job(job.id) is job
    assert runner.job("no-such-id") is None


def test_cancel_of_a_finished_job_returns_false(runner: TaskRunner) -> None:
    @runner.task
    def work() -> int:
        return 1

    job = work.delay()
    job.get(timeout=5)

    assert job.cancel() is False
    assert job.state is S.SUCCESS


def test_repr_names_id_task_and_state(runner: TaskRunner) -> None:
    @runner.task(name="reports.build")
    def build() -> None:
        pass

    job = build.apply_async(countdown=60)

    assert repr(job) == f"<Job {job.id} reports.build SCHEDULED>"
    job.cancel()
