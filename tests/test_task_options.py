"""Options of ``@runner.task`` and ``@runner.periodic``: unknown ones are refused with a hint."""

from __future__ import annotations

import re
from typing import Any

import pytest

from taskrun import ConfigError, TaskRunner, every
from taskrun.registry import OPTION_HINTS


@pytest.fixture
def runner() -> TaskRunner:
    """A runner that is never started: declaring tasks needs none."""
    return TaskRunner(lock_path=None)


@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("max_retries", 3, r"taskrun calls it retries="),
        ("autoretry_for", (KeyError,), r"taskrun calls it retry_on="),
        ("time_limit", 30, r"taskrun calls it timeout="),
        ("soft_time_limit", 25, r"one limit per attempt: timeout="),
        ("default_retry_delay", 60, r"taskrun calls it retry_delay="),
        ("bind", True, r"taskrun\.current_job\(\)"),
        ("queue", "emails", r"one queue per runner"),
        ("serializer", "json", r"pickled with the SQLite store"),
        ("frobnicate", 1, r"not a taskrun option"),
    ],
)
def test_an_unknown_task_option_is_a_config_error_naming_it_and_the_fix(
    runner: TaskRunner, option: str, value: Any, hint: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"@runner\.task got unknown option\(s\): {option}="
    ) as info:
        runner.task(**{option: value})

    assert f"{option}={value!r}" in str(info.value)
    assert re.search(hint, str(info.value)), str(info.value)
    assert "its options are: name, retries, retry_delay" in str(info.value)
    assert runner.tasks == {}


def test_every_hinted_option_is_refused_and_the_known_ones_are_not_hinted(
    runner: TaskRunner,
) -> None:
    for option in OPTION_HINTS:
        with pytest.raises(ConfigError, match=rf"{option}="):
            runner.task(**{option: 1})
        with pytest.raises(ConfigError, match=rf"@runner\.periodic got unknown option.*{option}="):
            runner.periodic(every(seconds=5), **{option: 1})
    assert not set(OPTION_HINTS) & {"retries", "retry_on", "timeout", "executor", "name"}
    assert not set(OPTION_HINTS) & {"retry_backoff_max", "ignore_result", "rate_limit"}


def test_the_celery_named_options_taskrun_has_are_accepted(runner: TaskRunner) -> None:
    @runner.task(retry_backoff_max=600, ignore_result=True, rate_limit="10/s")
    def send() -> None: ...

    options = send.options
    assert (options.retry_backoff_max, options.ignore_result, options.rate) == (
        600.0,
        True,
        (10, 1.0),
    )


def test_several_unknown_options_are_named_together(runner: TaskRunner) -> None:
    with pytest.raises(ConfigError, match=r"max_retries=3 \(.*\); queue='q' \(") as info:
        runner.task(max_retries=3, queue="q")

    assert "retries=" in str(info.value)


def test_a_background_view_refuses_a_celery_option_too(runner: TaskRunner) -> None:
    with pytest.raises(ConfigError, match=r"max_retries=2 \(taskrun calls it retries=\)"):

        @runner.background(max_retries=2)
        def view() -> None: ...


def test_periodic_accepts_and_forwards_every_task_option(runner: TaskRunner) -> None:
    @runner.periodic(
        every(minutes=5),
        name="shop.poll",
        retries=2,
        retry_delay=3,
        retry_backoff=1.5,
        retry_jitter=False,
        retry_on=(KeyError,),
        timeout=9,
        executor="thread",
        retry_backoff_max=60,
        max_running=1,
        rate_limit="2/m",
        ignore_result=True,
        result_ttl=30,
    )
    def poll() -> None: ...

    options = poll.options
    assert poll.name == "shop.poll"
    assert (options.retries, options.retry_delay, options.retry_backoff) == (2, 3.0, 1.5)
    assert (options.retry_jitter, options.retry_on) == (False, (KeyError,))
    assert (options.timeout, options.executor) == (9.0, "thread")
    assert (options.retry_backoff_max, options.max_running, options.rate) == (60.0, 1, (2, 60.0))
    assert (options.ignore_result, options.result_ttl) == (True, 30.0)
