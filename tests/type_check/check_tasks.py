"""Type-checked only (by mypy, never run): ``Task`` keeps the function's signature.

``@runner.task`` returns a ``Task[P, R]``: calling it inline returns ``R``,
``delay``/``apply_async`` return a ``Job[R]`` whose ``get()`` returns ``R``,
and ``delay`` with the wrong arguments is a type error.  Each ``# type:
ignore[...]`` below must match a real error: mypy's ``warn_unused_ignores``
(part of ``--strict``) fails the check if one stops being an error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, assert_type

from taskrun import Job, JobState, Task, TaskRunner, crontab, every

runner = TaskRunner()


@runner.task
def add(a: int, b: int) -> int:
    return a + b


@runner.task(retries=3, timeout=30, name="mail.welcome")
def send_welcome(user_id: int, *, greeting: str = "hello") -> str:
    return f"{greeting} {user_id}"


assert isinstance(add, Task)
assert_type(add(1, 2), int)
assert_type(add.delay(1, 2), Job[int])
assert_type(add.delay(1, 2).get(), int)
assert_type(add.delay(1, 2).get(timeout=5), int)
assert_type(add.apply_async(args=(1, 2), countdown=60), Job[int])
assert_type(send_welcome.delay(42, greeting="hi").get(), str)
assert_type(add.delay(1, 2).state, JobState)
assert_type(runner.job("some-id"), Job[Any] | None)

add.delay("1", 2)  # type: ignore[arg-type]
add.delay(1)  # type: ignore[call-arg]
send_welcome.delay(42, greting="hi")  # type: ignore[call-arg]
add(1, 2).upper()  # type: ignore[attr-defined]
runner.task(retries="3")  # type: ignore[call-overload]
runner.task(executor="process")  # type: ignore[call-overload]


@runner.periodic(every(minutes=5))
def poll_feeds() -> int:
    return 0


@runner.periodic(crontab("0 2 * * *"), pass_slot=True)
def nightly_report(slot: datetime) -> str:
    return slot.isoformat()


assert_type(poll_feeds, Task[[], int])
assert_type(nightly_report, Task[[datetime], str])
assert_type(nightly_report.delay(datetime.now(UTC)).get(), str)
nightly_report.delay()  # type: ignore[call-arg]
runner.periodic(every(minutes=5))(add)  # type: ignore[arg-type]
