"""Type-checked only (by mypy, never run): progress meta, unique keys, limits, Retry, retry().

Each ``# type: ignore[...]`` below must match a real error (``--strict``
warns about unused ones).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, assert_type

from taskrun import Job, Retry, TaskRunner, current_job

runner = TaskRunner()


@runner.task(max_running=2, rate_limit="10/s", retry_backoff_max=timedelta(minutes=10))
def process(total: int) -> dict[str, int]:
    job = current_job()
    assert_type(job, Job[Any])
    job.update(current=1, total=total)
    if total < 0:
        raise Retry(countdown=30, exc=ValueError("negative"))
    return {"current": total, "total": total}


@runner.task(ignore_result=True, result_ttl=timedelta(minutes=5))
def send_welcome(user_id: int) -> None: ...


job = process.apply_async(args=(4,), unique_key="process:4", expires=300)
assert_type(job, Job[dict[str, int]])
assert_type(job.meta, dict[str, Any])
assert_type(job.retry(), Job[dict[str, int]])
send_welcome.apply_async(args=(42,), expires=datetime.now(UTC) + timedelta(minutes=5))
send_welcome.apply_async(args=(42,), expires=timedelta(seconds=30))
send_welcome.apply_async(args=(42,), unique_key=42)  # type: ignore[arg-type]
runner.task(max_running="2")  # type: ignore[call-overload]
