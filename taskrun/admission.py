"""Whether a job of a limited task may start now: ``max_running`` slots and ``rate_limit`` windows.

A worker asks :meth:`Admission.admit` just before it starts a job.  A job
of a task with no limit passes at once.  Otherwise the store counts
(machine-wide for a shared store, in one short transaction):

* ``max_running``: if every slot of the task is taken, the job stays
  PENDING and is *parked* here, holding no worker, until a job of its task
  finishes in this process (then the oldest parked job goes back to the
  pool) or, for slots freed by another process, until the next re-check
  (every :data:`RECHECK` seconds while jobs are parked);
* ``rate_limit``: if the window is full, the job is put on the timer,
  SCHEDULED for the moment the window allows its start.

The policy (rate windows, the parked queue) is :mod:`taskrun.limits`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.greenlet import Greenlet

from taskrun.jobs import Job, JobState
from taskrun.limits import ParkedJobs
from taskrun.stores.base import ResultStore
from taskrun.supervision import Supervisor, guarded

__all__ = ["RECHECK", "Admission"]

logger = logging.getLogger(__name__)

#: Seconds between re-checks of parked jobs, for slots freed by other processes.
RECHECK = 0.1


class Admission:
    """Holds the limited tasks' parked jobs and the slots this process's jobs hold.

    Only the dispatcher calls it, from greenlets of the hub's thread.

    :param readmit: gives a parked job back to the pool (never refuses).
    :param schedule: puts a job whose ``due`` is set on the timer.
    """

    def __init__(
        self,
        readmit: Callable[[Job[Any]], None],
        schedule: Callable[[Job[Any]], None],
    ) -> None:
        self._readmit = readmit
        self._schedule = schedule
        self._parked = ParkedJobs()
        self._holding: set[Job[Any]] = set()
        self._rechecked: set[Job[Any]] = set()
        self._rechecker: Greenlet[..., None] | None = None
        self._guard = Supervisor("taskrun's re-check of jobs parked for max_running", logger)
        self.closing = False

    @property
    def parked(self) -> int:
        """How many jobs wait for a running slot of their task."""
        return len(self._parked)

    def admit(self, job: Job[Any], store: ResultStore, now: float) -> float | None:
        """Take a running slot and a start in the rate window for ``job``, or park it.

        :param now: when the job would start.
        :returns: when the job starts (``now``, or the start its rate window
            recorded), or ``None`` if it was parked (PENDING) or put on the
            timer (SCHEDULED).
        """
        options = job.task.options
        front = job in self._rechecked
        self._rechecked.discard(job)
        if options.max_running is not None:
            if not store.take_running_slot(job, options.max_running):
                self._parked.park(job.name, job, front=front)
                self._start_rechecks()
                return None
            self._holding.add(job)
        if options.rate is not None:
            starts, window = options.rate
            allowed, at = store.reserve_start(job.name, starts, window, now)
            if not allowed:
                self.finished(job, store)  # give the slot back while it waits
                logger.debug(
                    "job %s (%s) waits for its rate limit %r until %.3f",
                    job.id,
                    job.name,
                    options.rate_limit,
                    at,
                )
                job.state = JobState.SCHEDULED
                job.due = at
                store.update(job)
                self._schedule(job)
                return None
            now = at
        return now

    def finished(self, job: Job[Any], store: ResultStore) -> None:
        """Give back ``job``'s running slot (if it holds one) and readmit a parked job."""
        if job not in self._holding:
            return
        self._holding.discard(job)
        store.free_running_slot(job)
        if not self.closing:
            waiting = self._parked.next(job.name)
            if waiting is not None:
                self._rechecked.add(waiting)
                self._readmit(waiting)

    def take_parked(self) -> list[Job[Any]]:
        """Stop re-checking and return the parked jobs (at shutdown)."""
        self.closing = True
        rechecker, self._rechecker = self._rechecker, None
        if rechecker is not None:
            rechecker.kill(block=False)
        self._rechecked.clear()
        return list(self._parked.take_all())

    def _start_rechecks(self) -> None:
        if self._rechecker is None and not self.closing:
            self._rechecker = gevent.spawn(self._recheck_loop)

    def _recheck_loop(self) -> None:
        """Every :data:`RECHECK` s while jobs are parked, give each task's oldest another try."""
        pause = 0.0
        try:
            while self._parked and not self.closing:
                gevent.sleep(RECHECK + pause)
                pause = guarded(self._guard, "re-admitting parked jobs", self._recheck)
        finally:
            self._rechecker = None

    def _recheck(self) -> None:
        if len(self._rechecked) > 1000:  # cancelled before their try
            self._rechecked = {job for job in self._rechecked if not job.ready()}
        for name in self._parked.tasks():
            waiting = self._parked.next(name)
            if waiting is not None:
                self._rechecked.add(waiting)
                self._readmit(waiting)
