"""Running the store's SQL on its connection: on the event loop or a thread, waiting out locks.

A file locked by another process never blocks the loop: every statement
runs with ``busy_timeout=0``, so it fails at once, and :class:`SqlRunner`
yields and retries for up to :data:`BUSY_LIMIT` seconds.  Each call first
asks the store's :class:`~taskrun.stores.sqlite.faults.Faults` (test-only
fault injection; nothing is armed in an app).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.threadpool import ThreadPool

from taskrun.errors import StoreError
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.faults import Faults

__all__ = ["BUSY_LIMIT", "SqlRunner"]

T = TypeVar("T")
#: How long a lock held by another process may delay one statement before it fails.
BUSY_LIMIT = 30.0


class SqlRunner:
    """Runs ``fn(connection, *args)`` on the store's connection, waiting out locks by yielding.

    :param connect: opens the connection (called in the thread, if any).
    :param in_thread: run every call in a dedicated thread instead of on the loop.
    :param faults: faults a test armed (see :mod:`~taskrun.stores.sqlite.faults`).
    """

    def __init__(
        self,
        path: str,
        connect: Callable[[], sqlite3.Connection],
        in_thread: bool,
        faults: Faults | None = None,
    ):
        self.path = path
        self.faults = faults if faults is not None else Faults()
        self._pool = ThreadPool(1) if in_thread else None
        self._conn: sqlite3.Connection | None = self._run(connect)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            return fn(*args)
        ok, value = self._pool.apply(_catching, (fn, *args))
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)``; yield and retry while the file is locked.

        :raises sqlite3.Error: for any other error, or a lock held over
            :data:`BUSY_LIMIT` seconds.
        :raises StoreError: if the runner is closed.
        """
        deadline = time.monotonic() + BUSY_LIMIT
        pause = 0.001
        while True:
            conn = self._conn
            if conn is None:
                raise StoreError(f"the taskrun store {self.path!r} is closed")
            try:
                self.faults.check(getattr(fn, "__name__", ""))
                return self._run(fn, conn, *args)
            except sqlite3.OperationalError as error:
                if not db.is_busy(error) or time.monotonic() > deadline:
                    raise
            gevent.sleep(pause)
            pause = min(pause * 2, 0.05)

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        return self._conn is not None

    def close(self) -> None:
        """Close the connection (and stop the thread); idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._run(conn.close)
        if self._pool is not None:
            self._pool.kill()


def _catching(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    # In a pool thread: hand an exception back as a value, since one raised
    # out of the thread is reported to the hub as an unhandled error.
    try:
        return True, fn(*args)
    except Exception as error:
        return False, error
