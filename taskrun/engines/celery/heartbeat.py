"""A ``taskrun worker``'s heartbeat in Redis: how web processes know the workers.

Every :data:`BEAT` seconds each worker writes a small record under
``taskrun:<name>:worker:<host>:<pid>`` (host, pid, concurrency, jobs running
now, when it started, when it wrote), which Redis forgets :data:`TTL`
seconds after the last write; the worker removes it when it stops.  The
web processes read them for ``runner.stats()["broker"]["workers"]`` and
the dashboard's processes page.  A worker killed outright drops out within
:data:`TTL` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import gevent

from taskrun.clock import Clock
from taskrun.engines.celery.records import Records
from taskrun.errors import BrokerError
from taskrun.supervision import Supervisor, guarded

__all__ = ["BEAT", "TTL", "beat_forever", "worker_name"]

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a worker.
BEAT = 5.0
#: Seconds Redis keeps a heartbeat: a worker that wrote none for this long is gone.
TTL = 3 * BEAT


def worker_name() -> str:
    """Return this process's name among the workers: ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat_forever(
    records: Records, clock: Clock, concurrency: int, running: Callable[[], int]
) -> None:
    """Write this worker's heartbeat every :data:`BEAT` s until killed; then remove it.

    A failed write (Redis away) is logged by the supervisor and retried
    after its back-off; the loop never ends on its own.
    """
    name = worker_name()
    host, _, pid = name.rpartition(":")
    started = clock.time()
    supervisor = Supervisor("the worker heartbeat", logger)

    def beat() -> None:
        info = {
            "host": host,
            "pid": int(pid),
            "concurrency": concurrency,
            "running": running(),
            "started": started,
            "seen": clock.time(),
        }
        records.beat(name, info, TTL)

    try:
        while True:  # the first heartbeat at once, so the worker shows as soon as it runs
            pause = guarded(supervisor, "writing the heartbeat to Redis", beat)
            gevent.sleep(BEAT + pause)
    finally:
        try:
            records.forget(name)
        except BrokerError as error:
            logger.warning("the worker's heartbeat stays in Redis until it expires: %s", error)
