"""The bounded pool: concurrency, FIFO backlog, refusal, thread offload, time limits,
cancellation and isolation of failing jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import gevent
import pytest
from gevent import monkey
from gevent.event import Event

from taskrun import (
    JobCancelled,
    JobState,
    JobTimeout,
    QueueFull,
    TaskrunError,
    TaskRunner,
    WaitTimeout,
)
from taskrun.options import Executor

Wait = Callable[..., Any]

# A real OS lock: it blocks a pool thread for real, whatever gevent patched.
allocate_real_lock = monkey.get_original("_thread", "allocate_lock")


def test_at_most_concurrency_jobs_run_at_once(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(concurrency=2, max_pending=8)
    release = Event()

    @runner.task
    def block(n: int) -> int:
        release.wait(5)
        return n

    jobs = [block.delay(n) for n in range(5)]
    wait_for(lambda: runner.stats()["running"] == 2, "two jobs to start")
    gevent.sleep(0.01)  # give a third job every chance to start, were it allowed

    assert [job.state for job in jobs] == [JobState.STARTED] * 2 + [JobState.PENDING] * 3
    assert runner.stats()["backlog"] == 3
    release.set()
    assert [job.get(timeout=5) for job in jobs] == [0, 1, 2, 3, 4]


def test_backlog_runs_in_fifo_order(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(concurrency=1, max_pending=8)
    release = Event()
    order: list[int] = []

    @runner.task
    def record(n: int) -> None:
        if n == 0:
            release.wait(5)
        order.append(n)

    jobs = [record.delay(n) for n in range(6)]
    release.set()
    for job in jobs:
        job.get(timeout=5)

    assert order == [0, 1, 2, 3, 4, 5]


def test_full_backlog_raises_queue_full_with_the_numbers_and_the_fix(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(concurrency=1, max_pending=2)
    release = Event()

    @runner.task(name="mail.send")
    def send() -> None:
        release.wait(5)

    jobs = [send.delay() for _ in range(3)]

    with pytest.raises(
        QueueFull,
        match=r"cannot accept job \S+ \(mail\.send\): 1 jobs running \(concurrency=1\) and "
        r"2 waiting \(max_pending=2\); raise max_pending or concurrency, or shed load",
    ):
        send.delay()
    release.set()
    for job in jobs:
        job.get(timeout=5)
    assert issubclass(QueueFull, TaskrunError)


def test_a_refused_job_is_not_recorded(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(concurrency=1, max_pending=0)
    release = Event()

    @runner.task
    def block() -> None:
        release.wait(5)

    first = block.delay()
    with pytest.raises(QueueFull):
        block.delay()

    assert runner.stats()["submitted"] == 1
    assert [job.id for job in runner.store] == [first.id]
    release.set()
    first.get(timeout=5)


def test_delay_never_yields_to_the_loop_even_when_full(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(concurrency=2, max_pending=3)
    release = Event()
    switched: list[bool] = []

    @runner.task
    def block() -> None:
        release.wait(5)

    bystander = gevent.spawn(switched.append, True)  # runs as soon as the caller yields
    accepted, refused = 0, 0
    for _ in range(10):
        try:
            block.delay()
            accepted += 1
        except QueueFull:
            refused += 1

    assert (accepted, refused, switched) == (5, 5, [])
    bystander.join(timeout=5)
    assert switched == [True]
    release.set()


def test_thread_job_leaves_the_loop_serving_greenlets(runner: TaskRunner) -> None:
    lock = allocate_real_lock()
    lock.acquire()
    ticks: list[int] = []

    @runner.task(executor="thread")
    def wait_in_thread() -> bool:
        # Blocks this OS thread until the ticking greenlet releases the lock;
        # if the thread blocked the event loop, the greenlet could never tick.
        return bool(lock.acquire(timeout=5))

    def tick() -> None:
        for n in range(5):
            gevent.sleep(0.01)
            ticks.append(n)
        lock.release()

    job = wait_in_thread.delay()
    ticker = gevent.spawn(tick)

    assert job.get(timeout=10) is True
    assert ticks == [0, 1, 2, 3, 4]
    ticker.join(timeout=5)


def test_thread_job_runs_in_another_os_thread(runner: TaskRunner) -> None:
    get_ident = monkey.get_original("threading", "get_ident")

    @runner.task(executor="thread")
    def ident() -> int:
        return int(get_ident())

    assert ident.delay().get(timeout=5) != get_ident()


def test_a_thread_job_submits_looks_up_and_cancels_jobs_that_run_on_the_main_hub(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(concurrency=20, max_pending=50)
    main_hub = gevent.get_hub()
    hubs: list[bool] = []

    @runner.task
    def child(x: int) -> int:
        hubs.append(gevent.get_hub() is main_hub)
        return x * 2

    @runner.task
    def idle() -> None:
        gevent.sleep(60)

    @runner.task(executor="thread", timeout=20)
    def parent(x: int) -> list[Any]:
        now = [child.delay(x + i) for i in range(3)]
        later = child.apply_async(args=(x,), countdown=0.01)
        scheduled = idle.apply_async(countdown=600)
        found = runner.job(scheduled.id)
        first = child.apply_async(args=(0,), countdown=600, unique_key=f"k{x}")
        second = child.apply_async(args=(0,), countdown=600, unique_key=f"k{x}")
        cancelled = scheduled.cancel() and first.cancel()
        values = [job.get(timeout=10) for job in [*now, later]]
        return [*values, found is scheduled, first.id == second.id, cancelled]

    parents = [parent.delay(10 * n) for n in range(8)]

    results = [job.get(timeout=30) for job in parents]
    assert results == [[20 * n, 20 * n + 2, 20 * n + 4, 20 * n, True, True, True] for n in range(8)]
    assert hubs == [True] * 32  # every child ran on the runner's hub, none on a pool thread's


def test_thread_job_past_its_timeout_fails_and_its_late_result_is_discarded(
    runner: TaskRunner, wait_for: Wait
) -> None:
    lock = allocate_real_lock()
    lock.acquire()
    returned: list[str] = []

    @runner.task(executor="thread", timeout=0.05, name="thumbs.make")
    def make() -> str:
        lock.acquire(timeout=5)
        returned.append("late")
        return "late"

    job = make.delay()

    with pytest.raises(
        JobTimeout, match=r"\(thumbs\.make\) ran past its timeout of 0\.05 s; .*thread runs on"
    ):
        job.get(timeout=5)
    lock.release()
    wait_for(lambda: returned, "the abandoned thread to return")
    gevent.sleep(0.01)  # let the late result reach the loop
    assert job.state is JobState.FAILURE
    assert isinstance(job.result, JobTimeout)


def test_greenlet_job_past_its_timeout_fails_even_if_it_catches_exception(
    runner: TaskRunner,
) -> None:
    went_on: list[str] = []

    @runner.task(timeout=0.05, name="feeds.poll")
    def stubborn() -> None:
        try:
            gevent.sleep(5)
        except Exception:  # a task's own catch-all must not swallow the time limit
            pass
        went_on.append("after the sleep")

    job = stubborn.delay()

    with pytest.raises(JobTimeout, match=r"\(feeds\.poll\) ran past its timeout of 0\.05 s; raise"):
        job.get(timeout=5)
    assert went_on == []
    assert isinstance(job.result, TimeoutError)


def test_a_timeout_raised_inside_the_task_is_the_tasks_own_failure(runner: TaskRunner) -> None:
    @runner.task(timeout=5)
    def inner_timeout() -> None:
        with gevent.Timeout(0.01):
            gevent.sleep(1)

    with pytest.raises(gevent.Timeout):
        inner_timeout.delay().get(timeout=5)


def test_cancel_pending_job_never_runs_it(make_runner: Callable[..., TaskRunner]) -> None:
    runner = make_runner(concurrency=1)
    release = Event()
    ran: list[str] = []

    @runner.task
    def work(name: str) -> None:
        if name == "blocker":
            release.wait(5)
        ran.append(name)

    blocker = work.delay("blocker")
    waiting = work.delay("waiting")

    assert waiting.cancel() is True
    assert waiting.state is JobState.CANCELLED
    release.set()
    blocker.get(timeout=5)
    with pytest.raises(JobCancelled):
        waiting.get(timeout=5)
    assert ran == ["blocker"]


def test_cancel_running_greenlet_job_kills_it(runner: TaskRunner, wait_for: Wait) -> None:
    went_on: list[str] = []

    @runner.task
    def forever() -> None:
        try:
            gevent.sleep(60)
        except Exception:
            pass
        went_on.append("after the sleep")

    job = forever.delay()
    wait_for(lambda: job.state is JobState.STARTED, "the job to start")

    assert job.cancel() is True
    with pytest.raises(JobCancelled):
        job.get(timeout=5)
    assert job.state is JobState.CANCELLED
    assert went_on == []
    assert runner.stats()["running"] == 0


def test_cancel_running_thread_job_discards_its_result(runner: TaskRunner, wait_for: Wait) -> None:
    lock = allocate_real_lock()
    lock.acquire()
    began: list[str] = []
    returned: list[str] = []

    @runner.task(executor="thread")
    def in_thread() -> str:
        began.append("body")
        lock.acquire(timeout=5)
        returned.append("late")
        return "late"

    job = in_thread.delay()
    # STARTED is not enough: a job cancelled before its thread runs it never runs.
    wait_for(lambda: began, "the thread to start the job's body")

    assert job.cancel() is True
    with pytest.raises(JobCancelled):
        job.get(timeout=5)
    lock.release()
    wait_for(lambda: returned, "the abandoned thread to return")
    gevent.sleep(0.01)
    assert job.state is JobState.CANCELLED
    assert job.result is None


def test_a_cancelled_worker_goes_on_to_the_next_job(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(concurrency=1)

    @runner.task
    def forever() -> None:
        gevent.sleep(60)

    @runner.task
    def quick() -> str:
        return "ok"

    stuck = forever.delay()
    after = quick.delay()
    wait_for(lambda: stuck.state is JobState.STARTED, "the job to start")
    stuck.cancel()

    assert after.get(timeout=5) == "ok"


@pytest.mark.parametrize("executor", ["greenlet", "thread"])
@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()], ids=repr)
def test_system_exit_or_keyboard_interrupt_in_a_job_is_a_failure(
    runner: TaskRunner, executor: Executor, error: BaseException
) -> None:
    @runner.task(executor=executor)
    def quit_() -> None:
        raise error

    @runner.task(name=f"after.{executor}")
    def after() -> str:
        return "still working"

    job = quit_.delay()

    with pytest.raises(type(error)):
        job.get(timeout=5)
    assert job.state is JobState.FAILURE
    assert after.delay().get(timeout=5) == "still working"


@pytest.mark.parametrize("executor", ["greenlet", "thread"])
def test_a_failure_is_logged_once_with_job_id_and_task_name(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture, executor: Executor
) -> None:
    @runner.task(name="mail.send", executor=executor)
    def send() -> None:
        raise ConnectionRefusedError("smtp down")

    with caplog.at_level(logging.DEBUG):
        job = send.delay()
        with pytest.raises(ConnectionRefusedError):
            job.get(timeout=5)

    about_job = [
        record
        for record in caplog.records
        if job.id in record.getMessage() and record.levelno >= logging.WARNING
    ]
    assert len(about_job) == 1
    record = about_job[0]
    assert record.levelno == logging.ERROR
    assert "mail.send" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is job.result


def test_failing_jobs_do_not_disturb_others_running_beside_them(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner(concurrency=4, max_pending=16)

    @runner.task
    def maybe_fail(n: int) -> int:
        gevent.sleep(0.001 * (n % 3))
        if n % 2:
            raise ValueError(n)
        return n

    jobs = [maybe_fail.delay(n) for n in range(20)]
    for job in jobs:
        with pytest.raises(ValueError) if int(job.args[0]) % 2 else nullcontext():
            job.get(timeout=5)

    stats = runner.stats()
    assert (stats["completed"], stats["failed"]) == (20, 10)


def test_thread_jobs_run_at_most_threads_at_once(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(concurrency=4, threads=2)
    gate = allocate_real_lock()
    gate.acquire()
    guard = allocate_real_lock()
    inside: list[int] = []

    @runner.task(executor="thread")
    def hold(n: int) -> int:
        with guard:
            inside.append(n)
        gate.acquire(timeout=5)  # each job lets the next one through
        gate.release()
        return n

    jobs = [hold.delay(n) for n in range(3)]
    wait_for(lambda: len(inside) == 2, "two thread jobs to start")
    gevent.sleep(0.02)  # give a third thread every chance to start, were there one

    assert len(inside) == 2
    gate.release()
    assert sorted(job.get(timeout=5) for job in jobs) == [0, 1, 2]


def test_a_thread_job_waiting_for_a_free_thread_is_timed_from_its_own_start(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(threads=1)
    hog_lock, overrun_lock = allocate_real_lock(), allocate_real_lock()
    hog_lock.acquire()
    overrun_lock.acquire()
    ran: list[str] = []  # appended to from the pool thread (list.append is atomic)

    @runner.task(executor="thread", timeout=0.05, name="hog")
    def hog() -> None:
        ran.append("hog")
        hog_lock.acquire(timeout=5)

    @runner.task(executor="thread", timeout=0.05, retries=2, retry_delay=0, name="quick")
    def quick() -> str:
        ran.append("quick")
        return "ok"

    @runner.task(executor="thread", timeout=0.05, name="overrun")
    def overrun() -> None:
        ran.append("overrun")
        overrun_lock.acquire(timeout=5)
        ran.append("overrun returned")

    first, second, third = hog.delay(), quick.delay(), overrun.delay()
    with pytest.raises(JobTimeout, match=r"\(hog\) ran past its timeout of 0\.05 s"):
        first.get(timeout=5)
    # The only thread still runs the first job: the others have not started, nor timed out.
    with pytest.raises(
        WaitTimeout, match=r"\(quick\) did not finish within 0\.2 s \(state STARTED\)"
    ):
        second.get(timeout=0.2)
    hog_lock.release()

    assert second.get(timeout=5) == "ok"
    with pytest.raises(JobTimeout, match=r"\(overrun\) ran past its timeout of 0\.05 s"):
        third.get(timeout=5)  # its own limit still holds, counted from its start
    overrun_lock.release()
    wait_for(lambda: len(ran) == 4, "the abandoned thread to return")
    assert ran == ["hog", "quick", "overrun", "overrun returned"]
    assert (second.attempts, third.attempts) == (1, 1)


def test_a_cancelled_thread_job_waiting_for_a_free_thread_never_runs(
    make_runner: Callable[..., TaskRunner], wait_for: Wait
) -> None:
    runner = make_runner(threads=1)
    lock = allocate_real_lock()
    lock.acquire()
    ran: list[str] = []

    @runner.task(executor="thread")
    def work(name: str) -> str:
        ran.append(name)
        if name == "hog":
            lock.acquire(timeout=5)
        return name

    hog = work.delay("hog")
    queued = work.delay("queued")
    wait_for(
        lambda: ran == ["hog"] and queued.state is JobState.STARTED,
        "the first job to hold the only thread",
    )

    assert queued.cancel() is True
    with pytest.raises(JobCancelled):
        queued.get(timeout=5)
    lock.release()
    assert hog.get(timeout=5) == "hog"
    # The pool's queue is FIFO: this job runs after the cancelled one's turn came.
    assert work.delay("after").get(timeout=5) == "after"
    assert ran == ["hog", "after"]


class _TaskDone(gevent.GreenletExit):
    """A task's own GreenletExit subclass."""


@pytest.mark.parametrize("executor", ["greenlet", "thread"])
@pytest.mark.parametrize("error_type", [gevent.GreenletExit, _TaskDone])
def test_a_greenlet_exit_raised_by_a_task_is_its_failure_logged_once(
    runner: TaskRunner,
    caplog: pytest.LogCaptureFixture,
    executor: Executor,
    error_type: type[gevent.GreenletExit],
) -> None:
    @runner.task(executor=executor, name=f"exits.{executor}")
    def exits() -> None:
        raise error_type("the task gave up")

    @runner.task(name=f"after.{executor}")
    def after() -> str:
        return "still working"

    with caplog.at_level(logging.DEBUG, logger="taskrun"):
        job = exits.delay()
        with pytest.raises(error_type, match="the task gave up"):
            job.get(timeout=5)

    assert job.state is JobState.FAILURE
    about_job = [
        record
        for record in caplog.records
        if job.id in record.getMessage() and record.levelno >= logging.WARNING
    ]
    assert [record.levelno for record in about_job] == [logging.ERROR]
    assert runner.stats()["failed"] == 1
    assert after.delay().get(timeout=5) == "still working"


def test_a_greenlet_exit_raised_by_an_eager_task_fails_the_job_and_reaches_the_caller() -> None:
    runner = TaskRunner(eager=True)

    @runner.task(name="exits.inline")
    def exits() -> None:
        raise gevent.GreenletExit("the task gave up")

    # Inline, the caller's greenlet might be the one being killed: never swallowed.
    with pytest.raises(gevent.GreenletExit, match="the task gave up"):
        exits.delay()

    (job,) = list(runner._router.eager_jobs)
    assert job.state is JobState.FAILURE
    assert isinstance(job.result, gevent.GreenletExit)
