"""One timer greenlet for everything that runs later: delayed jobs and retries.

Entries sit in a heap ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  Due jobs are handed to the
dispatcher without blocking.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet

from taskrun.clock import Clock
from taskrun.dispatcher import Dispatcher
from taskrun.jobs import Job, JobState
from taskrun.store import ResultStore

logger = logging.getLogger(__name__)

#: How long a due job waits before trying again when the pool is full.
FULL_POOL_RETRY = 0.05


class Scheduler:
    """Holds jobs until they are due, then hands them to the dispatcher.

    :param clock: the time source; a manual clock wakes the timer when advanced.
    :param dispatcher: receives due jobs through its non-blocking ``try_submit``.
    :param store: told when a due job becomes PENDING.
    """

    def __init__(self, clock: Clock, dispatcher: Dispatcher, store: ResultStore) -> None:
        self._clock = clock
        self._dispatcher = dispatcher
        self._store = store
        self._heap: list[Job[Any]] = []
        self._wake = Event()
        self._greenlet: Greenlet[..., None] | None = None
        self._stopping = False
        clock.subscribe(self._wake.set)

    def __len__(self) -> int:
        """Return how many entries wait in the heap (cancelled ones included)."""
        return len(self._heap)

    def add(self, job: Job[Any]) -> None:
        """Run ``job`` when ``job.due`` (POSIX seconds) comes; O(log n), never blocks."""
        heap = self._heap
        heapq.heappush(heap, job)
        if heap[0] is job:
            self._wake.set()

    def start(self) -> None:
        """Start the timer greenlet."""
        self._stopping = False
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> list[Job[Any]]:
        """Stop the timer greenlet and return the jobs that were still waiting."""
        self._stopping = True
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=5)
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        left = [job for job in self._heap if not job.ready()]
        self._heap.clear()
        return left

    def _loop(self) -> None:
        heap = self._heap
        wake = self._wake
        while not self._stopping:
            now = self._clock.time()
            while heap and heap[0].due <= now:
                self._fire(heapq.heappop(heap), now)
            timeout = self._clock.sleep_for(heap[0].due - now) if heap else None
            wake.clear()
            wake.wait(timeout)

    def _fire(self, job: Job[Any], now: float) -> None:
        if job.ready():
            return  # cancelled while it waited
        previous = job.state
        job.state = JobState.PENDING
        if self._dispatcher.try_submit(job):
            job.due = 0.0
            self._store.update(job)
            return
        # Never block on a full pool: try again shortly, keeping the job.
        job.state = previous
        logger.warning(
            "job %s (%s) is due but the pool and backlog are full; trying again in %.2f s",
            job.id,
            job.name,
            FULL_POOL_RETRY,
        )
        job.due = now + FULL_POOL_RETRY
        heapq.heappush(self._heap, job)
