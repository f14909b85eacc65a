"""Tasks: declaring them, calling them inline, and submitting jobs with delay/apply_async."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskrun import ConfigError, JobState, ManualClock, RunnerNotRunning, Task, TaskRunner


def test_plain_call_runs_inline_and_submits_nothing(runner: TaskRunner) -> None:
    calls: list[int] = []

    @runner.task
    def record(value: int) -> int:
        calls.append(value)
        return value * 2

    assert record(21) == 42
    assert calls == [21]
    assert runner.stats()["submitted"] == 0


def test_task_keeps_the_functions_name_and_doc() -> None:
    runner = TaskRunner()

    @runner.task
    def send_welcome(user_id: int) -> None:
        """Send the welcome email."""

    assert isinstance(send_welcome, Task)
    assert send_welcome.__name__ == "send_welcome"  # type: ignore[attr-defined]
    assert send_welcome.__doc__ == "Send the welcome email."
    assert (
        send_welcome.name
        == f"{__name__}.test_task_keeps_the_functions_name_and_doc.<locals>.send_welcome"
    )
    assert repr(send_welcome) == f"<Task {send_welcome.name}>"
    assert runner.tasks == {send_welcome.name: send_welcome}


def test_task_name_can_be_given() -> None:
    runner = TaskRunner()

    @runner.task(name="mail.welcome")
    def send_welcome() -> None:
        pass

    assert send_welcome.name == "mail.welcome"


def test_a_second_task_with_the_same_name_is_refused() -> None:
    runner = TaskRunner()
    runner.task(name="mail.welcome")(lambda: None)

    with pytest.raises(
        ConfigError, match=r"'mail\.welcome' is already registered; pass a distinct name="
    ):
        runner.task(name="mail.welcome")(lambda: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, r"retries must be a whole number >= 0, got -1; use retries=0"),
        ({"retries": 1.5}, r"retries must be a whole number >= 0, got 1\.5"),
        ({"retries": True}, r"retries must be a whole number >= 0, got True"),
        ({"retry_delay": -1}, r"retry_delay must be a number of seconds >= 0, got -1"),
        ({"retry_backoff": 0.5}, r"retry_backoff must be a number >= 1, got 0\.5; use 1 for"),
        ({"retry_on": ValueError}, r"retry_on must be a tuple of exception classes, got <class"),
        (
            {"retry_on": (int,)},
            r"retry_on must be a tuple of exception classes, got \(<class 'int'>",
        ),
        ({"timeout": 0}, r"timeout must be a number of seconds > 0, got 0"),
        ({"timeout": "30"}, r"timeout must be a number of seconds > 0, got '30'"),
        (
            {"executor": "process"},
            r"executor must be one of \('greenlet', 'thread'\), got 'process'",
        ),
    ],
)
def test_bad_options_fail_at_decoration_time(options: dict[str, Any], message: str) -> None:
    runner = TaskRunner()

    with pytest.raises(ConfigError, match=message):
        runner.task(**options)

    assert runner.tasks == {}


def test_config_error_is_also_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_delay_passes_positional_and_keyword_arguments(runner: TaskRunner) -> None:
    @runner.task
    def greet(name: str, *, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    assert greet.delay("ada").get(timeout=5) == "hello ada"
    assert greet.delay("ada", greeting="hi").get(timeout=5) == "hi ada"


def test_apply_async_takes_args_and_kwargs(runner: TaskRunner) -> None:
    @runner.task
    def greet(name: str, greeting: str = "hello") -> str:
        return f"{greeting} {name}"

    job = greet.apply_async(args=["ada"], kwargs={"greeting": "hi"})

    assert job.get(timeout=5) == "hi ada"
    assert job.args == ("ada",)


def test_apply_async_without_countdown_runs_now(runner: TaskRunner) -> None:
    @runner.task
    def work() -> int:
        return 1

    job = work.apply_async()

    assert job.state is JobState.PENDING
    assert job.get(timeout=5) == 1


@pytest.mark.parametrize("countdown", [60, 60.0, timedelta(minutes=1)])
def test_countdown_schedules_the_job(
    make_runner: Callable[..., TaskRunner], clock: ManualClock, countdown: float | timedelta
) -> None:
    runner = make_runner(clock=clock)

    @runner.task
    def work() -> int:
        return 1

    job = work.apply_async(countdown=countdown)

    assert job.state is JobState.SCHEDULED
    assert job.eta == clock.now() + timedelta(minutes=1)
    job.cancel()


def test_eta_in_the_past_runs_now(runner: TaskRunner) -> None:
    @runner.task
    def work() -> int:
        return 1

    job = work.apply_async(eta=datetime.now(UTC) - timedelta(hours=1))

    assert job.state is JobState.PENDING
    assert job.get(timeout=5) == 1


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            {"eta": datetime(2030, 1, 1)},
            r"eta must be a timezone-aware datetime, got datetime\.datetime\(2030, 1, 1, 0, 0\); "
            r"e\.g\. datetime\.now\(timezone\.utc\)",
        ),
        (
            {"countdown": 5, "eta": datetime(2030, 1, 1, tzinfo=UTC)},
            r"give countdown= or eta=, not both \(countdown=5, eta=",
        ),
        ({"countdown": -1}, r"countdown must be >= 0 seconds, got -1"),
        ({"countdown": float("inf")}, r"countdown must be >= 0 seconds, got inf"),
        ({"countdown": "60"}, r"countdown must be seconds or a timedelta, got '60'"),
        (
            {"args": 42},
            r"args must be a tuple or list of positional arguments, got 42; e\.g\. args=",
        ),
        ({"kwargs": [1]}, r"kwargs must be a dict, got \[1\]"),
    ],
)
def test_bad_apply_async_arguments_fail_at_call_time(
    runner: TaskRunner, when: dict[str, Any], message: str
) -> None:
    @runner.task
    def work() -> None:
        pass

    with pytest.raises(ConfigError, match=message):
        work.apply_async(**when)

    assert runner.stats()["submitted"] == 0


def test_delay_before_start_raises_a_clear_error() -> None:
    runner = TaskRunner()

    @runner.task(name="mail.welcome")
    def send_welcome() -> None:
        pass

    with pytest.raises(
        RunnerNotRunning, match=r"cannot run mail\.welcome: .*call runner\.start\(\)"
    ):
        send_welcome.delay()
