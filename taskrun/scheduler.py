"""One timer greenlet for everything that runs later: delayed jobs, retries, periodic runs.

Entries sit in a heap ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  Due jobs are handed to the
dispatcher without blocking; a periodic run that finds the pool full is
skipped and counted.  A delayed job or retry that finds it full becomes
PENDING and waits in a FIFO overflow, which the dispatcher's workers drain
as they free up (one warning when the overflow starts, one info line when
it empties).  Periodic entries, and the leader lock that decides whether
their slots run here, are handed to a
:class:`~taskrun.periodic.timer.PeriodicTimer` as they come due.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet

from taskrun.clock import Clock
from taskrun.dispatcher import Dispatcher
from taskrun.jobs import Job, JobControl, JobState
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.policy import PeriodicEntry
from taskrun.periodic.timer import LeaderTick, PeriodicTimer
from taskrun.stores.base import ResultStore

logger = logging.getLogger(__name__)

_Entry = Job[Any] | PeriodicEntry | LeaderTick


class Scheduler:
    """Holds jobs until they are due, then hands them to the dispatcher.

    :param clock: the time source; a manual clock wakes the timer when advanced.
    :param dispatcher: receives due jobs through its non-blocking ``try_submit``.
    :param store: told when a due job becomes PENDING; claims periodic slots.
        Kept as :attr:`store`, which the runner may replace before :meth:`start`.
    :param control: the runner, which periodic jobs report to.
    """

    def __init__(
        self, clock: Clock, dispatcher: Dispatcher, store: ResultStore, control: JobControl
    ) -> None:
        self._clock = clock
        self._dispatcher = dispatcher
        self.store = store
        self._heap: list[_Entry] = []
        self._periodic = PeriodicTimer(dispatcher, store, control, self._push)
        self._wake = Event()
        self._greenlet: Greenlet[..., None] | None = None
        self._stopping = False
        # Scheduled and retrying jobs in the heap (not cancelled), and due
        # ones in the overflow (until the dispatcher takes them).
        self.waiting = 0
        # Due jobs that found no room in the pool, oldest first; its workers pull from it.
        self._overflow: deque[Job[Any]] = deque()
        self._overflow_since = 0.0  # when the overflow last started
        self._overflowed = 0  # how many jobs went through it since then
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
        self, periodic: Sequence[PeriodicEntry] = (), leader: LeaderLock | None = None
    ) -> None:
        """Start the timer greenlet, timing ``periodic`` from now on.

        Periodic runs need ``leader`` (if given) to be held.
        """
        self._stopping = False
        self._periodic.start(periodic, leader, self.store, self._clock.time())
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> list[Job[Any]]:
        """Release the leader lock, stop the timer, return the jobs still waiting.

        :returns: first the due jobs that waited for room in the pool
            (PENDING), oldest first, then those not yet due (SCHEDULED or RETRY).
        """
        self._periodic.stop()
        self._stopping = True
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=5)
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        self._dispatcher.pull_from(None)
        left = [job for job in self._overflow if not job.ready()]
        left += [job for job in self._heap if isinstance(job, Job) and not job.ready()]
        self._overflow.clear()
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
        job.state = JobState.PENDING
        job.due = 0.0
        # Behind jobs already waiting for room, a due job waits its turn.
        if not self._overflow and self._dispatcher.try_submit(job):
            self.waiting -= 1
            self.store.update(job)
            return
        # Never block on a full pool, nor poll it: the job waits in the
        # overflow, which the workers drain in order as they free up.
        self.store.update(job)
        if not self._overflow:
            logger.warning(
                "job %s (%s) is due but the pool and backlog are full; it and any due "
                "after it wait, in due order, for a free worker (raise concurrency or "
                "max_pending if this recurs)",
                job.id,
                job.name,
            )
            self._overflow_since = now
            self._overflowed = 0
            self._dispatcher.pull_from(self._next_overdue)
        self._overflow.append(job)
        self._overflowed += 1

    def _next_overdue(self) -> Job[Any] | None:
        """Hand the dispatcher the oldest due job waiting for room; ``None`` once none waits."""
        overflow = self._overflow
        job = None
        while overflow and job is None:
            job = overflow.popleft()
            self.waiting -= 1
            if job.ready():
                job = None  # cancelled while it waited: dropped here
        if not overflow:
            self._dispatcher.pull_from(None)
            logger.info(
                "the %d due job(s) that waited for a free worker are all admitted, %.2f s "
                "after the pool and backlog filled",
                self._overflowed,
                self._clock.time() - self._overflow_since,
            )
        return job
