"""A process that only submits and looks up jobs in a shared store: shells, cron scripts.

``runner.start(run_jobs=False)`` opens the file through a :class:`SubmitClient`:
it registers no process, takes no lease and no leader lock, and runs no
job.  A job it submits is inserted *unowned* and committed before
``delay()`` returns, so it is durable at once; each serving process probes
for unowned jobs every heartbeat (1 s) and takes it over (see
:mod:`taskrun.stores.sqlite.leases`).  Lookups read the row; a job's
``get(timeout)`` polls it and ``cancel()`` cancels it in the file, or asks
its owner to (see :mod:`taskrun.stores.sqlite.remote`).

Each call is one short transaction on the caller's thread: a shell or a
cron script submits a few jobs, it does not need batching.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from taskrun.clock import Clock
from taskrun.errors import StoreError
from taskrun.jobs import Job, JobState, TaskLike
from taskrun.stores.sqlite import db
from taskrun.stores.sqlite.codec import DEFAULT_MAX_ARG_BYTES, encode_payload
from taskrun.stores.sqlite.files import create_file
from taskrun.stores.sqlite.limits import insert_unique
from taskrun.stores.sqlite.remote import RemoteJobs
from taskrun.stores.sqlite.schema import connect, migrate
from taskrun.stores.sqlite.sql import SqlRunner

__all__ = ["SubmitClient"]

logger = logging.getLogger(__name__)


class SubmitClient:
    """Submits jobs into a shared SQLite store for the serving processes to run; looks them up.

    :param path: the store file (an absolute path, see :func:`~.schema.store_path`).
    :param clock: stamps new jobs.
    :param task: returns this process's task of a given name, if any.
    :param max_arg_bytes: the largest pickled arguments a job may have.
    """

    def __init__(
        self,
        path: str,
        clock: Clock,
        task: Callable[[str], TaskLike | None],
        max_arg_bytes: int = DEFAULT_MAX_ARG_BYTES,
    ) -> None:
        self.path = path
        self._clock = clock
        self._max_arg_bytes = max_arg_bytes
        self._sql: SqlRunner | None = None
        self._remote = RemoteJobs(path, clock, lambda: self._sql, task)

    def open(self) -> None:
        """Create or check the file and migrate it; registers nothing.  Idempotent.

        :raises StoreError: naming the file and the fix, if it cannot be used.
        """
        if self._sql is not None:
            return
        create_file(self.path)
        sql = SqlRunner(self.path, lambda: connect(self.path), False)
        try:
            sql(lambda conn: migrate(conn, self.path))
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
        logger.info("taskrun store %s open to submit and look up jobs (runs none)", self.path)

    def close(self) -> None:
        """Close the file; idempotent.  Submitted jobs stay for the serving processes."""
        sql, self._sql = self._sql, None
        if sql is not None:
            sql.close()

    def submit(self, job: Job[Any]) -> Job[Any]:
        """Insert ``job`` (PENDING, or SCHEDULED with ``due``) unowned, committed on return.

        :returns: ``job``, whose ``get()`` polls its row and ``cancel()`` works
            through the file; or, for a ``unique_key`` an unfinished job of its
            task already holds, a snapshot of that job.
        :raises NotSerializable: if its arguments cannot be pickled.
        :raises StoreError: if the file cannot be written, or the client is closed.
        """
        sql = self._sql
        if sql is None:
            raise StoreError(f"the taskrun store {self.path!r} is not open; call runner.start()")
        payload = encode_payload(job.name, job.args, job.kwargs, self._max_arg_bytes)
        runs = job._runs
        row = (
            job.id,
            job.name,
            job.state.value,
            payload,
            0,
            job._enqueued,
            job.due,
            None,  # unowned: a serving process takes it over
            None if runs is None else runs.expires,
            None if runs is None else runs.unique_key,
            job.task.options.result_ttl,
        )
        try:
            if job.unique_key is not None:
                held_id = sql(insert_unique, row)
                held = None if held_id is None else self._remote.load(held_id)
                if held is not None:
                    return held
            else:
                sql(db.write_batch, [row], [])
        except sqlite3.Error as error:
            raise StoreError(
                f"cannot submit job {job.id} ({job.name}) to the taskrun store {self.path!r}: "
                f"{error}"
            ) from error
        runs = job._run_record()
        runs.control = self._remote
        if job.state in (JobState.PENDING, JobState.SCHEDULED):
            runs.poll = self._remote.poll
        return job

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job`` in the file at once if no process owns it, else ask its owner to.

        :returns: ``False`` if it had finished.
        """
        return self._remote.cancel_job(job)

    def get(self, job_id: str) -> Job[Any] | None:
        """Return a snapshot of the job's row, or ``None``.

        :raises StoreError: if the file cannot be read.
        """
        return self._remote.load(job_id) if self._sql is not None else None
