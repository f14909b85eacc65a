"""The shared store's answers to operator views (:class:`~taskrun.stores.base.StoreQueries`).

:class:`SqliteViews` is mixed into :class:`~taskrun.stores.sqlite.SqliteStore`
(in a serving process) and :class:`~taskrun.stores.sqlite.client.StoreClient`
(in a command-line process that runs no jobs): both answer for every process
sharing the file.  Each call runs one or two short indexed statements on the
caller's greenlet; a locked file is waited out by yielding (see
:class:`~taskrun.stores.sqlite.writer.SqlRunner`).
"""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from taskrun.errors import StoreError
from taskrun.stores.base import (
    JobPage,
    MinuteCounts,
    PeriodicState,
    ProcessRecord,
    decode_cursor,
    encode_cursor,
)
from taskrun.stores.sqlite import queries
from taskrun.stores.sqlite.sql import SqlRunner

__all__ = ["SqliteViews"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteViews(ABC):
    """Operator views over a store file; subclasses provide :meth:`_views_sql` and ``path``."""

    path: str

    @abstractmethod
    def _views_sql(self) -> SqlRunner | None:
        """Return the open SQL runner, or ``None`` when closed."""

    def _query(self, fn: Callable[..., T], *args: Any) -> T:
        sql = self._views_sql()
        if sql is None:
            raise StoreError(f"the taskrun store {self.path!r} is not open; start the runner")
        try:
            return sql(fn, *args)
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the taskrun store {self.path!r}: {error}") from error

    @property
    def is_shared(self) -> bool:
        """``True``: every process on the file sees these jobs."""
        return True

    def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        id_prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Return up to ``limit`` jobs of every process, newest accepted first (one index walk).

        :raises ConfigError: for a malformed ``cursor``.
        :raises StoreError: if the file cannot be read.
        """
        after = decode_cursor(cursor) if cursor else None
        rows = self._query(queries.list_jobs, state, task, id_prefix, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage(rows, encode_cursor(rows[-1]) if more and rows else None)

    def count_by_state(self) -> dict[str, int]:
        """Return the jobs per state in the file (a walk of the state index, no rows read)."""
        return self._query(queries.count_by_state)

    def processes(self) -> list[ProcessRecord]:
        """Return the processes registered in the file, their running and waiting jobs."""
        return self._query(queries.processes)

    def periodic_state(self) -> dict[str, PeriodicState]:
        """Return each periodic task's last claimed slot, its claimer, and its paused flag."""
        return self._query(queries.periodic_state)

    def is_paused(self, task_name: str) -> bool:
        """Return whether periodic job ``task_name`` is paused (unreadable: logged, False)."""
        try:
            return self._query(queries.is_paused, task_name)
        except StoreError as error:
            logger.error("periodic job %s: cannot read its paused flag: %s", task_name, error)
            return False

    def set_paused(self, task_name: str, paused: bool) -> None:
        """Pause or resume periodic task ``task_name`` for whichever process leads.

        :raises StoreError: if the file cannot be written.
        """
        self._query(queries.set_paused, task_name, paused)

    def minutes(self, since: float, now: float) -> list[MinuteCounts]:
        """Return jobs finished per minute (and waiting then) from ``since`` to ``now``."""
        return self._query(queries.minutes, since, now)

    def job_owner(self, job_id: str) -> str | None:
        """Return the token of the process owning ``job_id``'s row, or ``None``."""
        return self._query(queries.job_owner, job_id)

    def purge(self, state: str, older_than: float) -> int:
        """Delete finished jobs in ``state`` accepted before ``older_than``; return how many.

        :raises ConfigError: if ``state`` is not a finished state.
        """
        return self._query(queries.purge, state, older_than)
