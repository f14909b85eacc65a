"""taskrun.signals: what each job transition sends, to real receivers of a real runner."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest
from conftest import WaitFor
from gevent.event import Event

from taskrun import JobState, ManualClock, TaskRunner, every, signals
from taskrun.errors import JobCancelled

ALL = [
    signals.job_enqueued,
    signals.job_started,
    signals.job_succeeded,
    signals.job_failed,
    signals.job_retrying,
    signals.job_cancelled,
    signals.periodic_skipped,
    signals.runner_started,
    signals.runner_stopping,
    signals.runner_stopped,
]

Event_ = tuple[str, Any, dict[str, Any]]


@contextmanager
def recording(sender: Any = signals.ANY) -> Iterator[list[Event_]]:
    """Connect a receiver to every signal; yield the list of (signal, sender, kwargs) it saw."""
    seen: list[Event_] = []
    receivers = []
    for signal in ALL:

        def receive(sender: Any, _name: str = signal.name, **kwargs: Any) -> None:
            seen.append((_name, sender, kwargs))

        signal.connect(receive, sender=sender, weak=False)
        receivers.append((signal, receive))
    try:
        yield seen
    finally:
        for signal, receive in receivers:
            signal.disconnect(receive)


def names(seen: list[Event_], *, of: Any = None) -> list[str]:
    return [name for name, _, kwargs in seen if of is None or kwargs.get("job") is of]


def test_a_job_sends_enqueued_started_succeeded_with_the_runner_as_sender(
    runner: TaskRunner,
) -> None:
    @runner.task
    def add(a: int, b: int) -> int:
        return a + b

    with recording(runner) as seen:
        job = add.delay(1, 2)
        assert job.get(timeout=5) == 3
        gevent.sleep(0)

    assert names(seen, of=job) == ["job_enqueued", "job_started", "job_succeeded"]
    assert {sender for _, sender, _ in seen} == {runner}


def test_a_failing_job_sends_retrying_then_failed_with_the_exception(runner: TaskRunner) -> None:
    @runner.task(retries=1, retry_delay=0.01, retry_jitter=False)
    def broken() -> None:
        raise ValueError("no such user")

    with recording(runner) as seen:
        job = broken.delay()
        with pytest.raises(ValueError):
            job.get(timeout=5)
        gevent.sleep(0)

    assert names(seen, of=job) == [
        "job_enqueued",
        "job_started",
        "job_retrying",
        "job_started",
        "job_failed",
    ]
    excs = [kwargs["exc"] for name, _, kwargs in seen if name in ("job_retrying", "job_failed")]
    assert all(isinstance(exc, ValueError) for exc in excs) and len(excs) == 2


def test_cancelling_a_scheduled_and_a_running_job_sends_cancelled(
    runner: TaskRunner, wait_for: WaitFor
) -> None:
    release = Event()

    @runner.task
    def wait() -> None:
        release.wait(5)

    with recording(runner) as seen:
        later = wait.apply_async(countdown=60)
        running = wait.delay()
        wait_for(lambda: running.state is JobState.STARTED, "the job to start")
        assert later.cancel() and running.cancel()
        with pytest.raises(JobCancelled):
            running.get(timeout=5)

    assert names(seen, of=later) == ["job_enqueued", "job_cancelled"]
    assert names(seen, of=running) == ["job_enqueued", "job_started", "job_cancelled"]


def test_jobs_left_at_stop_send_cancelled() -> None:
    runner = TaskRunner(lock_path=None).start()

    @runner.task
    def later() -> None:
        pass

    with recording(runner) as seen:
        job = later.apply_async(countdown=600)
        runner.stop(timeout=1)

    assert names(seen) == ["job_enqueued", "runner_stopping", "job_cancelled", "runner_stopped"]
    assert job.state is JobState.CANCELLED


def test_start_and_stop_send_runner_started_and_runner_stopping() -> None:
    runner = TaskRunner(lock_path=None)
    with recording(runner) as seen:
        runner.start()
        runner.stop(timeout=1)
    assert [(name, sender) for name, sender, _ in seen] == [
        ("runner_started", runner),
        ("runner_stopping", runner),
        ("runner_stopped", runner),
    ]


def test_eager_jobs_send_enqueued_before_they_run() -> None:
    runner = TaskRunner(eager=True, lock_path=None)

    @runner.task
    def double(x: int) -> int:
        return 2 * x

    with recording(runner) as seen:
        job = double.delay(4)
    assert names(seen, of=job) == ["job_enqueued", "job_started", "job_succeeded"]


def test_a_periodic_run_skipped_for_a_full_pool_sends_periodic_skipped() -> None:
    clock = ManualClock()
    runner = TaskRunner(clock=clock, lock_path=None, concurrency=1, max_pending=0)
    release = Event()

    @runner.task
    def hog() -> None:
        release.wait(5)

    @runner.periodic(every(minutes=1))
    def tick() -> None:
        pass

    with recording(runner) as seen, runner:
        held = hog.delay()
        gevent.sleep(0.01)
        clock.advance(60)
        gevent.sleep(0.01)
        release.set()
        held.get(timeout=5)

    (skipped,) = [kwargs for name, _, kwargs in seen if name == "periodic_skipped"]
    assert skipped == {"task": tick, "reason": "full"}


def test_a_receiver_that_raises_is_logged_once_and_the_job_still_succeeds(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @runner.task
    def work() -> str:
        return "done"

    def broken_receiver(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    seen: list[str] = []

    def good_receiver(sender: Any, job: Any) -> None:
        seen.append(job.id)

    signals.job_succeeded.connect(broken_receiver, sender=runner, weak=False)
    signals.job_succeeded.connect(good_receiver, sender=runner, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="taskrun.signals"):
            job = work.delay()
            assert job.get(timeout=5) == "done"
    finally:
        signals.job_succeeded.disconnect(broken_receiver)
        signals.job_succeeded.disconnect(good_receiver)

    assert job.state is JobState.SUCCESS
    assert seen == [job.id]
    errors = [r for r in caplog.records if r.name == "taskrun.signals"]
    assert len(errors) == 1
    assert "broken_receiver" in errors[0].getMessage()
    assert "receiver bug" in errors[0].getMessage()
    assert runner.is_running


def test_a_receiver_failing_on_every_job_is_logged_once_a_minute(
    runner: TaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @runner.task
    def work() -> None:
        pass

    def always_broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("still broken")

    signals.job_started.connect(always_broken, sender=runner, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="taskrun.signals"):
            for job in [work.delay() for _ in range(5)]:
                job.get(timeout=5)
    finally:
        signals.job_started.disconnect(always_broken)
    assert len([r for r in caplog.records if r.name == "taskrun.signals"]) == 1


def test_a_disconnected_or_collected_receiver_is_no_longer_called(runner: TaskRunner) -> None:
    @runner.task
    def work() -> None:
        pass

    calls: list[str] = []

    def strong(sender: Any, **kwargs: Any) -> None:
        calls.append("strong")

    def make_weak() -> Callable[..., None]:
        def weak(sender: Any, **kwargs: Any) -> None:
            calls.append("weak")

        return weak

    weak = make_weak()
    signals.job_succeeded.connect(strong, sender=runner, weak=False)
    signals.job_succeeded.connect(weak, sender=runner)  # weakly, as blinker's default
    work.delay().get(timeout=5)
    assert sorted(calls) == ["strong", "weak"]

    signals.job_succeeded.disconnect(strong)
    del weak
    gc.collect()
    calls.clear()
    work.delay().get(timeout=5)
    assert calls == []


def test_a_new_sender_reusing_a_collected_senders_id_gets_none_of_its_receivers() -> None:
    class Sender:
        pass

    calls: list[int] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(id(sender))  # not the sender: it must be collectable

    first = Sender()
    signals.job_succeeded.connect(receiver, sender=first, weak=False)
    try:
        signals.send(signals.job_succeeded, first, job=None)  # now kept for first's id
        old_id = id(first)
        del first
        gc.collect()
        made = [Sender() for _ in range(10_000)]  # kept alive: each takes a new slot
        reuser = next((one for one in made if id(one) == old_id), None)
        if reuser is None:
            pytest.skip("the interpreter did not reuse the collected sender's id")
        signals.send(signals.job_succeeded, reuser, job=None)
    finally:
        signals.job_succeeded.disconnect(receiver)
    assert len(calls) == 1


def test_a_receiver_for_another_runner_is_not_called(
    make_runner: Callable[..., TaskRunner],
) -> None:
    mine, other = make_runner(), make_runner()

    @mine.task
    def work() -> None:
        pass

    with recording(other) as seen:
        work.delay().get(timeout=5)
    assert seen == []


def test_with_no_receiver_no_signal_has_receivers() -> None:
    # The hot path checks signal.receivers: left-over receivers would slow every job.
    gc.collect()
    assert [signal.name for signal in ALL if signal.receivers] == []
