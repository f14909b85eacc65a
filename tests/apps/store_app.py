"""A plain WSGI app whose workers share one SQLite store, for the shared-store tests.

The store file is ``$TASKRUN_TEST_STORE``.  With ``$TASKRUN_TEST_LOCK`` set,
the runner also has a periodic job every ``$TASKRUN_TEST_EVERY`` seconds
(default 1), run by the process holding that leader lock; each run appends
``<pid> <slot>`` to ``$TASKRUN_TEST_OUT``, the slot being the POSIX second
the run is for (passed to the job with ``pass_slot=True``), not when it ran.

Routes (GET), each answering with the pid of the worker that served it:

* ``/enqueue?value=V&sleep=S``: enqueues ``work(V, S)`` and answers once its
  row is committed (before that, other workers cannot see it); ``<job id> <pid>``
* ``/status?id=ID``: ``<state> <result> <pid>`` as ``runner.job(ID)`` sees it
  (404 when unknown)
* ``/wait?id=ID``: waits up to 15 s with ``job.get()``; ``<result> <pid>``
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from taskrun import TaskRunner
from taskrun.schedules import every

LOCK = os.environ.get("TASKRUN_TEST_LOCK")
runner = TaskRunner(
    concurrency=10,
    name="store-app-test",
    store=os.environ["TASKRUN_TEST_STORE"],
    lock_path=LOCK,
)
taskrun_runner = runner


@runner.task(name="store_app.work")
def work(value: str, seconds: float) -> str:
    """Sleep ``seconds`` (cooperatively) and return ``value`` doubled."""
    time.sleep(seconds)
    return value * 2


if LOCK:

    @runner.periodic(
        every(seconds=float(os.environ.get("TASKRUN_TEST_EVERY", "1"))),
        name="store_app.tick",
        pass_slot=True,
    )
    def tick(slot: datetime) -> None:
        """Record which process ran which slot."""
        with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
            out.write(f"{os.getpid()} {round(slot.timestamp())}\n")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer the routes listed in the module docstring."""
    query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ.get("PATH_INFO", "/")
    pid = os.getpid()
    status = "200 OK"
    if path == "/enqueue":
        job = work.delay(query["value"], float(query.get("sleep", "0")))
        runner.store.flush(timeout=5)  # committed: other workers can see it from now on
        body = f"{job.id} {pid}"
    elif path in ("/status", "/wait"):
        found = runner.job(query["id"])
        if found is None:
            status, body = "404 Not Found", f"unknown {pid}"
        elif path == "/wait":
            body = f"{found.get(timeout=15)} {pid}"
        else:
            body = f"{found.state.value} {found.result} {pid}"
    else:
        body = f"pong {pid}"
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]
