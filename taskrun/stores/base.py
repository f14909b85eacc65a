"""Where jobs are kept so they can be looked up by id: the store interface and its factory.

The runner tells its store about every job it accepts, every state change
and every finish (:class:`ResultStore`).  :func:`make_store` turns the
runner's ``store`` option into one: :class:`~taskrun.stores.memory.MemoryStore`
(this process only) or :class:`~taskrun.stores.sqlite.SqliteStore` (a
shared, durable file).  Nothing here opens a file or starts anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeAlias

from taskrun.clock import Clock
from taskrun.jobs import Job, JobControl, TaskLike


class ResultStore(Protocol):
    """The interface every job store implements.

    All methods are called from the runner's own greenlets and must not
    block for long: a durable store batches its writes.
    """

    def open(self) -> None:
        """Prepare the store for use; called by ``TaskRunner.start()``."""
        ...

    def close(self) -> None:
        """Flush and release resources; called last by ``TaskRunner.stop()``."""
        ...

    def add(self, job: Job[Any]) -> None:
        """Record a newly accepted job (PENDING or SCHEDULED)."""
        ...

    def update(self, job: Job[Any]) -> None:
        """Record that an unfinished job changed state (started, retrying, requeued)."""
        ...

    def finish(self, job: Job[Any]) -> None:
        """Record that ``job`` reached a final state; its result becomes evictable."""
        ...

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or evicted."""
        ...

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim one periodic slot; return ``False`` if some process already has it."""
        ...

    def last_slot(self, task_name: str) -> float | None:
        """Return the latest slot of ``task_name`` claimed before, if the store remembers."""
        ...

    def discard(self, job: Job[Any]) -> None:
        """Forget a job just added whose admission was then refused (``QueueFull``)."""
        ...

    def before_run(self, job: Job[Any]) -> bool:
        """Wait, if need be, until ``job`` is recorded; ``False`` if it must not run here.

        Called by a worker just before it starts ``job``: a durable store
        makes it wait for the job's row to be committed.
        """
        ...

    def release(self, job: Job[Any]) -> bool:
        """Hand an unfinished job back at shutdown; ``False`` if the runner should cancel it.

        A durable store keeps it for another process or the next start.
        """
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job accepted so far is durable and visible to other processes.

        Call it before acknowledging a job to a client (e.g. a 202 whose
        status URL another worker may answer).  Blocks the calling greenlet
        only; instant for a store that is not shared.

        :returns: ``False`` if ``timeout`` seconds passed first.
        """
        ...

    def __iter__(self) -> Iterator[Job[Any]]:
        """Iterate over the jobs this process knows (for statistics)."""
        ...

    def __len__(self) -> int:
        """Return how many jobs are kept."""
        ...


class StoreHost(JobControl, Protocol):
    """What a shared store needs from its runner to take over jobs of dead processes."""

    @property
    def tasks(self) -> Mapping[str, TaskLike]:
        """The registered tasks by name."""
        ...

    def resume_job(self, job: Job[Any]) -> bool:
        """Queue a recovered PENDING, SCHEDULED or RETRY job; ``False`` if there is no room."""
        ...


#: What the runner's ``store`` option accepts (see :func:`make_store`).
StoreSpec: TypeAlias = str | os.PathLike[str] | ResultStore | None


def make_store(
    spec: StoreSpec, clock: Clock, result_ttl: float, max_results: int, host: StoreHost
) -> ResultStore:
    """Return the store ``spec`` names, not yet open (``TaskRunner.start()`` opens it).

    ``None`` or ``"memory"``: a :class:`~taskrun.stores.memory.MemoryStore`
    (this process only); a path or a ``sqlite://`` URL: a
    :class:`~taskrun.stores.sqlite.SqliteStore` on that file (only then is
    ``sqlite3`` imported); any other object is taken to be a store.

    :param host: the runner, which a shared store gives the jobs it takes over.
    :raises ConfigError: for a string that names no SQLite file.
    """
    from taskrun.stores.memory import MemoryStore

    if spec is None or spec in ("memory", "memory://"):
        return MemoryStore(clock, result_ttl, max_results)
    if isinstance(spec, str | os.PathLike):
        from taskrun.stores.sqlite.store import SqliteStore  # sqlite3 only when asked for

        return SqliteStore(
            spec, clock=clock, result_ttl=result_ttl, max_results=max_results, host=host
        )
    return spec
