"""The celery bench's two apps: a no-op task on taskrun's Celery engine, and on plain Celery.

Both read the broker from ``BENCH_REDIS``.  ``taskrun worker celery_apps:app``
runs the first (the module's ``taskrun_runner``); ``celery -A celery_apps:plain
worker -P gevent`` the second.  Plain Celery is tuned as taskrun tunes it
(JSON, late acks, prefetch 1 per slot, no events, gossip, mingle or
heartbeat, a thread-safe result backend); it keeps results in Redis, as it
must for ``AsyncResult.get()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery

from taskrun import TaskRunner

URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")

taskrun_runner = TaskRunner(name="bench", broker=URL, lock_path=None)


@taskrun_runner.task(name="bench.noop")
def noop() -> None:
    """Do nothing: the bench measures the carrying."""


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app for ``taskrun worker`` to load (the worker serves no requests)."""
    start_response("204 No Content", [])
    return []


plain = Celery("bench-plain", broker=URL, backend=URL, set_as_current=False)
plain.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench.plain",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    result_backend_thread_safe=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
)


@plain.task(name="bench.plain_noop")
def plain_noop() -> None:
    """Do nothing, on plain Celery."""
