"""The in-memory job store: this process only, bounded by age and count.

It keeps unfinished jobs until they finish and finished ones for
``result_ttl`` seconds, at most ``max_results`` of them (oldest finished
first out), so memory never grows without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from taskrun.clock import Clock
from taskrun.jobs import Job


class MemoryStore:
    """Jobs by id in a dict, finished ones bounded by age and count.

    :param clock: the time source used to age results.
    :param result_ttl: seconds a finished job stays retrievable.
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

    def open(self) -> None:
        """Nothing to prepare in memory."""

    def close(self) -> None:
        """Nothing to release in memory; kept jobs stay readable."""

    def add(self, job: Job[Any]) -> None:
        """Keep ``job`` until it finishes and its result ages out."""
        self._jobs[job.id] = job

    def update(self, job: Job[Any]) -> None:
        """Nothing to do: the dict holds the live object."""

    def finish(self, job: Job[Any]) -> None:
        """Queue ``job`` for eviction and evict what is too old or too many."""
        runs = job._runs  # a finished job's record holds its finish time
        finished = runs.finished if runs is not None else None
        self._finished.append((finished or self._clock.time(), job.id))
        self.evict()

    def evict(self) -> None:
        """Drop finished jobs past ``result_ttl`` or beyond ``max_results``."""
        finished = self._finished
        oldest_kept = self._clock.time() - self._ttl
        while finished and (len(finished) > self._max or finished[0][0] < oldest_kept):
            _, job_id = finished.popleft()
            self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or aged out."""
        if self._finished:
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
