"""A plain WSGI app holding a TaskRunner, served by taskrun's entry points in tests.

The runner is found through the module-level ``taskrun_runner``.  Every job
appends to the file named by ``$TASKRUN_TEST_OUT``: ``started <id> <pid>``
when it starts, ``finished <id> <pid>`` when it ends.

Routes (GET):

* ``/ping``: ``pong <pid>``
* ``/enqueue?id=ID&sleep=S``: enqueues a job that sleeps S seconds; ``<job id> <pid>``
* ``/slow?sleep=S``: notes ``request slow <pid>``, sleeps S seconds inside the
  request; ``slept <pid>``
* ``/hold?id=ID``: enqueues a greenlet job that waits until the file
  ``$TASKRUN_TEST_OUT.ID.release`` exists (or 20 s have passed); ``<job id> <pid>``
* ``/stubborn?id=ID``: enqueues a job that will not die when killed (it catches
  ``BaseException`` and goes on) until the file ``$TASKRUN_TEST_OUT.ID.release``
  exists (or 30 s have passed); ``<job id> <pid>``
* ``/resize?id=ID``: enqueues a job on the thread executor that resizes an
  image with Pillow over and over until the file ``$TASKRUN_TEST_OUT.ID.release``
  exists (or 20 s have passed); ``<job id> <pid>``
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from PIL import Image

from taskrun import TaskRunner

# Show taskrun's INFO lines (e.g. a gunicorn worker starting to drain) in the log.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

runner = TaskRunner(concurrency=10, max_pending=100, name="jobs-app-test", lock_path=None)
taskrun_runner = runner


def _note(line: str) -> None:
    with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
        out.write(f"{line} {os.getpid()}\n")


@runner.task
def record(name: str, seconds: float) -> str:
    """Note the start, sleep ``seconds`` (cooperatively, on a patched stdlib), note the end."""
    _note(f"started {name}")
    time.sleep(seconds)
    _note(f"finished {name}")
    return name


@runner.task
def hold(name: str) -> None:
    """Note the start, wait (cooperatively) until released, note the end."""
    _note(f"started {name}")
    release = f"{os.environ['TASKRUN_TEST_OUT']}.{name}.release"
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    _note(f"finished {name}")


@runner.task
def stubborn(name: str) -> str:
    """Note the start, then survive every kill until released; note the end."""
    _note(f"started {name}")
    release = f"{os.environ['TASKRUN_TEST_OUT']}.{name}.release"
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:  # noqa: B036 - the point: a job that will not die
            pass
    _note(f"finished {name}")
    return name


@runner.task(executor="thread")
def resize_until_released(name: str) -> int:
    """Note the start, resize with Pillow on a thread until told to stop, note the end."""
    _note(f"started {name}")
    release = f"{os.environ['TASKRUN_TEST_OUT']}.{name}.release"
    image = Image.new("RGB", (1200, 900), (90, 160, 30))
    rounds = 0
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        image.resize((640 + rounds % 2, 480), Image.Resampling.LANCZOS)
        rounds += 1
    _note(f"finished {name}")
    return rounds


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer the routes listed in the module docstring."""
    query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ.get("PATH_INFO", "/")
    pid = os.getpid()
    if path == "/ping":
        body = f"pong {pid}"
    elif path == "/enqueue":
        job = record.delay(query["id"], float(query.get("sleep", "0")))
        body = f"{job.id} {pid}"
    elif path == "/hold":
        job = hold.delay(query["id"])
        body = f"{job.id} {pid}"
    elif path == "/stubborn":
        job = stubborn.delay(query["id"])
        body = f"{job.id} {pid}"
    elif path == "/resize":
        job = resize_until_released.delay(query["id"])
        body = f"{job.id} {pid}"
    elif path == "/slow":
        _note("request slow")
        time.sleep(float(query.get("sleep", "1")))
        body = f"slept {pid}"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
