"""The default engine: jobs run in this process's pool and timer, through its router."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from taskrun.jobs import Job, TaskLike
from taskrun.routing import JobRouter

__all__ = ["LocalEngine"]


class LocalEngine:
    """Runs a runner's jobs in-process: the router records each one and hands it on.

    Only the runner's hub thread calls it (other threads go through the
    runner's mode first, see :mod:`taskrun.modes`).

    :param router: the runner's router.
    """

    is_remote = False

    def __init__(self, router: JobRouter) -> None:
        self._router = router

    @property
    def sender(self) -> object:
        """What signals name as their sender: the runner."""
        return self._router.sender

    def submit(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
        eta: float | None = None,
        *,
        unique_key: str | None = None,
        expires: float | datetime | None = None,
    ) -> Job[Any]:
        """Record the job and give it to the pool or the timer (see :meth:`JobRouter.submit`)."""
        return self._router.submit(
            task, args, kwargs, countdown, eta, unique_key=unique_key, expires=expires
        )

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job from the eager jobs or the store, or ``None``."""
        return self._router.get(job_id)

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel the job where it runs or waits (see :meth:`JobRouter.cancel`)."""
        return self._router.cancel(job)

    def has_room(self) -> bool:
        """Return whether the pool or its backlog has room."""
        return self._router.has_room()

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim the slot in the runner's store (a shared store claims it once per file)."""
        return self._router.store.claim_slot(task_name, slot)

    def close(self) -> None:
        """Nothing to let go of: the runner closes its own store and pool."""
