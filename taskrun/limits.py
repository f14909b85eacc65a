"""Per-task limits, as pure policy: rate windows and the queue of jobs parked for a slot.

``@runner.task(rate_limit="10/s")`` lets at most 10 jobs of the task start in
any one-second window; ``max_running=2`` lets at most 2 run at once.  This
module decides, with the time passed in; the dispatcher's admission
(:mod:`taskrun.admission`) and the stores (which count machine-wide) act on it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from typing import Any

from taskrun.errors import ConfigError

__all__ = ["RATE_UNITS", "ParkedJobs", "RateLog", "parse_rate"]

#: The window of each rate unit, in seconds.
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")


def parse_rate(text: object) -> tuple[int, float]:
    """Return ``(starts, window seconds)`` for a rate such as ``"10/s"``, ``"100/m"`` or ``"5/h"``.

    :raises ConfigError: naming the value and the accepted forms.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"rate_limit must look like 'N/s', 'N/m' or 'N/h' with a whole N >= 1 "
            f"(at most N starts per second, minute or hour), got {text!r}; e.g. rate_limit='10/s'"
        )
    return int(match.group(1)), RATE_UNITS[match.group(2)]


class RateLog:
    """The start times of one task in the last window: a sliding-window log.

    :param starts: the most starts in any window.
    :param window: the window's length in seconds.
    """

    __slots__ = ("starts", "window", "_log")

    def __init__(self, starts: int, window: float) -> None:
        self.starts = starts
        self.window = window
        self._log: deque[float] = deque()

    def reserve(self, now: float) -> float:
        """Record a start at ``now`` if the window allows it.

        :returns: ``0.0`` if the start is recorded, else the time (POSIX
            seconds, > ``now``) when the next start will be allowed.
        """
        log = self._log
        while log and log[0] <= now - self.window:
            log.popleft()
        if len(log) < self.starts:
            log.append(now)
            return 0.0
        return log[0] + self.window


def next_start(stamps: list[float], starts: int, window: float, now: float) -> float:
    """The rule of :meth:`RateLog.reserve` for starts kept elsewhere (e.g. in a shared file).

    :param stamps: the starts within the window before ``now``, oldest first.
    :returns: ``0.0`` if a start at ``now`` is allowed, else when the next one is.
    """
    recent = [stamp for stamp in stamps if stamp > now - window]
    if len(recent) < starts:
        return 0.0
    return recent[-starts] + window


class ParkedJobs:
    """Jobs waiting for a running slot of their task, per task, in arrival order.

    Holds no worker: a job leaves when a slot of its task frees up (or on
    a re-check, for slots freed by another process).
    """

    def __init__(self) -> None:
        self._by_task: dict[str, deque[Any]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._by_task.values())

    def __bool__(self) -> bool:
        return bool(self._by_task)

    def park(self, task_name: str, job: Any, *, front: bool = False) -> None:
        """Queue ``job`` behind the other parked jobs of ``task_name`` (ahead of them if ``front``:
        a job that was given a try and parked again keeps its place)."""
        queue = self._by_task.setdefault(task_name, deque())
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)

    def next(self, task_name: str) -> Any | None:
        """Take the oldest parked job of ``task_name`` that has not finished, or ``None``."""
        queue = self._by_task.get(task_name)
        while queue:
            job = queue.popleft()
            if not queue:
                del self._by_task[task_name]
            if not job.ready():
                return job
        return None

    def tasks(self) -> list[str]:
        """The names of the tasks with parked jobs."""
        return list(self._by_task)

    def take_all(self) -> Iterator[Any]:
        """Empty the queue, yielding every parked job that has not finished."""
        by_task, self._by_task = self._by_task, {}
        for queue in by_task.values():
            yield from (job for job in queue if not job.ready())
