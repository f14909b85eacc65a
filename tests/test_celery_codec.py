"""The Celery engine's pure parts: JSON checks, errors across the wire, the visibility limits."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from taskrun import ConfigError, JobLost, NotSerializable, TaskRunner
from taskrun.engines.celery.codec import (
    check_arguments,
    decode_error,
    encode_error,
    envelope_of,
    from_json,
    to_json,
)
from taskrun.engines.celery.limits import check_task, check_tasks, longest_retry_wait
from taskrun.engines.celery.records import redacted
from taskrun.options import TaskOptions


class Unbuildable(Exception):
    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


def test_json_arguments_pass_and_datetimes_come_back_as_datetimes() -> None:
    when = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    args, kwargs = check_arguments("shop.send", (1, "a", [2.5], when), {"b": None})
    assert from_json(to_json([args, kwargs])) == [[1, "a", [2.5], when], {"b": None}]


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((1, object()), None, r"its argument 1 is a object"),
        ((), {"key": len}, r"its keyword argument 'key' is a builtin_function_or_method"),
        ((), {"ids": {1, 2}}, r"its keyword argument 'ids' is a set"),
    ],
)
def test_an_argument_that_is_not_json_is_named(
    args: tuple[Any, ...], kwargs: dict[str, Any] | None, named: str
) -> None:
    with pytest.raises(NotSerializable, match=f"job of shop.send to Celery: {named}"):
        check_arguments("shop.send", args, kwargs)


def test_an_exception_crosses_with_its_type_and_args() -> None:
    error = decode_error(from_json(to_json(encode_error(LookupError("word", 4)))))
    assert type(error) is LookupError and error.args == ("word", 4)


def test_an_exception_that_cannot_be_rebuilt_becomes_job_lost_with_its_text() -> None:
    error = decode_error(encode_error(Unbuildable("a", "b")))
    assert isinstance(error, JobLost)
    assert "test_celery_codec:Unbuildable: a/b" in str(error)


def test_the_envelope_is_kombus_redis_message_with_celerys_body() -> None:
    body = [["x"], {}, {"callbacks": None}]
    envelope = json.loads(envelope_of({"task": "taskrun.run"}, {"correlation_id": "j1"}, body, "q"))
    assert json.loads(base64.b64decode(envelope["body"])) == body
    assert envelope["headers"] == {"task": "taskrun.run"}
    properties = envelope["properties"]
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "q"}
    assert properties["body_encoding"] == "base64" and properties["correlation_id"] == "j1"


@pytest.mark.parametrize(
    ("options", "longest"),
    [
        (TaskOptions(), 0.0),
        (TaskOptions(retries=3, retry_delay=10, retry_backoff=2), 40.0),
        (TaskOptions(retries=50, retry_delay=1, retry_backoff=10, retry_backoff_max=600), 600.0),
    ],
)
def test_the_longest_retry_wait(options: TaskOptions, longest: float) -> None:
    assert longest_retry_wait(options) == longest


def test_a_timeout_or_back_off_past_the_visibility_timeout_is_refused() -> None:
    runner = TaskRunner(lock_path=None)

    @runner.task(timeout=7200)
    def slow() -> None: ...

    @runner.task(retries=5, retry_delay=60, retry_backoff=4, retry_backoff_max=7200)
    def patient() -> None: ...

    with pytest.raises(ConfigError, match=r"timeout=7200 s, longer than Redis's visibility"):
        check_task(slow, 3600)
    with pytest.raises(ConfigError, match=r"retry wait of 7200 s.*broker_visibility_timeout"):
        check_task(patient, 3600)
    check_task(patient, 7200)


def test_limits_held_per_worker_only_are_refused() -> None:
    runner = TaskRunner(lock_path=None)

    @runner.task(rate_limit="10/s")
    def throttled() -> None: ...

    with pytest.raises(ConfigError, match="rate_limit=.*cannot hold across Celery workers"):
        check_tasks([throttled])


def test_a_password_in_the_url_is_never_shown() -> None:
    assert redacted("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redacted("redis://app:s3cret@db/1") == "redis://app:***@db/1"
    assert redacted("redis://db:6379/0") == "redis://db:6379/0"
