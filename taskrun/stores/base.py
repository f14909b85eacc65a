"""Where jobs are kept so they can be looked up by id: the interface every store implements.

The runner tells its store about every job it accepts, every state change
and every finish (:class:`ResultStore`); a shared store also takes over
jobs of dead processes for its runner (:class:`StoreHost`).  The stores are
:class:`~taskrun.stores.memory.MemoryStore` (this process only) and
:class:`~taskrun.stores.sqlite.SqliteStore` (a shared, durable file);
:func:`~taskrun.stores.factory.make_store` makes one from the runner's
``store`` option.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from taskrun.errors import ConfigError
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

    def add_unique(self, job: Job[Any]) -> Job[Any]:
        """Record a new job with a ``unique_key``, unless an unfinished one of its task has it.

        Decided by the store, atomically (machine-wide for a shared store).

        :returns: ``job`` if it was recorded, else the unfinished job that holds the key.
        """
        ...

    def save_meta(self, job: Job[Any]) -> None:
        """Record ``job.meta`` and ``job.blocked_for``; called from pool threads too, often.

        A shared store writes the latest within about a second (coalesced).
        """
        ...

    def take_running_slot(self, job: Job[Any], limit: int) -> bool:
        """Take one of the ``limit`` running slots of ``job``'s task; ``False`` if all are taken."""
        ...

    def free_running_slot(self, job: Job[Any]) -> None:
        """Give back the running slot ``job`` took."""
        ...

    def reserve_start(
        self, task_name: str, starts: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record a start of ``task_name`` at ``now`` unless ``starts`` began in ``window`` s.

        :returns: ``(True, the start recorded)`` (``now``, or a hair later so that
            the starts of a shared store stay in order), else ``(False, the POSIX
            time the next start is allowed)``.
        """
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

    def is_paused(self, task_name: str) -> bool:
        """Return whether an operator paused periodic task ``task_name`` (any process)."""
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


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One row of a job listing: what a table of jobs shows, without arguments or results."""

    id: str
    task: str
    state: str
    attempts: int
    enqueued: float
    started: float | None
    finished: float | None
    due: float
    owner: str | None


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs, newest first, and the cursor of the next (older) page, if any."""

    jobs: list[JobSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A live process that shares the store: who it is and what it is doing."""

    token: str
    pid: int
    host: str
    started: float
    heartbeat: float
    running: list[str] = field(default_factory=list)
    #: Jobs it owns that wait (PENDING, SCHEDULED, RETRY), by state.
    waiting: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeriodicState:
    """What the store remembers of a periodic task: its last slot run, by whom, and paused."""

    name: str
    last_slot: float | None
    last_owner: str | None
    paused: bool


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """Jobs finished per state in one minute, and the jobs waiting then, if recorded."""

    minute: int
    finished: dict[str, int]
    waiting: int | None


@runtime_checkable
class StoreQueries(Protocol):
    """What operator views ask a store: listings, counts, processes, periodic state.

    :class:`~taskrun.stores.memory.MemoryStore` answers for this process,
    the SQLite store for every process sharing its file (``is_shared``).
    Each call is bounded: listings are paginated and walk an index; counts
    (in the SQLite store) walk an index, never the rows.
    """

    @property
    def is_shared(self) -> bool:
        """Whether other processes share these jobs (the views are machine-wide)."""
        ...

    def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        id_prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Return up to ``limit`` jobs, newest accepted first, filtered by state, task or id.

        :param cursor: ``next_cursor`` of the previous page, to go on from there.
        :raises ConfigError: for a malformed cursor.
        """
        ...

    def count_by_state(self) -> dict[str, int]:
        """Return how many kept jobs are in each state (every :class:`JobState` value)."""
        ...

    def processes(self) -> list[ProcessRecord]:
        """Return the live processes of the store with their heartbeat and running jobs."""
        ...

    def periodic_state(self) -> dict[str, PeriodicState]:
        """Return what the store remembers of each periodic task it has seen, by name."""
        ...

    def set_paused(self, task_name: str, paused: bool) -> None:
        """Pause or resume periodic task ``task_name`` for whichever process leads."""
        ...

    def minutes(self, since: float, now: float) -> list[MinuteCounts]:
        """Return jobs finished per minute (and waiting jobs) from ``since`` to ``now``."""
        ...

    def job_owner(self, job_id: str) -> str | None:
        """Return the token of the process that owns (or ran) ``job_id``, if any."""
        ...

    def purge(self, state: str, older_than: float) -> int:
        """Delete finished jobs in ``state`` accepted before ``older_than``; return how many."""
        ...


def encode_cursor(job: JobSummary) -> str:
    """Return the cursor that continues a listing after ``job``: ``"<enqueued>:<id>"``."""
    return f"{job.enqueued!r}:{job.id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Return (enqueued, id) from a cursor made by :func:`encode_cursor`.

    :raises ConfigError: (a ``ValueError``) naming the cursor, if it is not one.
    """
    stamp, sep, job_id = cursor.partition(":")
    try:
        enqueued = float(stamp)
    except ValueError:
        enqueued = None
    if enqueued is None or not sep or not job_id:
        raise ConfigError(f"bad page cursor {cursor!r}; use the next_cursor of the previous page")
    return enqueued, job_id


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


#: The largest pickled arguments of a job unless the runner's ``max_arg_bytes`` says otherwise.
DEFAULT_MAX_ARG_BYTES = 1_048_576
