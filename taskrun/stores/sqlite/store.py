"""The shared, durable job store: one SQLite file per machine, shared by every worker process.

``TaskRunner(store="sqlite:////var/lib/shop/taskrun.db")`` (or a plain path;
with the Flask extension, ``TASKRUN_STORE``) keeps every accepted job in the
file: jobs survive a crash or a deploy, any worker process can look up any
job, and each periodic slot is claimed once.  Only the ``sqlite3`` module
that ships with Python is needed.  The file must be on a local disk (SQLite's
WAL mode does not work over NFS).

**The guarantee.**  A job is *durable* once the batch holding its row is
committed: normally within a millisecond or two after ``delay()`` or
``apply_async()`` returns, and always before the job starts.  From then on
it runs to an outcome (SUCCESS, FAILURE after its retries, or CANCELLED) at
least once:

* a process killed outright (``kill -9``, the OOM killer) leaves its pending,
  scheduled, retrying and running jobs in the file; a live process sharing
  the file notices the dead pid within about a second and takes them over,
  or the next process started on the file does; a job that was running runs
  again from the start, and a scheduled job still runs at its time;
* a live process is never declared dead by another process of the same
  machine (and pid namespace), however long its loop stalls or however far
  the wall clock steps: its pid and start time say it lives.  A process seen
  from another host key (another container) that misses its 30 s lease is
  treated as dead (and, when it wakes up, starts none of the jobs taken from it);
* a graceful shutdown hands back the jobs still running or waiting at its
  deadline, for a live process or the next start to run; a job that fails
  during the drain with retries left is handed back as RETRY, due after its
  back-off, rather than ending FAILURE.

What is *not* covered: a crash in the millisecond between ``delay()``
returning and the commit loses that job (call ``runner.store.flush()``
first where the caller must know the job is on disk, e.g. before answering
"accepted"; it also makes the job visible to the other workers), and a
power cut may lose the last commits (``synchronous=NORMAL``).

**Failing loudly.**  An outcome that cannot be stored (a result that
cannot be pickled and whose ``repr`` raises, one nested too deeply) is
stored as a FAILURE saying why.  A commit that keeps failing (a full disk,
an I/O error) is retried with a back-off and logged once per kind of
error; meanwhile ``delay()`` raises :class:`~taskrun.errors.StoreError`
naming the file and the cause, a job whose row is not committed within
``commit_wait`` seconds fails with that error, and ``flush(timeout)``
returns ``False``.  Once commits work again, everything proceeds.

**The file is a trust boundary.**  It holds pickles, so whoever can write
it can run code as the app.  Opening refuses (with
:class:`~taskrun.errors.StoreError` naming the file, its owner and mode,
and the fix) a store file, or an existing ``-wal``/``-shm`` beside it,
that another user owns or whose mode lets the group or others read or
write it: ``chown`` it to the app's user and ``chmod 600`` it.  New files
are created with mode 0600.

**Idempotent tasks.**  A job that was running when its process died runs
again, so a task should be safe to run twice: key its side effects by its
arguments (``INSERT ... ON CONFLICT DO NOTHING`` on an order id, "send the
welcome mail unless ``user.welcomed_at`` is set", an idempotency key passed
to the payment API), or check at the start whether the work is already done.

**How it stays fast.**  Request greenlets never call SQLite: ``add`` pickles
the arguments (an argument that cannot be pickled, or whose pickle is larger
than ``max_arg_bytes``, fails at once with
:class:`~taskrun.errors.NotSerializable`) and queues a row; state changes
queue the job.  One writer greenlet commits whatever is queued in one
transaction (see :mod:`taskrun.stores.sqlite.writer`), and a worker starts a job
only once its row is committed (:meth:`SqliteStore.before_run`).  Which
process runs which job is :mod:`taskrun.stores.sqlite.leases`; unique keys,
running slots and rate windows are :mod:`taskrun.stores.sqlite.limits`; the
schema and its migrations are :mod:`taskrun.stores.sqlite.schema`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from taskrun.clock import Clock
from taskrun.errors import StoreError
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.stores.base import StoreHost
from taskrun.stores.memory import MemoryStore
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import DEFAULT_MAX_ARG_BYTES, encode_payload
from taskrun.stores.sqlite.faults import Faults
from taskrun.stores.sqlite.files import create_file, store_path
from taskrun.stores.sqlite.leases import Leases
from taskrun.stores.sqlite.limits import SharedLimits
from taskrun.stores.sqlite.procs import this_process
from taskrun.stores.sqlite.queries import record_minute
from taskrun.stores.sqlite.remote import RemoteJobs
from taskrun.stores.sqlite.schema import connect, migrate
from taskrun.stores.sqlite.sql import BUSY_LIMIT, SqlRunner
from taskrun.stores.sqlite.views import SqliteViews
from taskrun.stores.sqlite.writer import COMMIT_WAIT, BatchWriter
from taskrun.validation import seconds

__all__ = ["SqliteStore", "StoreHost", "store_path"]

logger = logging.getLogger(__name__)


class SqliteStore(SqliteViews):
    """Jobs in a shared SQLite file: durable, visible to every process, slots claimed once.

    Made by ``TaskRunner(store=...)``; its methods are called from the
    runner's greenlets, in one process (open it after any fork).  Finished
    jobs are kept ``result_ttl`` seconds, at most ``max_results`` of them
    in the file (and, as live objects, in this process).

    :param path: the file (or ``sqlite://`` URL); created with mode 0600 if missing.
    :param host: the runner, to take over jobs of dead processes.
    :param heartbeat: seconds between maintenance rounds (lease renewal,
        take-over, cancel requests, housekeeping).
    :param lease: seconds without a heartbeat after which a process counts as dead.
    :param writer_thread: run SQLite calls in a thread instead of on the
        event loop (for measurements: it is much slower while the loop is busy,
        see :mod:`taskrun.stores.sqlite.writer`).
    :param max_arg_bytes: the largest pickled arguments a job may have.
    :param commit_wait: seconds a worker waits for its job's row to be
        committed before the job fails with :class:`~taskrun.errors.StoreError`.
    :raises ConfigError: if ``path`` names no file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        result_ttl: float,
        max_results: int,
        host: StoreHost | None = None,
        heartbeat: float = 1.0,
        lease: float = 30.0,
        writer_thread: bool = False,
        max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
        commit_wait: float = COMMIT_WAIT,
    ) -> None:
        self.path = store_path(path)
        self._clock = clock
        self._ttl = result_ttl
        self._max = max_results
        self._host = host
        self._heartbeat = heartbeat
        self._lease = lease
        self._writer_thread = writer_thread
        self._max_arg_bytes = max_arg_bytes
        self._commit_wait = commit_wait
        #: Test-only fault injection in the store's real SQL path (see
        #: :mod:`taskrun.stores.sqlite.faults`); nothing is armed by default.
        self.faults = Faults()
        self._local = MemoryStore(clock, result_ttl, max_results)
        self._sql: SqlRunner | None = None
        self._writer: BatchWriter | None = None
        self._leases: Leases | None = None
        self._token = ""
        self._recorded_minute = 0
        self._remote = RemoteJobs(self.path, clock, lambda: self._sql, self._task)
        self._limits = SharedLimits(
            self.path, lambda: self._sql, lambda: self._writer, lambda: self._token, self._local
        )
        self._limits.lookup = self.get

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path!r} open={self.is_open}>"

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has run and :meth:`close` has not."""
        return self._sql is not None

    # -- life cycle ------------------------------------------------------------

    def open(self) -> None:
        """Create or check the file, migrate it, register this process, start the writer.

        Blocks the calling greenlet briefly (the event loop runs on).  Idempotent.

        :raises StoreError: naming the file and the fix, if it is corrupt,
            from a newer taskrun, not writable, locked for too long, owned by
            another user or open to the group or others (see the module doc).
        """
        if self._sql is not None:
            return
        create_file(self.path)
        sql = SqlRunner(
            self.path,
            lambda: connect(self.path, check_same_thread=not self._writer_thread),
            self._writer_thread,
            self.faults,
        )
        me = this_process()
        try:
            sql(lambda conn: migrate(conn, self.path))
            sql(db.register, me, time.time())
        except sqlite3.Error as error:
            sql.close()
            raise StoreError(
                f"cannot open the taskrun store {self.path!r}: {error}; check that no other "
                "program holds it locked and that its disk is not full"
            ) from error
        except BaseException:
            sql.close()
            raise
        self._sql = sql
        self._token = me.token
        self._writer = BatchWriter(
            sql, me.token, self._heartbeat, self._maintain, self._commit_wait, self._pick_up
        )
        self._leases = Leases(
            sql,
            me,
            self._lease,
            self._writer,
            self._local,
            self._clock,
            self.finish,
            self._remote.poll,
        )
        self._writer.start()
        logger.info("taskrun store %s open (process token %s)", self.path, me.token)

    def close(self) -> None:
        """Commit everything pending, hand back unfinished jobs, unregister; idempotent."""
        sql, writer, leases = self._sql, self._writer, self._leases
        if sql is None or writer is None or leases is None:
            return
        lost = writer.close(timeout=BUSY_LIMIT)
        if lost:
            logger.error(
                "taskrun store %s: %d job row(s) could not be committed on close", self.path, lost
            )
        try:
            count = sql(db.release_all, self._token)
        except (sqlite3.Error, StoreError) as error:
            logger.error("taskrun store %s: could not hand back jobs: %s", self.path, error)
        else:
            if count:
                logger.warning(
                    "taskrun store %s: handed %d unfinished job(s) back; a live process or the "
                    "next start runs them",
                    self.path,
                    count,
                )
        leases.close()
        sql.close()
        self._sql = self._writer = self._leases = None

    def flush(self, timeout: float | timedelta | None = None) -> bool:
        """Wait until every job added or changed so far is committed to the file.

        Use it where a caller must know a job is on disk, and visible to the
        other processes, before going on (``delay()`` returns a millisecond or
        two before that): e.g. before answering "202 Accepted" with a status
        URL that another worker may serve.

        :param timeout: seconds (or a ``timedelta``); ``None`` waits as long as it takes.
        :returns: ``False`` if ``timeout`` seconds passed first (e.g. while
            commits keep failing).
        :raises ConfigError: for a negative or non-numeric ``timeout``.
        """
        wait = None if timeout is None else seconds("timeout", timeout)
        return self._writer is None or self._writer.flush(wait)

    # -- the ResultStore interface -------------------------------------------------

    def add(self, job: Job[Any]) -> None:
        """Queue a new job's row; it is committed before the job can run.

        :raises NotSerializable: if its arguments cannot be pickled, or their
            pickle is larger than ``max_arg_bytes``.
        :raises StoreError: if the store is not open, or while commits keep
            failing (naming the file and the cause).
        """
        writer = self._writer
        if writer is None:
            raise StoreError(
                f"the taskrun store {self.path!r} is not open; call runner.start() first"
            )
        if writer.failing is not None:
            raise writer.failing
        writer.insert(job.id, self._row(job))
        self._local.add(job)

    def _row(self, job: Job[Any]) -> tuple[Any, ...]:
        """The parameters of :data:`~taskrun.stores.sqlite.db.INSERT_JOB` for a new job."""
        runs = job._runs
        return (
            job.id,
            job.name,
            job.state.value,
            encode_payload(job.name, job.args, job.kwargs, self._max_arg_bytes),
            job.attempts,
            job._enqueued,
            job.due,
            self._token,
            None if runs is None else runs.expires,
            None if runs is None else runs.unique_key,
            job.task.options.result_ttl,
        )

    def add_unique(self, job: Job[Any]) -> Job[Any]:
        """Insert a job with a ``unique_key`` now, unless an unfinished job of its task has it.

        See :meth:`~taskrun.stores.sqlite.limits.SharedLimits.add_unique`.
        """
        return self._limits.add_unique(job, self._row(job))

    def save_meta(self, job: Job[Any]) -> None:
        """Queue ``job.meta`` and ``job.blocked_for``; the latest is written about every 0.25 s."""
        if self._writer is not None:
            self._writer.meta(job)

    def take_running_slot(self, job: Job[Any], limit: int) -> bool:
        """Take a running slot of ``job``'s task, counted over every process of the file."""
        return self._limits.take_running_slot(job, limit)

    def free_running_slot(self, job: Job[Any]) -> None:
        """Give back ``job``'s running slot."""
        self._limits.free_running_slot(job)

    def reserve_start(
        self, task_name: str, starts: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record a start of ``task_name`` in its rate window, shared by every process."""
        return self._limits.reserve_start(task_name, starts, window, now)

    def check_arguments(self, job: Job[Any]) -> None:
        """Check that ``job``'s arguments can be kept; any thread may call it.

        A runner on a thread of its own calls it on the submitting thread
        (see :mod:`taskrun.modes`), so that the error reaches ``delay()``.

        :raises NotSerializable: as :meth:`add` would.
        """
        encode_payload(job.name, job.args, job.kwargs, self._max_arg_bytes)

    def discard(self, job: Job[Any]) -> None:
        """Forget a job just added whose admission was refused."""
        if self._writer is not None:
            self._writer.discard(job.id)
        if job.unique_key is not None and self._sql is not None:
            self._limits.forget(job)  # add_unique committed its row at once
        self._local.discard(job)

    def update(self, job: Job[Any]) -> None:
        """Queue ``job``'s new state; the writer commits it with the next batch."""
        if self._writer is not None:
            self._writer.update(job)

    def finish(self, job: Job[Any]) -> None:
        """Queue ``job``'s outcome; the writer commits it with the next batch."""
        self._local.finish(job)
        if self._writer is not None:
            self._writer.update(job)

    def before_run(self, job: Job[Any]) -> bool:
        """Wait until ``job``'s row is committed; ``False`` if another process owns it now.

        :raises StoreError: if the row is not committed within ``commit_wait``
            seconds, or the lease cannot be renewed: the job fails with it.
        """
        writer, leases = self._writer, self._leases
        if writer is None or leases is None:
            return True
        if not leases.may_run(job):
            return False
        writer.wait_committed(job.id)
        return not (leases.abandoned and job.id in leases.abandoned)

    def release(self, job: Job[Any]) -> bool:
        """Hand an unfinished job back at shutdown: it stays in the file for another process."""
        if job.state is JobState.STARTED:
            job.state = JobState.PENDING
        if self._writer is not None:
            self._writer.release(job)
        return True

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim the periodic run ``(task_name, slot)`` for this process, atomically in the file.

        Blocks the calling greenlet (not the loop) for one short transaction.

        :returns: ``True`` if no process had claimed it (so this one runs it);
            ``False`` also when the file cannot be written (the slot is
            skipped and logged: a slot never runs twice).
        """
        sql = self._sql
        if sql is None:
            raise StoreError(f"the taskrun store {self.path!r} is not open; start the runner")
        try:
            return sql(db.claim_slot, task_name, slot, self._token, time.time())
        except (sqlite3.Error, StoreError) as error:
            logger.error(
                "periodic job %s: cannot claim slot %s in %s (%s); skipping it",
                task_name,
                slot,
                self.path,
                error,
            )
            return False

    def last_slot(self, task_name: str) -> float | None:
        """Return the latest claimed slot of ``task_name`` (any process), or ``None``.

        Read once per periodic task at start, so that slots missed while no
        process ran get their catch-up run.
        """
        sql = self._sql
        if sql is None:
            raise StoreError(f"the taskrun store {self.path!r} is not open; start the runner")
        try:
            return sql(db.last_slot, task_name)
        except (sqlite3.Error, StoreError) as error:
            logger.error(
                "periodic job %s: cannot read its last slot in %s (%s)", task_name, self.path, error
            )
            return None

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, from this process or from the file.

        Blocks the calling greenlet for one indexed read when the job is not
        this process's.  Such a job is a snapshot whose ``get(timeout)``
        polls the file (every 50 ms, growing to 500 ms) and whose
        ``cancel()`` cancels it at once if no process owns it, else asks its
        owner, which stops it within about a heartbeat (both return ``True``).
        """
        job = self._local.get(job_id)
        if job is not None or self._sql is None:
            return job
        return self._remote.load(job_id)

    def __iter__(self) -> Iterator[Job[Any]]:
        """Iterate over this process's jobs (for statistics)."""
        return iter(self._local)

    def __len__(self) -> int:
        """Return how many jobs this process keeps."""
        return len(self._local)

    def _views_sql(self) -> SqlRunner | None:
        return self._sql

    def _task(self, name: str) -> TaskLike | None:
        return self._host.tasks.get(name) if self._host is not None else None

    def _pick_up(self) -> None:
        if self._leases is not None:
            self._leases.pick_up(self._host)

    def _maintain(self) -> None:
        if self._leases is not None:
            now = self._clock.time()
            self._leases.maintain(self._host, now - self._ttl, self._max, now)
        self._record_minute()

    def _record_minute(self) -> None:
        """Once a minute, record the last whole minute's outcomes for the dashboard's charts."""
        minute = int(time.time() // 60) - 1
        if minute <= self._recorded_minute or self._sql is None:
            return
        self._recorded_minute = minute
        try:
            self._sql(record_minute, minute)
        except (sqlite3.Error, StoreError) as error:
            logger.error("taskrun store %s: cannot record minute %d: %s", self.path, minute, error)
