"""Unique keys and per-task limits in the shared file: the SQL, and the store's side of it.

* ``unique_key``: a partial unique index on ``(task, unique_key)`` over
  unfinished jobs decides, under the write lock, so of several processes
  submitting one key at once exactly one inserts; the others get its id.
* ``max_running``: a ``running_slots`` row per running job of a limited task,
  counted (over live processes only) under the write lock before a start.
* ``rate_limit``: a ``rate_starts`` row per start, the window's rule being
  :func:`taskrun.limits.next_start`.

Each is one short transaction on the event loop, for limited tasks and
unique submissions only; other jobs never touch these tables.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from taskrun.errors import StoreError
from taskrun.jobs import Job
from taskrun.limits import next_start
from taskrun.stores.memory import MemoryStore
from taskrun.stores.sqlite.db import INSERT_JOB, write_transaction
from taskrun.stores.sqlite.writer import BUSY_LIMIT, BatchWriter, SqlRunner

__all__ = ["SharedLimits"]

logger = logging.getLogger(__name__)


class SharedLimits:
    """The SQLite store's unique keys, running slots and rate windows.

    :param sql: returns the store's SQL runner, ``None`` while it is closed.
    :param writer: returns the store's batch writer, ``None`` while closed.
    :param token: returns this process's owner token.
    :param local: this process's jobs; used for slots and windows while the store is closed.
    """

    def __init__(
        self,
        path: str,
        sql: Callable[[], SqlRunner | None],
        writer: Callable[[], BatchWriter | None],
        token: Callable[[], str],
        local: MemoryStore,
    ) -> None:
        self.path = path
        self._sql = sql
        self._writer = writer
        self._token = token
        self._local = local
        #: Finds a job by id, here or in the file (the store's ``get``).
        self.lookup: Callable[[str], Job[Any] | None] = local.get

    def forget(self, job: Job[Any]) -> None:
        """Delete the row :meth:`add_unique` committed for a job that was then refused."""
        sql = self._sql()
        if sql is not None:
            sql(delete_job, job.id)

    def add_unique(self, job: Job[Any], row: tuple[Any, ...]) -> Job[Any]:
        """Insert a job with a ``unique_key`` (``row``: see ``INSERT_JOB``) unless its key is held.

        Blocks the calling greenlet for one short transaction: the file's
        unique index decides, so of several processes submitting the same
        key at once exactly one inserts.

        :returns: ``job`` if it was inserted, else the unfinished job holding the key.
        :raises NotSerializable: if its arguments cannot be pickled.
        :raises StoreError: if the store is not open or the file cannot be written.
        """
        sql, writer = self._sql(), self._writer()
        if sql is None or writer is None:
            raise StoreError(
                f"the taskrun store {self.path!r} is not open; call runner.start() first"
            )
        for _ in range(2):
            try:
                held_id = sql(insert_unique, row)
            except sqlite3.Error as error:
                raise StoreError(
                    f"cannot record job {job.id} ({job.name}) with unique_key "
                    f"{job.unique_key!r} in {self.path!r}: {error}"
                ) from error
            if held_id is None:
                self._local.add(job)
                return job
            held = self.lookup(held_id)
            if held is not None and not held.ready():
                return held
            # It finished here but its outcome is not committed yet: commit, try again.
            writer.flush(timeout=BUSY_LIMIT)
        raise StoreError(
            f"job {held_id} holds unique_key {job.unique_key!r} of {job.name!r} in "
            f"{self.path!r} but cannot be read; retry the submission"
        )

    def take_running_slot(self, job: Job[Any], limit: int) -> bool:
        """Take a running slot of ``job``'s task, counted over every process of the file.

        Blocks the calling greenlet for one short transaction.  ``False``
        (try later) when all ``limit`` are held, or the file cannot be written.
        """
        sql = self._sql()
        if sql is None:
            return self._local.take_running_slot(job, limit)
        try:
            return sql(take_running_slot, job.id, job.name, limit, self._token())
        except (sqlite3.Error, StoreError) as error:
            logger.error(
                "job %s (%s): cannot take a running slot in %s (%s); trying again shortly",
                job.id,
                job.name,
                self.path,
                error,
            )
            return False

    def free_running_slot(self, job: Job[Any]) -> None:
        """Give back ``job``'s running slot (one short statement)."""
        sql = self._sql()
        if sql is None:
            self._local.free_running_slot(job)
            return
        try:
            sql(free_running_slot, job.id)
        except (sqlite3.Error, StoreError) as error:
            logger.error(
                "job %s (%s): cannot give back its running slot in %s (%s); it is freed when "
                "this process stops",
                job.id,
                job.name,
                self.path,
                error,
            )

    def reserve_start(
        self, task_name: str, starts: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record a start of ``task_name`` in its rate window, shared by every process of the file.

        Blocks the calling greenlet for one short transaction.

        :returns: ``(True, the start recorded)``, else ``(False, when the next
            start is allowed)`` (a second from now if the file cannot be written).
        """
        sql = self._sql()
        if sql is None:
            return self._local.reserve_start(task_name, starts, window, now)
        try:
            return sql(reserve_start, task_name, starts, window, now)
        except (sqlite3.Error, StoreError) as error:
            logger.error(
                "task %s: cannot record a start in %s (%s); trying again in 1 s",
                task_name,
                self.path,
                error,
            )
            return False, now + 1.0


def insert_unique(conn: sqlite3.Connection, row: tuple[Any, ...]) -> str | None:
    """Insert a job with a unique key (a row of :data:`INSERT_JOB`) unless one holds the key.

    The partial unique index on ``(task, unique_key)`` of unfinished jobs
    decides, under the write lock, so two processes never both insert.

    :returns: ``None`` if inserted, else the id of the unfinished job holding the key.
    """
    with write_transaction(conn):
        if conn.execute(INSERT_JOB, row).rowcount:
            return None
        held = conn.execute(
            "SELECT id FROM jobs WHERE task = ? AND unique_key = ? AND finished IS NULL",
            (row[1], row[9]),
        ).fetchone()
    if held is None:  # the insert was ignored for its id, not its key: never for a fresh id
        raise sqlite3.IntegrityError(f"job id {row[0]!r} is already in the store")
    return str(held[0])


def delete_job(conn: sqlite3.Connection, job_id: str) -> None:
    """Delete the row of a job that was never admitted."""
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


# -- the SQL ---------------------------------------------------------------------


def take_running_slot(
    conn: sqlite3.Connection, job_id: str, task: str, limit: int, token: str
) -> bool:
    """Take a running slot of ``task`` for ``job_id`` if fewer than ``limit`` are held.

    Slots of processes that are gone (no row in ``processes``) do not count,
    and are deleted.
    """
    with write_transaction(conn):
        held = conn.execute(
            "SELECT count(*) FROM running_slots JOIN processes ON processes.token = "
            "running_slots.owner WHERE running_slots.task = ? AND running_slots.job != ?",
            (task, job_id),
        ).fetchone()[0]
        if held >= limit:
            conn.execute(
                "DELETE FROM running_slots WHERE task = ? "
                "AND owner NOT IN (SELECT token FROM processes)",
                (task,),
            )
            return False
        conn.execute(
            "INSERT OR REPLACE INTO running_slots (job, task, owner) VALUES (?, ?, ?)",
            (job_id, task, token),
        )
    return True


def free_running_slot(conn: sqlite3.Connection, job_id: str) -> None:
    """Give back the running slot of ``job_id``."""
    conn.execute("DELETE FROM running_slots WHERE job = ?", (job_id,))


def reserve_start(
    conn: sqlite3.Connection, task: str, starts: int, window: float, now: float
) -> tuple[bool, float]:
    """Record a start of ``task`` at ``now`` unless ``starts`` began in the last ``window`` s.

    Processes' clocks read a hair apart: a start is never recorded before
    the latest one, so the recorded starts are in order and the window rule
    holds over them exactly.

    :returns: ``(True, the start recorded)``, else ``(False, the POSIX time
        the next start is allowed)``.
    """
    with write_transaction(conn):
        conn.execute(
            "DELETE FROM rate_starts WHERE task = ? AND started <= ?", (task, now - window)
        )
        stamps = [
            row[0]
            for row in conn.execute(
                "SELECT started FROM rate_starts WHERE task = ? ORDER BY started", (task,)
            )
        ]
        if stamps:
            now = max(now, stamps[-1])
        wait = next_start(stamps, starts, window, now)
        if wait:
            return False, wait
        conn.execute("INSERT INTO rate_starts (task, started) VALUES (?, ?)", (task, now))
    return True, now
