"""One timer greenlet for everything that runs later: delayed jobs, retries, periodic runs.

Entries sit in heaps ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  A due job becomes PENDING and is
handed to the dispatcher's :meth:`~taskrun.dispatcher.Dispatcher.admit_due`,
which never blocks nor refuses (a full pool makes it wait there, in due
order).  Periodic entries, and the leader lock that decides whether their
slots run here, are handed to a :class:`~taskrun.periodic.timer.PeriodicTimer`
as they come due; it submits each run through the runner's one way in.

Two kinds of time.  A job's wait (a countdown, an eta, a retry delay) is
measured on the monotonic clock from when the job was added: a step of the
wall clock (an NTP correction) neither delays nor hastens it.  ``job.due``
stays the wall-clock instant computed then (what the store and ``job.eta``
show).  Jobs added while the wall clock stood at the same offset from the
monotonic clock share one heap (a *segment*), ordered by ``due``; a step
starts a new segment, so no job carries a second timestamp.  Periodic slots
are wall-clock times (a crontab's "at 03:00"): their heap is read against
the wall clock on every round, so a step back delays the next slot and a
step forward makes the slots passed meanwhile due at once (coalesced, see
:func:`~taskrun.periodic.policy.catch_up`).  On the real clock the timer
re-reads the wall clock at least every :data:`WALL_CHECK` seconds while
periodic tasks exist, to notice a step.

The timer never dies: an error firing one entry is logged with what it was
(a periodic entry whose schedule raises is disabled, see
:meth:`~taskrun.periodic.timer.PeriodicTimer.fire`) and the others go on;
any other error in a round is logged by a
:class:`~taskrun.supervision.Supervisor` and the loop goes on after a pause.
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
from taskrun.supervision import Supervisor

logger = logging.getLogger(__name__)

#: A change of the wall clock's offset from the monotonic clock beyond this
#: (seconds) is a step: jobs added after it go to a new segment.
STEP = 0.5
#: With periodic tasks, the longest the timer sleeps on the real clock
#: before re-reading the wall clock (to notice a step forward).
WALL_CHECK = 30.0

_Timed = Job[Any] | LeaderTick


class _Segment:
    """Entries added while the wall clock stood ``offset`` s ahead of the monotonic clock.

    An entry is due once ``monotonic() >= entry.due - offset``.
    """

    __slots__ = ("heap", "offset")

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.heap: list[_Timed] = []


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
        # Oldest first; the last one takes new entries (while the offset holds).
        self._segments: list[_Segment] = [_Segment(self._offset())]
        self._slots: list[PeriodicEntry] = []  # periodic entries, by wall-clock due
        self._periodic = PeriodicTimer(store, self._push)
        self._wake = Event()
        self._greenlet: Greenlet[..., None] | None = None
        self._stopping = False
        self._supervisor = Supervisor("the timer", logger)
        # Scheduled and retrying jobs in the heap, not cancelled.
        self.waiting = 0
        self._cancelled = 0  # cancelled jobs still in the heap
        clock.subscribe(self._wake.set)

    def __len__(self) -> int:
        """Return how many jobs wait in the heap (cancelled ones included)."""
        return self.waiting

    def _offset(self) -> float:
        return self._clock.time() - self._clock.monotonic()

    def add(self, job: Job[Any]) -> None:
        """Run ``job`` once as long as ``job.due - clock.time()`` has passed; never blocks.

        The wait is measured from now on the monotonic clock: a later step
        of the wall clock does not move it.  O(log n).
        """
        self.waiting += 1
        self._push(job)

    def forget(self, job: Job[Any]) -> None:
        """Stop counting a cancelled ``job``; it leaves the heap lazily.

        When cancelled jobs make up most of the heap, it is rebuilt without
        them, so cancelling many scheduled jobs frees their memory.
        """
        self.waiting -= 1
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > self.waiting + self._cancelled:
            for segment in self._segments:
                heap = segment.heap
                heap[:] = [e for e in heap if not (isinstance(e, Job) and e.ready())]
                heapq.heapify(heap)
            self._cancelled = 0

    def _push(self, entry: Job[Any] | PeriodicEntry | LeaderTick) -> None:
        if isinstance(entry, PeriodicEntry):
            heap: list[Any] = self._slots
        else:
            segment = self._segments[-1]
            offset = self._offset()
            if abs(offset - segment.offset) > STEP:
                if segment.heap:
                    segment = _Segment(offset)
                    self._segments.append(segment)
                else:
                    segment.offset = offset
            heap = segment.heap
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

        :param sink: where periodic runs are submitted (the runner's engine).
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
        left = [
            job
            for segment in self._segments
            for job in segment.heap
            if isinstance(job, Job) and not job.ready()
        ]
        self._segments = [_Segment(self._offset())]
        self._slots.clear()
        self.waiting = self._cancelled = 0
        return left

    def has_due(self) -> bool:
        """Return whether an entry is due now and not yet fired (the timer is about to)."""
        mono = self._clock.monotonic()
        if any(s.heap and s.heap[0].due - s.offset <= mono for s in self._segments):
            return True
        return bool(self._slots) and self._slots[0].due <= self._clock.time()

    def _loop(self) -> None:
        wake = self._wake
        while not self._stopping:
            # Cleared before reading the clock: a wake-up while firing (a
            # manual clock advanced, an earlier entry added) is not lost.
            wake.clear()
            try:
                timeout = self._round()
            except Exception as error:
                pause = self._supervisor.failed(error, "firing the due entries")
                wake.wait(pause)
                continue
            self._supervisor.ok()
            if timeout is None or timeout > 0:
                wake.wait(timeout)

    def _round(self) -> float | None:
        """Fire every entry due now; return how long to sleep, from a fresh reading of the clock."""
        clock = self._clock
        mono = clock.monotonic()
        for segment in self._segments:
            heap, limit = segment.heap, mono + segment.offset
            while heap and heap[0].due <= limit and not self._stopping:
                self._fire_timed(heapq.heappop(heap))
        slots = self._slots
        while slots and slots[0].due <= clock.time() and not self._stopping:
            self._periodic.fire(heapq.heappop(slots), clock.time())
        segments = self._segments
        while len(segments) > 1 and not segments[0].heap:
            segments.pop(0)
        # Firing takes time (a durable store's claim blocks this greenlet):
        # measure the sleep from now, not from when the round began.
        mono = clock.monotonic()
        wake_at = min((s.heap[0].due - s.offset for s in segments if s.heap), default=None)
        if slots:
            slot_at = slots[0].due - self._offset()
            wake_at = slot_at if wake_at is None else min(wake_at, slot_at)
        if wake_at is None:
            return None
        timeout = clock.sleep_for(max(wake_at - mono, 0.0))
        if timeout is not None and slots:
            timeout = min(timeout, WALL_CHECK)
        return timeout

    def _fire_timed(self, entry: _Timed) -> None:
        if isinstance(entry, LeaderTick):
            self._periodic.fire(entry, self._clock.time())
            return
        try:
            self._fire(entry)
        except Exception as error:
            self._supervisor.failed(error, f"firing job {entry.id} ({entry.name})")

    def _fire(self, job: Job[Any]) -> None:
        if job.ready():
            self._cancelled -= 1
            return  # cancelled while it waited (already uncounted by forget())
        self.waiting -= 1
        job.state = JobState.PENDING
        job.due = 0.0
        try:
            self.store.update(job)
        finally:
            # Recorded or not, the job runs: a job left PENDING and unqueued would hang.
            self._dispatcher.admit_due(job)
