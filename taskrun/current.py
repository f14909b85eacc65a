"""The job the calling greenlet or thread runs now: :func:`current_job`.

The executors set it around each body (:func:`running`), in the worker
greenlet or in the pool thread; eager jobs go through the same executors.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent

from taskrun.errors import NoCurrentJob
from taskrun.jobs import Job

__all__ = ["current_job", "running"]

# The job each greenlet (or pool thread: each thread has its own main
# greenlet) runs now.  Set by the executors around a body; dict set and pop
# are atomic under the GIL, so pool threads may write it.
_current: dict[Any, Job[Any]] = {}


def current_job() -> Job[Any]:
    """Return the :class:`Job` whose body runs in the calling greenlet or thread.

    Works in greenlet and thread jobs alike, and in eager mode.

    Example::

        @runner.task()
        def process(total: int) -> None:
            job = current_job()
            for i in range(total):
                job.update(current=i + 1, total=total)

    :raises NoCurrentJob: outside a task body (e.g. in a view or a plain call).
    """
    job = _current.get(getcurrent())
    if job is None:
        raise NoCurrentJob(
            "current_job() is only available inside a task body run as a job "
            "(delay(), apply_async(), a periodic run or eager mode); here no job runs. "
            "Pass what the code needs as an argument instead"
        )
    return job


class running:  # used as a function: ``with running(job):``
    """Make :func:`current_job` return ``job`` in the calling greenlet or thread meanwhile.

    A context manager; a small class rather than a generator, since every
    job's body runs inside one.
    """

    __slots__ = ("_job", "_me", "_outer")

    def __init__(self, job: Job[Any]) -> None:
        self._job = job
        self._me: Any = None
        self._outer: Job[Any] | None = None

    def __enter__(self) -> None:
        me = self._me = getcurrent()
        self._outer = _current.get(me)
        _current[me] = self._job

    def __exit__(self, *exc_info: object) -> None:
        outer = self._outer
        if outer is None:
            _current.pop(self._me, None)
        else:
            _current[self._me] = outer  # an eager job run from inside another job
