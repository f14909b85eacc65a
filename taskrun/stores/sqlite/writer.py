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
"loop kept busy").  A file locked by another process never blocks the loop
(see :mod:`taskrun.stores.sqlite.sql`).

The writer never dies and never fails silently.  A row that cannot be
encoded is stored as a FAILURE saying why (:mod:`~taskrun.stores.sqlite.rows`).
A commit that fails (a full disk, an I/O error, a corrupt page) is retried
with a back-off growing to :data:`MAX_RETRY_PAUSE`, logged once per kind of
error, and surfaced: while it keeps failing, :attr:`BatchWriter.failing`
holds a :class:`~taskrun.errors.StoreError` naming the file and the cause,
which ``delay()`` raises, and a worker waiting for its job's row gives up
after ``commit_wait`` seconds.  The maintenance round (the heartbeat) keeps
running between retries, so a failing batch does not get the process
declared dead.  Any other error of a round is logged by a
:class:`~taskrun.supervision.Supervisor` and the loop goes on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet
from gevent.hub import get_hub
from gevent.monkey import get_original

from taskrun import signals
from taskrun.errors import StoreError
from taskrun.jobs import Job
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import encode_meta
from taskrun.stores.sqlite.rows import failure_row, update_row
from taskrun.stores.sqlite.sql import BUSY_LIMIT, SqlRunner
from taskrun.supervision import Supervisor, guarded

__all__ = ["BUSY_LIMIT", "COMMIT_WAIT", "BatchWriter", "SqlRunner"]

logger = logging.getLogger(__name__)

#: How long a worker waits for its job's row to be committed before the job fails.
COMMIT_WAIT = 30.0
#: The first and the longest pause between retries of a failing commit.
FIRST_RETRY_PAUSE = 0.05
MAX_RETRY_PAUSE = 2.0
#: The shortest time between two writes of running jobs' meta (``Job.update``).
META_INTERVAL = 0.25
#: The OS thread's id (patched, ``threading.get_ident`` tells greenlets apart instead).
_thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
#: Seconds between probes for unowned jobs (submitted by processes that run none).
PICKUP_INTERVAL = 0.1


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
    :param maintain: the store's maintenance round, run between batches (and
        between the retries of a failing commit).
    :param commit_wait: seconds :meth:`wait_committed` waits before it gives up.
    :param pick_up: takes over unowned jobs; run every :data:`PICKUP_INTERVAL`
        seconds while the writer is idle, so that a job submitted by a process
        that runs none starts promptly.
    """

    def __init__(
        self,
        sql: SqlRunner,
        token: str,
        heartbeat: float,
        maintain: Callable[[], None],
        commit_wait: float = COMMIT_WAIT,
        pick_up: Callable[[], None] | None = None,
    ) -> None:
        self._sql = sql
        self._pick_up = pick_up
        self._next_pick_up = 0.0
        self._token = token
        self._heartbeat = heartbeat
        self._maintain = maintain
        self._commit_wait = commit_wait
        self._batch = _Batch()
        self._flushing: _Batch | None = None
        self._updates: dict[str, Job[Any]] = {}
        self._released: set[str] = set()
        # Jobs whose meta changed; pool threads write it too (see meta()).
        self._metas: dict[str, Job[Any]] = {}
        self._meta_due = 0.0
        self._hub_thread = _thread_ident()
        self._loop_handle: Any = None  # the hub's loop, to wake the writer from a pool thread
        self._thread_woke = False
        self._wake = Event()
        self._next_round = 0.0
        self._closing = False
        self._greenlet: Greenlet[..., None] | None = None
        self._loop_guard = Supervisor(f"the writer of the taskrun store {sql.path}", logger)
        self._round_guard = Supervisor(
            f"the maintenance round of the taskrun store {sql.path}", logger
        )
        #: Set while commits keep failing: what ``delay()`` raises meanwhile.
        self.failing: StoreError | None = None

    def start(self) -> None:
        """Start the writer greenlet; its first maintenance round runs at once."""
        self._closing = False
        self._hub_thread = _thread_ident()
        self._loop_handle = get_hub().loop
        self._greenlet = gevent.spawn(self._loop)

    def insert(self, job_id: str, row: tuple[Any, ...]) -> None:
        """Queue a new job's row (see :data:`~taskrun.stores.sqlite.db.INSERT_JOB`)."""
        self._batch.inserts[job_id] = row
        self._wake.set()

    def update(self, job: Job[Any]) -> None:
        """Queue ``job``'s current state; several changes before a commit write once."""
        self._updates[job.id] = job
        self._wake.set()

    def meta(self, job: Job[Any]) -> None:
        """Queue ``job``'s meta and blocked time; written at most every :data:`META_INTERVAL` s.

        Coalesced: the latest of several changes is written once.

        Safe from a pool thread: the thread sets a dict item and, once per
        write, wakes the writer through the loop's thread-safe callback.
        """
        self._metas[job.id] = job
        if _thread_ident() == self._hub_thread:
            self._wake.set()
        elif not self._thread_woke and self._loop_handle is not None:
            self._thread_woke = True
            self._loop_handle.run_callback_threadsafe(self._wake.set)

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
        """Block the calling greenlet until the row of ``job_id`` is committed (if queued).

        :raises StoreError: naming the file and the cause, if it is not
            committed within ``commit_wait`` seconds (commits keep failing).
        """
        flushing = self._flushing
        if flushing is not None and job_id in flushing.inserts:
            event = flushing.committed
        elif job_id in self._batch.inserts:
            event = self._batch.committed
        else:
            return
        if not event.wait(self._commit_wait):
            cause = self.failing or f"the writer did not commit within {self._commit_wait} s"
            raise StoreError(
                f"job {job_id}: its row was not committed to the taskrun store "
                f"{self._sql.path!r} within {self._commit_wait} s, so it does not run: {cause}"
            )

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
            try:
                if self._step():
                    return
            except Exception as error:
                self._wake.wait(self._loop_guard.failed(error, "committing a batch"))
            else:
                self._loop_guard.ok()

    def _step(self) -> bool:
        """One pass of the loop; ``True`` once the writer should stop."""
        # The round comes first: a steady stream of batches must not
        # starve the heartbeat (other processes would take our jobs).
        self._maybe_maintain()
        metas_due = bool(self._metas) and (self._closing or time.monotonic() >= self._meta_due)
        if self._batch.inserts or self._updates or metas_due:
            return not self._flush()
        if self._closing:
            return True
        wake_at = self._next_round
        if self._pick_up is not None:
            now = time.monotonic()
            if now >= self._next_pick_up:
                self._next_pick_up = now + PICKUP_INTERVAL
                guarded(self._round_guard, "picking up unowned jobs", self._pick_up)
            wake_at = min(wake_at, self._next_pick_up)
        self._wake.clear()
        if self._metas:
            wake_at = min(wake_at, self._meta_due)
        self._wake.wait(max(wake_at - time.monotonic(), 0.0))
        return False

    def _maybe_maintain(self) -> None:
        if time.monotonic() >= self._next_round and not self._closing:
            self._next_round = time.monotonic() + self._heartbeat
            # may call round_now() to run again at once
            guarded(self._round_guard, "renewing the lease and taking over jobs", self._maintain)

    def _flush(self) -> bool:
        """Commit the open batch and the queued changes; ``False`` if closing failed."""
        batch, self._batch = self._batch, _Batch()
        updates, self._updates = self._updates, {}
        released, self._released = self._released, set()
        token = self._token
        rows = [update_row(job, token, job.id in released) for job in updates.values()]
        metas = self._take_metas()
        self._flushing = batch
        pause = FIRST_RETRY_PAUSE
        failures = 0
        last_kind: tuple[type[BaseException], str] | None = None
        while True:
            try:
                began = time.perf_counter()
                self._sql(db.write_batch, batch.inserts.values(), rows, metas)
                if signals.store_committed.receivers:
                    took, count = time.perf_counter() - began, len(batch.inserts) + len(rows)
                    signals.send(signals.store_committed, self._sql.path, seconds=took, rows=count)
                break
            except (sqlite3.Error, StoreError) as error:
                failures += 1
                kind = (type(error), str(error))
                if kind != last_kind:
                    last_kind = kind
                    self._failed(error, len(batch.inserts) + len(rows))
                if self._closing and failures > 3:
                    self._batch.inserts.update(batch.inserts)  # counted by close()
                    return False
            except Exception as error:  # a row the driver refuses: isolate it
                try:
                    rows = self._isolate(batch, rows, error)
                except (sqlite3.Error, StoreError) as failed:
                    self._failed(failed, len(batch.inserts) + len(rows))
            gevent.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)
            self._maybe_maintain()  # keep the heartbeat going while commits fail
        self._flushing = None
        if self.failing is not None:
            logger.warning(
                "taskrun store %s: commits work again (after %d failed attempt(s))",
                self._sql.path,
                failures,
            )
            self.failing = None
        batch.committed.set()
        return True

    def _failed(self, error: BaseException, count: int) -> None:
        self.failing = StoreError(
            f"cannot write to the taskrun store {self._sql.path!r}: {error}; "
            f"{count} job row(s) wait to be committed (check that its disk is not full, "
            "and that the file is not corrupt: sqlite3 FILE 'PRAGMA integrity_check')"
        )
        logger.error("%s; retrying up to every %.1f s", self.failing, MAX_RETRY_PAUSE)

    def _take_metas(self) -> list[tuple[str | None, float | None, str, str]]:
        """Empty the queue of changed meta and blocked times into :data:`~.db.UPDATE_META` rows."""
        metas = self._metas
        if not metas:
            return []
        self._meta_due = time.monotonic() + META_INTERVAL
        self._thread_woke = False
        rows = []
        while metas:
            try:
                _, job = metas.popitem()  # atomic: a pool thread may add meanwhile
            except KeyError:
                break
            rows.append((encode_meta(job), job.blocked_for, job.id, self._token))
        return rows

    def _isolate(
        self, batch: _Batch, rows: list[tuple[Any, ...]], error: Exception
    ) -> list[tuple[Any, ...]]:
        """After ``error`` from the driver: drop inserts, turn updates it refuses into FAILUREs."""
        logger.error(
            "taskrun store %s: a job row could not be written (%s: %s); finding it",
            self._sql.path,
            type(error).__name__,
            error,
        )
        for job_id, row in list(batch.inserts.items()):
            try:
                self._sql(db.write_batch, [row], [])
            except (sqlite3.Error, StoreError):
                raise
            except Exception as bad:
                del batch.inserts[job_id]
                logger.error("job %s: its row cannot be stored (%r); dropped", job_id, bad)
        kept = []
        for row in rows:
            try:
                self._sql(db.write_batch, [], [row])
            except (sqlite3.Error, StoreError):
                raise
            except Exception as bad:
                kept.append(failure_row(row, f"its row cannot be stored ({type(bad).__name__})"))
            else:
                kept.append(row)
        return kept
