"""The one interface between the runner and where its jobs run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from taskrun.jobs import Job, TaskLike

__all__ = ["Engine"]


class Engine(Protocol):
    """Accepts, finds and cancels a runner's jobs, and claims its periodic slots.

    The runner calls it for every job that is not run inline (eager mode
    stays in front of it); the periodic timer submits each run to it and
    claims each slot through it (it is the timer's sink).
    """

    @property
    def sender(self) -> object:
        """What signals name as their sender (the runner)."""
        ...

    @property
    def is_remote(self) -> bool:
        """Whether jobs run outside this process (on workers reached through a broker)."""
        ...

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
        """Accept one job of ``task``, due after ``countdown`` s or at POSIX time ``eta``.

        :raises QueueFull: if a local backlog is full.
        :raises NotSerializable: if the engine cannot carry the arguments.
        """
        ...

    def get(self, job_id: str) -> Job[Any] | None:
        """Return the job with this id, or ``None`` if unknown or aged out."""
        ...

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job`` wherever it waits or runs; return whether it was unfinished."""
        ...

    def has_room(self) -> bool:
        """Return whether a job due now would be admitted."""
        ...

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim periodic slot ``slot`` of ``task_name``; ``False`` if another process has."""
        ...

    def close(self) -> None:
        """Let go of what the engine holds (its connections); the runner stopped."""
        ...
