"""A handle on a store file for a process that runs no jobs: submit, look up, cancel, query.

A command-line process (``flask taskrun ...``) opens the file with
:class:`StoreClient`: it migrates the file if needed but registers no
process and starts no writer, lease or worker.  A job it submits is an
*unowned* row, which a live serving process takes over within about a
heartbeat and runs (as it takes over the jobs of a stopped process).
"""

from __future__ import annotations

import time
from typing import Any

from taskrun.clock import SystemClock
from taskrun.jobs import Job, JobState, TaskLike, new_job_id
from taskrun.stores.sqlite.codec import encode_payload
from taskrun.stores.sqlite.files import create_file, store_path
from taskrun.stores.sqlite.queries import insert_unowned
from taskrun.stores.sqlite.remote import RemoteJobs
from taskrun.stores.sqlite.schema import connect, migrate
from taskrun.stores.sqlite.sql import SqlRunner
from taskrun.stores.sqlite.views import SqliteViews

__all__ = ["StoreClient"]


class StoreClient(SqliteViews):
    """The store file, opened to submit and look up jobs without running any.

    Use it as a context manager (it closes the connection).

    :param path: the store file or ``sqlite://`` URL.
    :param tasks: the app's tasks by name, to give looked-up jobs their task.
    :raises StoreError: if the file cannot be opened or migrated.
    """

    def __init__(self, path: str, tasks: dict[str, TaskLike]) -> None:
        self.path = store_path(path)
        self._tasks = tasks
        create_file(self.path)
        self._sql: SqlRunner | None = SqlRunner(self.path, lambda: connect(self.path), False)
        self._sql(lambda conn: migrate(conn, self.path))
        self._remote = RemoteJobs(self.path, SystemClock(), lambda: self._sql, tasks.get)

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; idempotent."""
        sql, self._sql = self._sql, None
        if sql is not None:
            sql.close()

    def _views_sql(self) -> SqlRunner | None:
        return self._sql

    def get(self, job_id: str) -> Job[Any] | None:
        """Return a snapshot of job ``job_id`` (``cancel()`` works on it), or ``None``."""
        return self._remote.load(job_id)

    def submit(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
    ) -> str:
        """Record a new unowned job of ``task_name`` for a serving process to run; return its id.

        :param countdown: seconds from now before it may run (SCHEDULED until then).
        :raises NotSerializable: if the arguments cannot be pickled.
        :raises StoreError: if the file cannot be written.
        """
        now = time.time()
        job_id = new_job_id()
        state = JobState.SCHEDULED if countdown > 0 else JobState.PENDING
        due = now + countdown if countdown > 0 else 0.0
        payload = encode_payload(task_name, args, kwargs)
        # No owner (a serving process takes it), no expiry, unique key or own result_ttl.
        row = (job_id, task_name, state.value, payload, 0, now, due, None, None, None, None)
        self._query(insert_unowned, row)
        return job_id
