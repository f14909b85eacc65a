"""Which process runs which job of a shared store: leases, take-over and housekeeping.

Every process that opens the store holds a lease, renewed by a heartbeat
each maintenance round; it owns the jobs it accepted or took over.  A
process of this host key (see :mod:`~taskrun.stores.sqlite.procs`) counts
as dead only when its pid is gone (or reused, or a zombie): while it lives
its jobs stay its own, however long its loop stalls or however far the wall
clock steps.  A process seen from another host key counts as dead when its
heartbeat is older than the lease.  A live process then hands that
process's unfinished jobs back (running ones as PENDING) and takes them over
in batches, together with jobs handed back by a graceful shutdown.  Only
jobs of tasks this process has registered are taken, so a job of a task
that only another deploy knows waits for a process that knows it.

A process that stalls past half its lease starts no job until a heartbeat
renews it; if it had been declared dead meanwhile, the jobs others took
over are dropped here.  So a job runs in one process at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from taskrun.clock import Clock
from taskrun.errors import JobLost, StoreError
from taskrun.jobs import Job, JobState
from taskrun.stores.base import StoreHost
from taskrun.stores.memory import MemoryStore
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import JOB_COLUMN_COUNT, decode_payload, job_from_row
from taskrun.stores.sqlite.faults import Faults
from taskrun.stores.sqlite.procs import ProcessInfo
from taskrun.stores.sqlite.schema import connect
from taskrun.stores.sqlite.sql import SqlRunner
from taskrun.stores.sqlite.writer import BatchWriter
from taskrun.supervision import Supervisor, guarded

__all__ = ["CLAIM_LIMIT", "Leases"]

logger = logging.getLogger(__name__)

#: Most jobs taken over per maintenance round.
CLAIM_LIMIT = 500
#: Most finished jobs deleted per rule per housekeeping pass.
PRUNE_LIMIT = 20_000
#: Periodic slot claims are kept this long (seconds).
SLOT_KEEP = 7 * 86_400

Poll = Callable[[Job[Any], float | None], None]


class Leases:
    """This process's lease, its take-over of orphaned jobs and its housekeeping.

    :param local: this process's live jobs (shared with the store).
    :param finish: records a job the store ends itself (cancelled, unloadable).
    :param poll: makes a dropped local job's ``get()`` follow its row instead.
    """

    def __init__(
        self,
        sql: SqlRunner,
        me: ProcessInfo,
        lease: float,
        writer: BatchWriter,
        local: MemoryStore,
        clock: Clock,
        finish: Callable[[Job[Any]], None],
        poll: Poll,
    ) -> None:
        self._sql = sql
        self._me = me
        self._lease = lease
        self._writer = writer
        self._local = local
        self._clock = clock
        self._finish = finish
        self._poll = poll
        self.valid_until = time.monotonic() + lease / 2
        self.abandoned: set[str] = set()
        self._pick_up_error = ""
        self._housekeeper = _Housekeeper(sql.path, me, lease, self._reaped, sql.faults)

    def may_run(self, job: Job[Any]) -> bool:
        """Return whether ``job`` is still this process's; waits out a stalled lease.

        :raises StoreError: if the lease cannot be renewed within ``lease``
            seconds (the file cannot be written): the job fails visibly.
        """
        if time.monotonic() > self.valid_until:
            deadline = time.monotonic() + self._lease
            while time.monotonic() > self.valid_until and self._sql.is_open:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"job {job.id} ({job.name}) does not run: this process could not renew "
                        f"its lease in the taskrun store {self._sql.path!r} for {self._lease} s "
                        f"({self._writer.failing or 'see the errors logged'})"
                    )
                self._writer.round_now()
                gevent.sleep(0.05)
        return not (self.abandoned and job.id in self.abandoned)

    def maintain(
        self,
        host: StoreHost | None,
        oldest_kept: float,
        max_results: int,
        now: float | None = None,
    ) -> None:
        """One round: renew the lease, act on cancel requests, take over orphaned jobs.

        Starts a housekeeping pass (in its thread) whatever happens.

        :param now: the runner's time, against which tasks' own ``result_ttl`` count.
        :raises Exception: what a statement raised; the writer's supervisor
            logs it (once per kind) and runs the next round a heartbeat later.
        """
        started = time.monotonic()
        try:
            if self._sql(db.heartbeat, self._me.token, time.time()):
                self.valid_until = started + self._lease / 2
            else:
                self._rejoin()
            if host is not None:
                self._cancel_requested(host)
                if self._sql(db.has_unowned):
                    self._claim(host)
        finally:
            self._housekeeper.start(oldest_kept, max_results, now)

    def pick_up(self, host: StoreHost | None) -> None:
        """Take over unowned jobs now, if any (an index probe when there are none).

        Run between heartbeats (see :data:`~.writer.PICKUP_INTERVAL`) so that a
        job submitted by a process that runs none starts within a fraction of
        a second, not a heartbeat later.
        """
        if host is None or time.monotonic() > self.valid_until:
            return  # a stalled lease takes nothing until the heartbeat renews it
        try:
            # Only jobs this process can run: one of another deploy's task must
            # not cost a write transaction every probe.
            if self._sql(db.has_unowned_of, list(host.tasks)):
                self._claim(host)
        except (sqlite3.Error, StoreError) as error:
            if str(error) != self._pick_up_error:  # once per kind, not ten times a second
                self._pick_up_error = str(error)
                logger.error("taskrun store %s: picking up jobs failed: %s", self._sql.path, error)
        else:
            self._pick_up_error = ""

    def close(self) -> None:
        """Stop housekeeping (waits up to 5 s for a pass in progress)."""
        self._housekeeper.close()

    def _rejoin(self) -> None:
        """This process was declared dead (it stalled): keep what nobody took."""
        mine = [job for job in self._local if not job.ready()]
        kept = self._sql(db.keep_own, self._me, time.time(), [job.id for job in mine])
        kept |= self._writer.uncommitted()
        self.valid_until = time.monotonic() + self._lease / 2
        lost = [job for job in mine if job.id not in kept]
        for job in lost:
            self.abandoned.add(job.id)
            self._local.discard(job)
            job._run_record().poll = self._poll
        logger.error(
            "taskrun store %s: this process missed its heartbeat for over %s s and was "
            "declared dead; %d of its job(s) were taken over by other processes",
            self._sql.path,
            self._lease,
            len(lost),
        )

    def _cancel_requested(self, host: StoreHost) -> None:
        for job_id in self._sql(db.cancel_requests, self._me.token):
            job = self._local.get(job_id)
            if job is not None and not job.ready():
                logger.info("job %s (%s): cancelled from another process", job.id, job.name)
                host.cancel_job(job)

    def _claim(self, host: StoreHost) -> None:
        tasks = host.tasks
        rows = self._sql(db.claim, self._me.token, list(tasks), CLAIM_LIMIT)
        refused = 0
        for row in rows:
            job = job_from_row(row[:JOB_COLUMN_COUNT], tasks[row[1]], host)
            self._local.add(job)
            if row[JOB_COLUMN_COUNT]:  # cancel_requested
                self._end(job, JobState.CANCELLED, None, None)
            elif (problem := _payload_problem(row[3])) is not None:
                self._end(job, JobState.FAILURE, JobLost(problem), problem)
            elif refused or not host.resume_job(job):
                refused += 1
                self._local.discard(job)
                self._writer.release(job)
        if rows:
            # A dead process's jobs are reported when it is reaped; most unowned
            # jobs are simply submitted by processes that run none (shells, cron).
            logger.info(
                "taskrun store %s: took over %d unowned job(s) (submitted by processes that "
                "run none, or left by stopped or dead processes)%s",
                self._sql.path,
                len(rows) - refused,
                f"; {refused} handed back, the queue is full" if refused else "",
            )
        if len(rows) == CLAIM_LIMIT and not refused:
            self._writer.round_now()  # there may be more: take them without waiting a heartbeat

    def _end(self, job: Job[Any], state: JobState, value: Any, text: str | None) -> None:
        job._run_record().traceback = text
        job._finish(state, value, self._clock.time())
        self._finish(job)

    def _reaped(self, reaped: list[tuple[int, int]]) -> None:
        for pid, count in reaped:
            if not count:
                logger.info(
                    "taskrun store %s: process %d is gone; it held no job", self._sql.path, pid
                )
                continue
            logger.warning(
                "taskrun store %s: process %d is gone; its %d unfinished job(s) will run "
                "again in a live process",
                self._sql.path,
                pid,
                count,
            )
        if any(count for _, count in reaped):
            self._writer.round_now()  # take them over now, not a heartbeat later


def _payload_problem(payload: bytes) -> str | None:
    try:
        decode_payload(payload)
    except Exception as error:
        return f"the job's arguments cannot be loaded in this process: {error!r}"
    return None


class _Housekeeper:
    """Reaps dead processes, prunes old results and checkpoints, in a thread of its own.

    These statements may take milliseconds and fsync, so they never run on
    the event loop; each is a single SQLite call, so the thread seldom
    waits for the GIL.  Results are reported (and logged) in the hub.
    """

    def __init__(
        self,
        path: str,
        me: ProcessInfo,
        lease: float,
        reaped: Callable[[list[tuple[int, int]]], None],
        faults: Faults,
    ) -> None:
        self._path = path
        self._me = me
        self._lease = lease
        self._reaped = reaped
        self._faults = faults
        self._guard = Supervisor(f"housekeeping of the taskrun store {path}", logger)
        self._pool = ThreadPool(1)
        self._conn: sqlite3.Connection | None = None
        self._pending: Any = None

    def start(self, oldest_kept: float, max_results: int, now: float | None = None) -> None:
        """Start one pass unless one is still going; never blocks."""
        if self._pending is not None and not self._pending.ready():
            return
        self._pending = self._pool.spawn(self._work, oldest_kept, max_results, now)
        self._pending.rawlink(self._done)

    def _done(self, result: Any) -> None:
        outcome = result.value if result.successful() else result.exception
        if isinstance(outcome, BaseException):
            self._guard.failed(outcome, "reaping dead processes, pruning and checkpointing")
        elif outcome is not None:
            guarded(
                self._guard, "handing back jobs of dead processes", lambda: self._reaped(outcome)
            )

    def _work(
        self, oldest_kept: float, max_results: int, clock_now: float | None
    ) -> list[tuple[int, int]] | Exception:
        try:
            if self._conn is None:
                self._conn = connect(self._path)
                self._conn.execute("PRAGMA busy_timeout=2000")
            now = time.time()
            self._faults.check("reap_dead")
            found = db.reap_dead(self._conn, self._me, self._lease, now)
            self._faults.check("prune")
            kept_by = clock_now or now
            db.prune(self._conn, oldest_kept, max_results, now - SLOT_KEEP, PRUNE_LIMIT, kept_by)
            self._faults.check("checkpoint")
            db.checkpoint(self._conn)
        except Exception as error:
            return error  # raised out of the thread, it would reach the hub
        return found

    def close(self) -> None:
        """Wait briefly for a pass in progress, close the thread's connection, stop the thread."""
        if self._pending is not None:
            self._pending.wait(timeout=5)
        if self._conn is not None:
            self._pool.apply(self._conn.close)
            self._conn = None
        self._pool.kill()
