"""The shared store's single writer: batches rows in memory and commits them together.

Request greenlets never wait for SQLite: they append rows to the open batch
(:meth:`BatchWriter.insert`, :meth:`BatchWriter.update`).  One writer
greenlet commits everything pending in one transaction, so a burst of a
thousand jobs costs one commit, and runs the store's maintenance round
every ``heartbeat`` seconds between batches.

SQL runs on the event loop by default: a commit costs no fsync (WAL with
``synchronous=NORMAL``), so a batch takes a few microseconds per row.  A
writer thread (``writer_thread=True``) keeps that work off the loop, but
the sqlite3 module takes the GIL back once per row, and while the loop is
busy each take waits for the interpreter's 5 ms switch interval: committing
500 jobs then took 3.6 ms per job instead of 12 us (``bench/README.md``,
"loop kept busy").  A file locked by another process never blocks the loop:
the statement fails at once and :class:`SqlRunner` yields and retries.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet
from gevent.threadpool import ThreadPool

from taskrun.errors import StoreError
from taskrun.jobs import FINISHED, Job
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import encode_result

__all__ = ["BUSY_LIMIT", "BatchWriter", "SqlRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: How long a lock held by another process may delay one statement before it fails.
BUSY_LIMIT = 30.0


class SqlRunner:
    """Runs ``fn(connection, *args)`` on the store's connection, waiting out locks by yielding.

    :param connect: opens the connection (called in the thread, if any).
    :param in_thread: run every call in a dedicated thread instead of on the loop.
    """

    def __init__(self, path: str, connect: Callable[[], sqlite3.Connection], in_thread: bool):
        self.path = path
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


class _Batch:
    """Rows to insert in one transaction, and the event set once they are committed."""

    __slots__ = ("inserts", "committed")

    def __init__(self) -> None:
        self.inserts: dict[str, tuple[Any, ...]] = {}
        self.committed = Event()


class BatchWriter:
    """Collects new and changed jobs and commits them in batches, from one greenlet.

    :param sql: runs the statements.
    :param token: this process's owner token, written on every row it owns.
    :param heartbeat: seconds between calls of ``maintain``.
    :param maintain: the store's maintenance round, run between batches.
    """

    def __init__(
        self, sql: SqlRunner, token: str, heartbeat: float, maintain: Callable[[], None]
    ) -> None:
        self._sql = sql
        self._token = token
        self._heartbeat = heartbeat
        self._maintain = maintain
        self._batch = _Batch()
        self._flushing: _Batch | None = None
        self._updates: dict[str, Job[Any]] = {}
        self._released: set[str] = set()
        self._wake = Event()
        self._next_round = 0.0
        self._closing = False
        self._greenlet: Greenlet[..., None] | None = None

    def start(self) -> None:
        """Start the writer greenlet; its first maintenance round runs at once."""
        self._closing = False
        self._greenlet = gevent.spawn(self._loop)

    def insert(self, job_id: str, row: tuple[Any, ...]) -> None:
        """Queue a new job's row (see :data:`~taskrun.stores.sqlite.db.INSERT_JOB`)."""
        self._batch.inserts[job_id] = row
        self._wake.set()

    def update(self, job: Job[Any]) -> None:
        """Queue ``job``'s current state; several changes before a commit write once."""
        self._updates[job.id] = job
        self._wake.set()

    def release(self, job: Job[Any]) -> None:
        """Queue ``job``'s current state with no owner: any live process may take it."""
        self._released.add(job.id)
        self.update(job)

    def discard(self, job_id: str) -> None:
        """Drop a queued, uncommitted job."""
        self._batch.inserts.pop(job_id, None)
        self._updates.pop(job_id, None)

    def uncommitted(self) -> set[str]:
        """Return the ids of new jobs whose rows are not committed yet."""
        flushing = self._flushing
        return set(self._batch.inserts) | (set(flushing.inserts) if flushing else set())

    def wait_committed(self, job_id: str) -> None:
        """Block the calling greenlet until the row of ``job_id`` is committed (if queued)."""
        flushing = self._flushing
        if flushing is not None and job_id in flushing.inserts:
            flushing.committed.wait()
            return
        batch = self._batch
        if job_id in batch.inserts:
            batch.committed.wait()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; ``False`` on timeout."""
        if self._batch.inserts or self._updates:
            self._wake.set()
            return self._batch.committed.wait(timeout)
        flushing = self._flushing
        return flushing is None or flushing.committed.wait(timeout)

    def round_now(self) -> None:
        """Run the maintenance round as soon as the writer is free."""
        self._next_round = 0.0
        self._wake.set()

    def close(self, timeout: float) -> int:
        """Commit what is queued and stop the greenlet.

        :returns: how many rows could not be committed (0 normally).
        """
        self._closing = True
        self._wake.set()
        greenlet = self._greenlet
        if greenlet is not None:
            greenlet.join(timeout=timeout)
            greenlet.kill(block=True, timeout=1)
        self._greenlet = None
        return len(self._batch.inserts) + len(self._updates)

    # -- the writer greenlet ---------------------------------------------------

    def _loop(self) -> None:
        self._next_round = 0.0
        while True:
            # The round comes first: a steady stream of batches must not
            # starve the heartbeat (other processes would take our jobs).
            if time.monotonic() >= self._next_round and not self._closing:
                self._next_round = time.monotonic() + self._heartbeat
                self._maintain()  # may call round_now() to run again at once
            if self._batch.inserts or self._updates:
                if not self._flush():
                    return
                continue
            if self._closing:
                return
            self._wake.clear()
            self._wake.wait(max(self._next_round - time.monotonic(), 0.0))

    def _flush(self) -> bool:
        """Commit the open batch and the queued changes; ``False`` if closing failed."""
        batch, self._batch = self._batch, _Batch()
        updates, self._updates = self._updates, {}
        released, self._released = self._released, set()
        token = self._token
        rows = [_update_row(job, token, job.id in released) for job in updates.values()]
        self._flushing = batch
        pause = 0.1
        while True:
            try:
                self._sql(db.write_batch, batch.inserts.values(), rows)
                break
            except (sqlite3.Error, StoreError) as error:
                logger.error(
                    "taskrun store %s: cannot commit %d job row(s) (%s); retrying in %.1f s",
                    self._sql.path,
                    len(batch.inserts) + len(rows),
                    error,
                    pause,
                )
                if self._closing and pause > 3:
                    self._batch.inserts.update(batch.inserts)  # counted by close()
                    return False
                gevent.sleep(pause)
                pause = min(pause * 2, 5.0)
        self._flushing = None
        batch.committed.set()
        return True


def _update_row(job: Job[Any], token: str, released: bool) -> tuple[Any, ...]:
    """The parameters of :data:`~.db.UPDATE_JOB` for the current state of ``job``."""
    runs = job._runs  # None until the job first starts, fails or finishes
    started = runs.started if runs is not None else None
    blob: bytes | None = None
    text: str | None = None
    finished: float | None = None
    if job.state in FINISHED:
        blob, text = encode_result(job)
        finished = runs.finished if runs is not None else None
    return (
        job.state.value,
        job.attempts,
        started,
        finished,
        job.due,
        blob,
        text,
        job.traceback,
        None if released else token,
        job.id,
        token,
    )
