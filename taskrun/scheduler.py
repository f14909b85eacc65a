"""One timer greenlet for everything that runs later: delayed jobs, retries, periodic runs.

Entries sit in a heap ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  A due job becomes PENDING and is
handed to the dispatcher's :meth:`~taskrun.dispatcher.Dispatcher.admit_due`,
which never blocks nor refuses (a full pool makes it wait there, in due
order).  Periodic entries, and the leader lock that decides whether their
slots run here, are handed to a :class:`~taskrun.periodic.timer.PeriodicTimer`
as they come due; it submits each run through the runner's one way in.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet

from taskrun.clock import Clock
from taskrun.dispatcher import Dispatcher
from taskrun.jobs import Job, JobState
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.policy import PeriodicEntry
from taskrun.periodic.timer import LeaderTick, PeriodicSink, PeriodicTimer
from taskrun.stores.base import ResultStore

logger = logging.getLogger(__name__)

_Entry = Job[Any] | PeriodicEntry | LeaderTick


class Scheduler:
    """Holds jobs until they are due, then hands them to the dispatcher.

    :param clock: the time source; a manual clock wakes the timer when advanced.
    :param dispatcher: receives due jobs through its :meth:`~Dispatcher.admit_due`.
    :param store: told when a due job becomes PENDING; claims periodic slots.
        Kept as :attr:`store`, which the runner may replace before :meth:`start`.
    """

    def __init__(self, clock: Clock, dispatcher: Dispatcher, store: ResultStore) -> None:
        self._clock = clock
        self._dispatcher = dispatcher
        self.store = store
        self._heap: list[_Entry] = []
        self._periodic = PeriodicTimer(store, self._push)
        self._wake = Event()
        self._greenlet: Greenlet[..., None] | None = None
        self._stopping = False
        # Scheduled and retrying jobs in the heap, not cancelled.
        self.waiting = 0
        self._cancelled = 0  # cancelled jobs still in the heap
        clock.subscribe(self._wake.set)

    def __len__(self) -> int:
        """Return how many jobs wait in the heap (cancelled ones included)."""
        return self.waiting

    def add(self, job: Job[Any]) -> None:
        """Run ``job`` when ``job.due`` (POSIX seconds) comes; O(log n), never blocks."""
        self.waiting += 1
        self._push(job)

    def forget(self, job: Job[Any]) -> None:
        """Stop counting a cancelled ``job``; it leaves the heap lazily.

        When cancelled jobs make up most of the heap, it is rebuilt without
        them, so cancelling many scheduled jobs frees their memory.
        """
        self.waiting -= 1
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap[:] = [e for e in self._heap if not (isinstance(e, Job) and e.ready())]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _push(self, entry: _Entry) -> None:
        heap = self._heap
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self._wake.set()

    @property
    def is_leader(self) -> bool:
        """Whether this process runs periodic jobs (always, without a leader lock)."""
        return self._periodic.is_leader

    def start(
        self,
        sink: PeriodicSink,
        periodic: Sequence[PeriodicEntry] = (),
        leader: LeaderLock | None = None,
    ) -> None:
        """Start the timer greenlet, timing ``periodic`` from now on.

        :param sink: where periodic runs are submitted (the runner's router).
        :param leader: held for periodic runs to happen here (if given).
        """
        self._stopping = False
        self._periodic.start(periodic, leader, self.store, sink, self._clock.time())
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> list[Job[Any]]:
        """Release the leader lock, stop the timer, return the jobs still waiting.

        :returns: the jobs not yet due (SCHEDULED or RETRY).
        """
        self._periodic.stop()
        self._stopping = True
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=5)
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        left = [job for job in self._heap if isinstance(job, Job) and not job.ready()]
        self._heap.clear()
        self.waiting = self._cancelled = 0
        return left

    def _loop(self) -> None:
        heap = self._heap
        wake = self._wake
        while not self._stopping:
            now = self._clock.time()
            while heap and heap[0].due <= now:
                entry = heapq.heappop(heap)
                if isinstance(entry, Job):
                    self._fire(entry, now)
                else:
                    self._periodic.fire(entry, now)
            timeout = self._clock.sleep_for(heap[0].due - now) if heap else None
            wake.clear()
            wake.wait(timeout)

    def _fire(self, job: Job[Any], now: float) -> None:
        if job.ready():
            self._cancelled -= 1
            return  # cancelled while it waited (already uncounted by forget())
        self.waiting -= 1
        job.state = JobState.PENDING
        job.due = 0.0
        self.store.update(job)
        self._dispatcher.admit_due(job)
