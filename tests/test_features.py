"""Jobs that talk back and queue controls, in one process: current_job/update, unique keys,
max_running, rate_limit, Retry, expiry, ignore_result, per-task result_ttl, Job.retry().

Each behaviour runs on real runners, with the memory store and (where the
store does the work) with a SQLite file; the machine-wide forms, with
several processes on one file, are in ``tests/test_features_shared.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from gevent import monkey
from gevent.event import Event

from taskrun import (
    ConfigError,
    JobCancelled,
    JobNotFinished,
    JobState,
    ManualClock,
    NoCurrentJob,
    Retry,
    TaskRunner,
    current_job,
)
from taskrun.errors import NotSerializable
from taskrun.flask.status import job_status
from taskrun.limits import RateLog, next_start, parse_rate
from taskrun.options import Executor, TaskOptions, retry_delay

MakeRunner = Callable[..., TaskRunner]
#: The OS thread's id, unpatched (patched, every greenlet is a thread of its own).
native_ident: Callable[[], int] = monkey.get_original("threading", "get_ident")


@pytest.fixture(params=["memory", "sqlite"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes it runs once with the memory store and once with a SQLite file."""
    return "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 'taskrun.db'}"


# -- current_job() and Job.update() ------------------------------------------------------


@pytest.mark.parametrize("executor", ["greenlet", "thread"])
def test_current_job_is_the_running_job_in_greenlet_and_thread_jobs(
    make_runner: MakeRunner, store_spec: str, executor: Executor
) -> None:
    runner = make_runner(store=store_spec)

    @runner.task(executor=executor)
    def process(total: int) -> dict[str, Any]:
        job = current_job()
        for i in range(total):
            job.update(current=i + 1, total=total)
        return {"id": job.id, "thread": native_ident()}

    job = process.delay(4)
    value = job.get(timeout=5)
    assert value["id"] == job.id
    assert job.meta == {"current": 4, "total": 4}
    assert (value["thread"] == native_ident()) is (executor == "greenlet")


def test_current_job_outside_a_job_says_it_is_only_available_in_a_task() -> None:
    with pytest.raises(NoCurrentJob, match="only available inside a task"):
        current_job()


def test_update_merges_and_refuses_a_value_that_is_not_json_naming_key_and_type(
    runner: TaskRunner,
) -> None:
    seen: list[BaseException] = []

    @runner.task()
    def report() -> None:
        job = current_job()
        job.update(stage="load", done=0)
        job.update(done=3, items=[1, 2, {"a": None}])
        try:
            job.update(when=datetime.now(UTC))
        except NotSerializable as error:  # a TaskrunError and a TypeError
            seen.append(error)

    job = report.delay()
    job.get(timeout=5)
    assert job.meta == {"stage": "load", "done": 3, "items": [1, 2, {"a": None}]}
    assert len(seen) == 1 and "when=" in str(seen[0]) and "datetime" in str(seen[0])
    copy = job.meta
    copy["stage"] = "changed"
    assert job.meta["stage"] == "load"  # meta is read as a copy


def test_status_json_has_meta_while_running_and_after(runner: TaskRunner) -> None:
    app = Flask(__name__)
    started, release = Event(), Event()

    @runner.task()
    def process() -> str:
        current_job().update(current=3, total=4)
        started.set()
        release.wait(5)
        return "done"

    plain = runner.task(name="plain")(lambda: 1)
    job = process.delay()
    assert started.wait(5)
    with app.app_context():
        assert job_status(job)["meta"] == {"current": 3, "total": 4}
        assert job_status(job)["state"] == "STARTED"
        release.set()
        job.get(timeout=5)
        assert job_status(job) == {
            "id": job.id,
            "state": "SUCCESS",
            "result": "done",
            "meta": {"current": 3, "total": 4},
        }
        other = plain.delay()
        other.get(timeout=5)
        assert "meta" not in job_status(other)


# -- unique_key ---------------------------------------------------------------------------


def test_unique_key_returns_the_unfinished_job_then_frees_the_key(
    make_runner: MakeRunner, store_spec: str
) -> None:
    runner = make_runner(store=store_spec)
    release = Event()

    @runner.task()
    def send_welcome(user_id: int) -> int:
        release.wait(5)
        return user_id

    @runner.task()
    def other(user_id: int) -> int:
        return user_id

    first = send_welcome.apply_async(args=(42,), unique_key="welcome:42")
    again = send_welcome.apply_async(args=(42,), unique_key="welcome:42")
    later = send_welcome.apply_async(args=(42,), unique_key="welcome:42", countdown=60)
    assert again is first or again.id == first.id
    assert later.id == first.id
    assert other.apply_async(args=(42,), unique_key="welcome:42").id != first.id
    assert send_welcome.apply_async(args=(7,), unique_key="welcome:7").id != first.id
    release.set()
    assert first.get(timeout=5) == 42
    runner.store.flush(timeout=5)
    fresh = send_welcome.apply_async(args=(42,), unique_key="welcome:42")
    assert fresh.id != first.id and len(fresh.id) == 22
    assert fresh.get(timeout=5) == 42


def test_unique_key_must_be_a_non_empty_string(runner: TaskRunner) -> None:
    task = runner.task(name="t")(lambda: None)
    with pytest.raises(ConfigError, match="unique_key"):
        task.apply_async(unique_key="")


# -- max_running -----------------------------------------------------------------------


def test_max_running_parks_jobs_without_holding_workers_or_blocking_other_tasks(
    make_runner: MakeRunner, store_spec: str
) -> None:
    runner = make_runner(store=store_spec, concurrency=4)
    release = Event()
    spans: list[tuple[str, float, float]] = []

    @runner.task(max_running=1)
    def exclusive(n: int) -> int:
        start = time.monotonic()
        release.wait(5)
        gevent.sleep(0.01)
        spans.append((str(n), start, time.monotonic()))
        return n

    @runner.task()
    def quick() -> str:
        return "quick"

    jobs = [exclusive.delay(i) for i in range(4)]
    wait_until(lambda: runner._dispatcher.admission.parked == 3, "3 jobs to park")
    assert [job.state for job in jobs].count(JobState.PENDING) == 3
    assert runner._dispatcher.running == 1  # parked jobs hold no worker
    assert quick.delay().get(timeout=5) == "quick"  # other tasks run meanwhile
    release.set()
    assert [job.get(timeout=10) for job in jobs] == [0, 1, 2, 3]
    spans.sort(key=lambda span: span[1])
    for (_, _, end), (_, start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # never two at once


def test_max_running_parked_jobs_are_handed_back_or_cancelled_at_stop(
    make_runner: MakeRunner,
) -> None:
    runner = make_runner()
    release = Event()

    @runner.task(max_running=1)
    def exclusive() -> None:
        release.wait(5)

    first, parked = exclusive.delay(), exclusive.delay()
    wait_until(lambda: runner._dispatcher.admission.parked == 1, "a parked job")
    release.set()
    first.get(timeout=5)
    parked.get(timeout=5)
    blocker, waiting = exclusive.delay(), exclusive.delay()
    release.clear()
    wait_until(lambda: runner._dispatcher.admission.parked == 1, "a parked job")
    gevent.spawn_later(0.05, release.set)
    runner.stop(timeout=0.01)
    assert waiting.state is JobState.CANCELLED
    assert blocker.ready()


# -- rate_limit -------------------------------------------------------------------------


def test_rate_limit_spaces_starts_by_the_window(
    make_runner: MakeRunner, clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)
    starts: list[float] = []

    @runner.task(rate_limit="2/s")
    def limited(n: int) -> int:
        starts.append(clock.time())
        return n

    jobs = [limited.delay(i) for i in range(5)]
    wait_until(lambda: len(starts) == 2, "the first 2 starts")
    wait_until(lambda: sum(job.state is JobState.SCHEDULED for job in jobs) == 3, "3 waiting")
    assert runner._dispatcher.running == 0  # waiting jobs hold no worker
    clock.advance(1.0)
    wait_until(lambda: len(starts) == 4, "2 more starts a second later")
    clock.advance(1.0)
    assert [job.get(timeout=5) for job in jobs] == [0, 1, 2, 3, 4]
    assert all(sum(1 for t in starts if s <= t < s + 1.0) <= 2 for s in starts), (
        f"more than 2 starts in a second: {starts!r}"
    )


@pytest.mark.parametrize("bad", ["10", "10/d", "0/s", "x/s", "10 per second", 10])
def test_a_bad_rate_limit_fails_at_decoration_naming_value_and_forms(
    runner: TaskRunner, bad: Any
) -> None:
    with pytest.raises(ConfigError) as caught:
        runner.task(rate_limit=bad)(lambda: None)
    assert repr(bad) in str(caught.value) and "'N/s', 'N/m' or 'N/h'" in str(caught.value)


def test_rate_policy_is_a_sliding_window() -> None:
    assert parse_rate("10/s") == (10, 1.0)
    assert parse_rate(" 3 / m ") == (3, 60.0)
    assert parse_rate("5/h") == (5, 3600.0)
    log = RateLog(2, 1.0)
    assert log.reserve(10.0) == 0.0
    assert log.reserve(10.4) == 0.0
    assert log.reserve(10.5) == 11.0
    assert log.reserve(11.0) == 0.0  # the first start left the window
    assert next_start([10.0, 10.4], 2, 1.0, 10.5) == 11.0
    assert next_start([9.0, 10.4], 2, 1.0, 10.5) == 0.0


# -- Retry and retry_backoff_max --------------------------------------------------------


def test_retry_raised_in_a_body_retries_at_its_countdown_then_fails_with_exc(
    make_runner: MakeRunner, clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)
    attempts: list[int] = []

    @runner.task(retries=2, retry_on=(KeyError,))
    def flaky() -> None:
        attempts.append(current_job().attempts)
        raise Retry(countdown=30, exc=ValueError("upstream said no"))

    job = flaky.delay()
    wait_until(lambda: job.state is JobState.RETRY, "the first retry")
    assert job.due == pytest.approx(clock.time() + 30)
    clock.advance(30)
    wait_until(lambda: len(attempts) == 2 and job.state is JobState.RETRY, "the second retry")
    clock.advance(30)
    with pytest.raises(ValueError, match="upstream said no"):
        job.get(timeout=5)
    assert attempts == [1, 2, 3] and job.state is JobState.FAILURE


def test_retry_with_eta_and_without_exc_fails_with_the_retry(
    make_runner: MakeRunner, clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)

    @runner.task(retries=1)
    def later() -> None:
        raise Retry(eta=clock.now() + timedelta(minutes=5))

    job = later.delay()
    wait_until(lambda: job.state is JobState.RETRY, "the retry")
    assert job.due == pytest.approx(clock.time() + 300)
    clock.advance(300)
    with pytest.raises(Retry):
        job.get(timeout=5)


def test_retry_refuses_naive_eta_and_both_times() -> None:
    with pytest.raises(ConfigError, match="aware"):
        Retry(eta=datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="not both"):
        Retry(countdown=1, eta=datetime.now(UTC))


def test_retry_backoff_max_caps_the_back_off(make_runner: MakeRunner, clock: ManualClock) -> None:
    options = TaskOptions(retries=8, retry_delay=1, retry_backoff=10, retry_backoff_max=600)
    import random

    rand = random.Random(1)
    assert retry_delay(options, 2, rand) <= 10
    assert all(retry_delay(options, n, rand) <= 600 for n in range(1, 2000))
    assert TaskOptions().retry_backoff_max == 3600
    runner = make_runner(clock=clock)

    @runner.task(retries=8, retry_delay=100, retry_backoff=10, retry_backoff_max=150)
    def failing() -> None:
        raise OSError("down")

    job = failing.delay()
    wait_until(lambda: job.state is JobState.RETRY, "the first retry")
    clock.advance(100)
    wait_until(lambda: job.attempts == 2 and job.state is JobState.RETRY, "the second retry")
    assert job.due - clock.time() <= 150  # not 1000


# -- expires ------------------------------------------------------------------------------


def test_a_job_not_started_by_its_expiry_never_runs(
    make_runner: MakeRunner, clock: ManualClock
) -> None:
    runner = make_runner(clock=clock)
    ran: list[int] = []

    @runner.task()
    def send_report(n: int) -> None:
        ran.append(n)

    @runner.task(retries=1, retry_delay=10, retry_jitter=False)
    def send_flaky() -> str:
        if current_job().attempts == 1:
            raise OSError("try again")
        return "second attempt"

    expired = send_report.apply_async(args=(1,), countdown=10, expires=5)
    by_date = send_report.apply_async(
        args=(2,), countdown=10, expires=clock.now() + timedelta(seconds=5)
    )
    in_time = send_report.apply_async(args=(3,), countdown=10, expires=timedelta(seconds=60))
    flaky = send_flaky.apply_async(expires=5)  # starts in time: its retry runs after expiry
    wait_until(lambda: flaky.state is JobState.RETRY, "the flaky job's retry")
    clock.advance(10)
    with pytest.raises(JobCancelled, match="expired"):
        expired.get(timeout=5)
    with pytest.raises(JobCancelled, match="expired"):
        by_date.get(timeout=5)
    in_time.get(timeout=5)
    assert flaky.get(timeout=5) == "second attempt"
    assert ran == [3] and expired.state is JobState.CANCELLED


@pytest.mark.parametrize("bad", [-1, "soon", datetime(2026, 1, 1)])
def test_a_bad_expires_is_refused(runner: TaskRunner, bad: Any) -> None:
    task = runner.task(name="t")(lambda: None)
    with pytest.raises(ConfigError, match="expires"):
        task.apply_async(expires=bad)


# -- ignore_result and result_ttl ------------------------------------------------------


def test_ignore_result_keeps_state_and_timings_but_not_the_value(
    make_runner: MakeRunner, store_spec: str, tmp_path: Path
) -> None:
    runner = make_runner(store=store_spec)

    @runner.task(ignore_result=True)
    def big() -> str:
        return "x" * 1000

    job = big.delay()
    assert job.get(timeout=5) is None
    assert job.state is JobState.SUCCESS and job.result is None
    assert job.attempts == 1 and job.started_at is not None and job.finished_at is not None
    if store_spec != "memory":
        runner.store.flush(timeout=5)
        reader = make_runner(store=store_spec)
        seen = reader.job(job.id)
        assert seen is not None and seen is not job
        assert seen.state is JobState.SUCCESS and seen.result is None and seen.attempts == 1


def test_a_tasks_result_ttl_overrides_the_runners(
    make_runner: MakeRunner, clock: ManualClock
) -> None:
    runner = make_runner(clock=clock, result_ttl=3600)
    short = runner.task(name="short", result_ttl=10)(lambda: 1)
    long = runner.task(name="long")(lambda: 2)
    a, b = short.delay(), long.delay()
    a.get(timeout=5), b.get(timeout=5)
    clock.advance(11)
    assert runner.job(a.id) is None
    assert runner.job(b.id) is b


# -- Job.retry() ------------------------------------------------------------------------------


def test_retry_of_a_failed_job_is_a_new_job_with_the_same_arguments(
    make_runner: MakeRunner, store_spec: str
) -> None:
    runner = make_runner(store=store_spec)
    calls: list[tuple[Any, ...]] = []

    @runner.task()
    def charge(order: int, *, amount: int) -> int:
        calls.append((order, amount))
        if len(calls) == 1:
            raise ConnectionError("payment API down")
        return amount

    failed = charge.apply_async(args=(7,), kwargs={"amount": 30})
    with pytest.raises(ConnectionError):
        failed.get(timeout=5)
    again = failed.retry()
    assert again.id != failed.id and again.get(timeout=5) == 30
    assert calls == [(7, 30), (7, 30)]
    with pytest.raises(JobNotFinished, match="only a FAILURE or CANCELLED"):
        again.retry()
    pending = charge.apply_async(args=(8,), kwargs={"amount": 1}, countdown=60)
    with pytest.raises(JobNotFinished):
        pending.retry()
    pending.cancel()
    assert pending.retry().get(timeout=5) == 1


# -- eager mode ---------------------------------------------------------------------------


def test_eager_jobs_update_meta_dedup_unfinished_keys_and_ignore_expiry() -> None:
    runner = TaskRunner(eager=True, lock_path=None)
    inner: list[Any] = []

    @runner.task()
    def process(total: int) -> int:
        job = current_job()
        job.update(current=total, total=total)
        inner.append(process.apply_async(args=(total,), unique_key="k"))
        return total

    job = process.apply_async(args=(2,), unique_key="k", expires=0)
    assert job.get() == 2 and job.meta == {"current": 2, "total": 2}
    assert inner[0] is job  # the key was held by the unfinished (running) job
    assert process.apply_async(args=(3,), unique_key="k").get() == 3  # finished: key free


def wait_until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Yield to the loop until ``check()`` is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        gevent.sleep(0.005)
    return value
