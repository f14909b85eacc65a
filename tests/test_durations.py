"""Durations: float seconds or a ``timedelta``, wherever the public API takes one."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from gevent.event import Event

from taskrun import ConfigError, TaskRunner, WaitTimeout, every
from taskrun.validation import seconds


@pytest.mark.parametrize(
    ("value", "positive", "expected"),
    [
        (30, False, 30.0),
        (1.5, False, 1.5),
        (0, False, 0.0),
        (timedelta(minutes=2), False, 120.0),
        (timedelta(milliseconds=250), True, 0.25),
        (timedelta(0), False, 0.0),
    ],
)
def test_seconds_takes_numbers_and_timedeltas(
    value: float | timedelta, positive: bool, expected: float
) -> None:
    result = seconds("timeout", value, positive=positive)

    assert (result, type(result)) == (expected, float)


@pytest.mark.parametrize(
    ("value", "positive", "message"),
    [
        (-1, False, r"timeout must be a number of seconds >= 0, got -1; pass a finite number"),
        (
            timedelta(seconds=-1),
            False,
            r">= 0, got datetime\.timedelta\(days=-1, seconds=86399\)",
        ),
        (0, True, r"timeout must be a number of seconds > 0, got 0;"),
        (timedelta(0), True, r"> 0, got datetime\.timedelta\(0\)"),
        ("30", False, r">= 0, got '30'; pass a finite number or a timedelta, e\.g\. timeout=30"),
        (True, False, r">= 0, got True"),
        (None, False, r">= 0, got None"),
        (math.nan, False, r">= 0, got nan"),
        (math.inf, False, r">= 0, got inf"),
    ],
)
def test_seconds_refuses_what_is_not_a_duration(value: Any, positive: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        seconds("timeout", value, positive=positive)


def _task_timeout(value: Any) -> float | None:
    return TaskRunner().task(timeout=value)(lambda: None).options.timeout


def _task_retry_delay(value: Any) -> float:
    return TaskRunner().task(retry_delay=value)(lambda: None).options.retry_delay


def _periodic_timeout(value: Any) -> float | None:
    return TaskRunner().periodic(every(minutes=5), timeout=value)(lambda: None).options.timeout


def _misfire_grace(value: Any) -> float:
    runner = TaskRunner()
    runner.periodic(every(minutes=5), misfire_grace=value)(lambda: None)
    return runner._periodic[-1].misfire_grace


def _result_ttl(value: Any) -> float:
    return TaskRunner(result_ttl=value)._router.settings.result_ttl


OPTIONS: list[tuple[str, Callable[[Any], Any]]] = [
    ("timeout", _task_timeout),
    ("retry_delay", _task_retry_delay),
    ("timeout", _periodic_timeout),
    ("misfire_grace", _misfire_grace),
    ("result_ttl", _result_ttl),
]


@pytest.mark.parametrize(("name", "declare"), OPTIONS, ids=[f.__name__ for _, f in OPTIONS])
def test_duration_options_take_a_timedelta_and_refuse_a_negative_one(
    name: str, declare: Callable[[Any], Any]
) -> None:
    assert declare(timedelta(minutes=1, seconds=30)) == 90.0
    assert declare(45) == 45.0
    with pytest.raises(ConfigError, match=rf"^{name} must be a number of seconds >=? 0, got "):
        declare(timedelta(seconds=-5))


def test_job_get_waits_a_timedelta(runner: TaskRunner) -> None:
    @runner.task
    def answer() -> int:
        return 42

    release = Event()

    @runner.task(name="held")
    def held() -> None:
        release.wait(5)

    assert answer.delay().get(timeout=timedelta(seconds=5)) == 42
    job = held.delay()
    with pytest.raises(WaitTimeout, match=r"\(held\) did not finish within 0\.01 s"):
        job.get(timeout=timedelta(milliseconds=10))
    with pytest.raises(ConfigError, match=r"timeout must be a number of seconds >= 0, got -1"):
        job.get(timeout=-1)
    release.set()
    job.get(timeout=5)


def test_stop_takes_a_timedelta_and_refuses_a_bad_timeout(
    make_runner: Callable[..., TaskRunner],
) -> None:
    runner = make_runner()

    with pytest.raises(ConfigError, match=r"timeout must be a number of seconds >= 0, got '5'"):
        runner.stop(timeout="5")  # type: ignore[arg-type]
    assert runner.is_running  # a refused timeout stops nothing
    runner.stop(timeout=timedelta(seconds=5))
    assert not runner.is_running
