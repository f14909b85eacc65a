"""Fault injection for tests: make the store's own SQL fail, in its real code path.

Every statement the store runs goes through :class:`~taskrun.stores.sqlite.writer.SqlRunner`
(on the event loop or its thread) or the housekeeping thread, and each
asks the store's :class:`Faults` first.  A test arms a fault by statement
name (the function of :mod:`taskrun.stores.sqlite.db` that runs it, e.g.
``"write_batch"``, ``"heartbeat"``, ``"read_job"``, ``"reap_dead"``)::

    store = runner.store
    store.faults.disk_full("write_batch", times=3)      # the next 3 commits fail
    store.faults.fail("cancel_requests", RuntimeError("boom"))

The next ``times`` calls of that statement raise the error instead of
running; then it works again.  Nothing is armed unless a test arms it, and
an unarmed check is one dictionary lookup.  Test-only: an app never needs it.
"""

from __future__ import annotations

import sqlite3

__all__ = ["DISK_FULL", "Faults"]

#: The message SQLite gives for SQLITE_FULL.
DISK_FULL = "database or disk is full"


class Faults:
    """Armed faults by statement name: how many more calls fail, and with what."""

    def __init__(self) -> None:
        self._armed: dict[str, tuple[int, BaseException]] = {}
        #: How many calls failed on purpose, by statement name.
        self.raised: dict[str, int] = {}

    def fail(self, statement: str, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``statement`` raise ``error``."""
        self._armed[statement] = (times, error)

    def disk_full(self, statement: str = "write_batch", times: int = 1) -> None:
        """Make the next ``times`` calls of ``statement`` fail as on a full disk (SQLITE_FULL)."""
        self.fail(statement, sqlite3.OperationalError(DISK_FULL), times)

    def clear(self) -> None:
        """Disarm every fault."""
        self._armed.clear()

    def check(self, statement: str) -> None:
        """Raise the armed error for ``statement``, if any calls of it are still to fail."""
        if not self._armed:
            return
        armed = self._armed.get(statement)
        if armed is None:
            return
        times, error = armed
        if times <= 1:
            del self._armed[statement]
        else:
            self._armed[statement] = (times - 1, error)
        self.raised[statement] = self.raised.get(statement, 0) + 1
        raise error
