"""The in-memory job store: this process only, bounded by age and count.

It keeps unfinished jobs until they finish and finished ones for
``result_ttl`` seconds, at most ``max_results`` of them (oldest finished
first out), so memory never grows without bound.
"""

from __future__ import annotations

import heapq
import os
import socket
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from taskrun.clock import Clock
from taskrun.jobs import Job, JobState
from taskrun.limits import RateLog
from taskrun.stores.base import (
    JobPage,
    JobSummary,
    MinuteCounts,
    PeriodicState,
    ProcessRecord,
    decode_cursor,
    encode_cursor,
)


class MemoryStore:
    """Jobs by id in a dict, finished ones bounded by age and count.

    Also the per-task limits of this process: unique keys of unfinished
    jobs, running slots and rate windows.

    :param clock: the time source used to age results.
    :param result_ttl: seconds a finished job stays retrievable (a task's
        own ``result_ttl`` overrides it for its jobs).
    :param max_results: the most finished jobs kept; the oldest go first.
    """

    def __init__(self, clock: Clock, result_ttl: float, max_results: int) -> None:
        self._clock = clock
        self._ttl = result_ttl
        self._max = max_results
        self._jobs: dict[str, Job[Any]] = {}
        # Finished jobs in finish order: finish times only grow, so the
        # oldest is always at the left and eviction is O(1) per job.
        self._finished: deque[tuple[float, str]] = deque()
        # Finished jobs of tasks with their own result_ttl: (expiry, id), a heap.
        self._expiring: list[tuple[float, str]] = []
        self._unique: dict[tuple[str, str], Job[Any]] = {}
        self._slots: dict[str, int] = {}
        self._rates: dict[str, RateLog] = {}
        self._paused: set[str] = set()
        self._opened: float | None = None

    def open(self) -> None:
        """Nothing to prepare in memory but the start time it reports."""
        if self._opened is None:
            self._opened = self._clock.time()

    def close(self) -> None:
        """Nothing to release in memory; kept jobs stay readable."""

    def add(self, job: Job[Any]) -> None:
        """Keep ``job`` until it finishes and its result ages out."""
        self._jobs[job.id] = job

    def update(self, job: Job[Any]) -> None:
        """Nothing to do: the dict holds the live object."""

    def add_unique(self, job: Job[Any]) -> Job[Any]:
        """Keep ``job`` unless an unfinished job of its task has its ``unique_key``.

        :returns: ``job``, or the unfinished job that holds the key.
        """
        key = (job.name, job.unique_key or "")
        held = self._unique.get(key)
        if held is not None and not held.ready():
            return held
        self._unique[key] = job
        self.add(job)
        return job

    def save_meta(self, job: Job[Any]) -> None:
        """Nothing to do: the job object holds its meta."""

    def take_running_slot(self, job: Job[Any], limit: int) -> bool:
        """Take a running slot of ``job``'s task here; ``False`` if ``limit`` are taken."""
        taken = self._slots.get(job.name, 0)
        if taken >= limit:
            return False
        self._slots[job.name] = taken + 1
        return True

    def free_running_slot(self, job: Job[Any]) -> None:
        """Give back a running slot of ``job``'s task."""
        taken = self._slots.get(job.name, 0) - 1
        if taken > 0:
            self._slots[job.name] = taken
        else:
            self._slots.pop(job.name, None)

    def reserve_start(
        self, task_name: str, starts: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record a start in this process's rate window of ``task_name`` (see :class:`RateLog`)."""
        log = self._rates.get(task_name)
        if log is None or (log.starts, log.window) != (starts, window):
            log = self._rates[task_name] = RateLog(starts, window)
        next_at = log.reserve(now)
        return (False, next_at) if next_at else (True, now)

    def finish(self, job: Job[Any]) -> None:
        """Queue ``job`` for eviction and evict what is too old or too many."""
        runs = job._runs  # a finished job's record holds its finish time
        finished = (runs.finished if runs is not None else None) or self._clock.time()
        if runs is not None and runs.unique_key is not None:
            key = (job.name, runs.unique_key)
            if self._unique.get(key) is job:
                del self._unique[key]
        ttl = job.task.options.result_ttl
        if ttl is None:
            self._finished.append((finished, job.id))
        else:
            heapq.heappush(self._expiring, (finished + ttl, job.id))
        self.evict()

    def evict(self) -> None:
        """Drop finished jobs past their ``result_ttl`` or beyond ``max_results``."""
        finished = self._finished
        now = self._clock.time()
        oldest_kept = now - self._ttl
        while finished and (len(finished) > self._max or finished[0][0] < oldest_kept):
            _, job_id = finished.popleft()
            self._jobs.pop(job_id, None)
        expiring = self._expiring
        while expiring and (expiring[0][0] < now or len(expiring) + len(finished) > self._max):
            _, job_id = heapq.heappop(expiring)
            self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or aged out."""
        if self._finished or self._expiring:
            self.evict()
        return self._jobs.get(job_id)

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Return ``True``: one process, one timer, so every slot is claimed once."""
        return True

    def last_slot(self, task_name: str) -> float | None:
        """Return ``None``: memory does not outlive the process."""
        return None

    def discard(self, job: Job[Any]) -> None:
        """Forget ``job`` (it was never admitted)."""
        self._jobs.pop(job.id, None)
        if job.unique_key is not None and self._unique.get((job.name, job.unique_key)) is job:
            del self._unique[(job.name, job.unique_key)]

    def before_run(self, job: Job[Any]) -> bool:
        """Return ``True`` at once: memory holds the job already."""
        return True

    def release(self, job: Job[Any]) -> bool:
        """Return ``False``: memory dies with the process, so the runner cancels the job."""
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Return ``True`` at once: nothing to write."""
        return True

    def __iter__(self) -> Iterator[Job[Any]]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    # -- operator views (StoreQueries): this process only ------------------------

    @property
    def is_shared(self) -> bool:
        """``False``: the jobs are this process's only."""
        return False

    def is_paused(self, task_name: str) -> bool:
        """Return whether periodic task ``task_name`` was paused in this process."""
        return task_name in self._paused

    def set_paused(self, task_name: str, paused: bool) -> None:
        """Pause or resume periodic task ``task_name`` in this process."""
        if paused:
            self._paused.add(task_name)
        else:
            self._paused.discard(task_name)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        id_prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Return up to ``limit`` kept jobs, newest first (sorts the kept jobs: O(n log n))."""
        after = decode_cursor(cursor) if cursor else None
        found = [
            job
            for job in self._jobs.values()
            if (state is None or job.state.value == state)
            and (task is None or job.name == task)
            and (id_prefix is None or job.id.startswith(id_prefix))
            and (after is None or (job._enqueued, job.id) < after)
        ]
        found.sort(key=lambda job: (job._enqueued, job.id), reverse=True)
        page = [summarize(job, None) for job in found[:limit]]
        more = len(found) > limit
        return JobPage(page, encode_cursor(page[-1]) if more and page else None)

    def count_by_state(self) -> dict[str, int]:
        """Return how many kept jobs are in each state (counts the kept jobs: O(n))."""
        counts = Counter(job.state.value for job in self._jobs.values())
        return {state.value: counts.get(state.value, 0) for state in JobState}

    def processes(self) -> list[ProcessRecord]:
        """Return this process, with the jobs it runs now."""
        now = self._clock.time()
        running = [job.id for job in self._jobs.values() if job.state is JobState.STARTED]
        waiting = Counter(job.state.value for job in self._jobs.values() if job.state in _WAITING)
        return [
            ProcessRecord(
                "local",
                os.getpid(),
                socket.gethostname(),
                self._opened or now,
                now,
                running,
                dict(waiting),
            )
        ]

    def periodic_state(self) -> dict[str, PeriodicState]:
        """Return the paused periodic tasks (memory remembers no slots)."""
        return {name: PeriodicState(name, None, None, True) for name in self._paused}

    def minutes(self, since: float, now: float) -> list[MinuteCounts]:
        """Return per-minute finish counts of the kept jobs from ``since`` on (O(n))."""
        buckets: dict[int, Counter[str]] = {}
        for job in self._jobs.values():
            runs = job._runs
            if runs is not None and runs.finished is not None and runs.finished >= since:
                buckets.setdefault(int(runs.finished // 60), Counter())[job.state.value] += 1
        return [MinuteCounts(m, dict(c), None) for m, c in sorted(buckets.items())]

    def job_owner(self, job_id: str) -> str | None:
        """Return ``"local"`` for a kept job: this process ran it."""
        return "local" if job_id in self._jobs else None

    def purge(self, state: str, older_than: float) -> int:
        """Forget finished jobs in ``state`` accepted before ``older_than``; return how many."""
        doomed = [
            job.id
            for job in self._jobs.values()
            if job.state.value == state and job.ready() and job._enqueued < older_than
        ]
        for job_id in doomed:
            del self._jobs[job_id]
        return len(doomed)


_WAITING = frozenset({JobState.PENDING, JobState.SCHEDULED, JobState.RETRY})


def summarize(job: Job[Any], owner: str | None) -> JobSummary:
    """Return the listing row of ``job``."""
    runs = job._runs
    return JobSummary(
        job.id,
        job.name,
        job.state.value,
        job.attempts,
        job._enqueued,
        runs.started if runs is not None else None,
        runs.finished if runs is not None else None,
        job.due,
        owner,
    )
