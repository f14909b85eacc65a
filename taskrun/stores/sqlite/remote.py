"""Jobs of other processes, seen through the shared store: look up, wait, cancel.

``runner.job(id)`` for a job this process does not hold reads its row and
returns a snapshot :class:`~taskrun.jobs.Job`.  Its ``get(timeout)`` polls
the row (every 50 ms, growing to 500 ms) until the job finishes; its
``cancel()`` cancels it in the file at once when no process owns it, and
otherwise flags the row for its owner, which stops it within about one
heartbeat.  Each call is one short indexed statement.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import gevent

from taskrun.clock import Clock
from taskrun.errors import JobLost, StoreError
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import job_from_row, refresh_from_row
from taskrun.stores.sqlite.sql import SqlRunner

__all__ = ["RemoteJobs"]


class RemoteJobs:
    """Look up, wait on and cancel jobs that live only in the file.

    :param sql: returns the store's open SQL runner, or ``None`` when closed.
    :param task: returns this process's task of a given name, if any.
    """

    def __init__(
        self,
        path: str,
        clock: Clock,
        sql: Callable[[], SqlRunner | None],
        task: Callable[[str], TaskLike | None],
    ) -> None:
        self._path = path
        self._clock = clock
        self._sql = sql
        self._task = task

    def load(self, job_id: str) -> Job[Any] | None:
        """Return a snapshot of the job's row, or ``None`` if the file has no such job.

        :raises StoreError: if the file cannot be read.
        """
        row = self._read(job_id)
        if row is None:
            return None
        job = job_from_row(row, self._task(row[1]), self)
        if not job.ready():
            job._run_record().poll = self.poll
        return job

    def cancel_job(self, job: Job[Any]) -> bool:
        """Cancel ``job`` in the file or ask its owner to; ``False`` if it had finished."""
        sql = self._sql()
        if sql is None:
            return False
        now = self._clock.time()
        try:
            outcome = sql(db.request_cancel, job.id, now)
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot cancel job {job.id} in the taskrun store {self._path!r}: {error}"
            ) from error
        if outcome is True:
            job._finish(JobState.CANCELLED, None, now)
        return outcome is not None

    def poll(self, job: Job[Any], timeout: float | None) -> None:
        """Refresh ``job`` from its row until it finishes or ``timeout`` seconds pass.

        :raises JobLost: if the row is gone (its result aged out).
        :raises StoreError: if the file cannot be read.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.05
        while self._sql() is not None:
            row = self._read(job.id)
            if row is None:
                raise JobLost(
                    f"job {job.id} ({job.name}) is no longer in {self._path!r}: its result "
                    "aged out; raise result_ttl or max_results to keep results longer"
                )
            refresh_from_row(job, row)
            if job.ready():
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            gevent.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 1.5, 0.5)

    def _read(self, job_id: str) -> tuple[Any, ...] | None:
        sql = self._sql()
        if sql is None:
            return None
        try:
            return sql(db.read_job, job_id)
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot read job {job_id} from the taskrun store {self._path!r}: {error}"
            ) from error
