"""A plain WSGI app whose runner has one periodic job, every second.

Each run appends ``<pid> <slot>`` to ``$TASKRUN_TEST_OUT``, the slot being
the POSIX second the run is for (``pass_slot=True``), not when it ran.  The
worker processes share the leader lock file ``$TASKRUN_TEST_LOCK``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from taskrun import TaskRunner
from taskrun.schedules import every

taskrun_runner = TaskRunner(name="periodic-app-test", lock_path=os.environ["TASKRUN_TEST_LOCK"])


@taskrun_runner.periodic(every(seconds=1), pass_slot=True)
def tick(slot: datetime) -> None:
    """Record which process ran which slot."""
    with open(os.environ["TASKRUN_TEST_OUT"], "a") as out:
        out.write(f"{os.getpid()} {round(slot.timestamp())}\n")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with ``pong <pid>``."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pong {os.getpid()}".encode()]
