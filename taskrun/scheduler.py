"""One timer greenlet for everything that runs later: delayed jobs, retries, periodic runs.

Entries sit in a heap ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  Due jobs are handed to the
dispatcher without blocking; a periodic run that finds the pool full is
skipped and counted.  Periodic runs happen only in the process holding the
leader lock (when one is configured): a follower retries the lock every
:data:`LEADER_RETRY` seconds and at each slot, so it takes over promptly.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections.abc import Sequence
from typing import Any

import gevent
from gevent.event import Event
from gevent.greenlet import Greenlet

from taskrun.clock import Clock
from taskrun.dispatcher import Dispatcher
from taskrun.errors import TaskrunError
from taskrun.jobs import Job, JobControl, JobState
from taskrun.leader import LeaderLock
from taskrun.periodic import PeriodicEntry, catch_up, first_slot, next_slot
from taskrun.schedules import IntervalSchedule
from taskrun.store import ResultStore

logger = logging.getLogger(__name__)

#: How long a due job waits before trying again when the pool is full.
FULL_POOL_RETRY = 0.05
#: How often a follower tries to take the leader lock.
LEADER_RETRY = 2.0


class _LeaderTick:
    """A heap entry that makes a follower try the leader lock again."""

    __slots__ = ("due",)

    def __init__(self, due: float) -> None:
        self.due = due

    def __lt__(self, other: Any) -> bool:
        return self.due < other.due  # type: ignore[no-any-return]


_Entry = Job[Any] | PeriodicEntry | _LeaderTick


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
        self._control = control
        self._heap: list[_Entry] = []
        self._leader: LeaderLock | None = None
        self._wake = Event()
        self._greenlet: Greenlet[..., None] | None = None
        self._stopping = False
        self._rand = random.Random()
        self.waiting = 0  # scheduled and retrying jobs in the heap, not cancelled
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
        return self._leader is None or self._leader.is_leader

    def start(
        self, periodic: Sequence[PeriodicEntry] = (), leader: LeaderLock | None = None
    ) -> None:
        """Start the timer greenlet, timing ``periodic`` from now on.

        Periodic runs need ``leader`` (if given) to be held.
        """
        self._stopping = False
        self._leader = leader
        now = self._clock.time()
        for entry in periodic:
            self._arm(entry, self._resume_slot(entry, now))
        if leader is not None and periodic:
            self._try_lead()
            self._push(_LeaderTick(now + LEADER_RETRY))
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> list[Job[Any]]:
        """Release the leader lock, stop the timer, return the jobs still waiting."""
        if self._leader is not None:
            self._leader.release()
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
                elif isinstance(entry, PeriodicEntry):
                    self._fire_periodic(entry, now)
                else:
                    self._try_lead()
                    entry.due = now + LEADER_RETRY
                    heapq.heappush(heap, entry)
            timeout = self._clock.sleep_for(heap[0].due - now) if heap else None
            wake.clear()
            wake.wait(timeout)

    # -- periodic runs -------------------------------------------------------

    def _arm(self, entry: PeriodicEntry, slot: float) -> None:
        entry.slot = entry.due = slot
        schedule = entry.schedule
        if isinstance(schedule, IntervalSchedule) and schedule.jitter:
            entry.due += self._rand.uniform(0, schedule.jitter)
        self._push(entry)

    def _resume_slot(self, entry: PeriodicEntry, now: float) -> float:
        """Return the first slot to time: one missed while no process ran, else the next."""
        last = self.store.last_slot(entry.task.name)
        if last is not None:
            missed = next_slot(entry.schedule, last)
            if missed <= now:
                return missed  # fires at once; catch_up() coalesces up to now
        return first_slot(entry.schedule, now)

    def _try_lead(self) -> bool:
        if self._leader is None:
            return True
        was_leader = self._leader.is_leader
        try:
            leads = self._leader.try_acquire()
        except TaskrunError:
            logger.exception("cannot take the leader lock %s", self._leader.path)
            return False
        if leads and not was_leader:
            logger.info("this process now runs periodic jobs (leader lock %s)", self._leader.path)
        return leads

    def _fire_periodic(self, entry: PeriodicEntry, now: float) -> None:
        plan = catch_up(entry.schedule, entry.slot, now, entry.misfire_grace)
        if plan.missed:
            entry.missed += plan.missed
            logger.warning(
                "periodic job %s missed %d run(s) (%.1f s behind its schedule: the loop was "
                "blocked or no process ran); they are coalesced, not replayed",
                entry.task.name,
                plan.missed,
                now - entry.slot,
            )
        if plan.run_slot is not None and self._try_lead():
            self._run_slot(entry, plan.run_slot, now)
        self._arm(entry, plan.next_slot)

    def _run_slot(self, entry: PeriodicEntry, slot: float, now: float) -> None:
        name = entry.task.name
        if not entry.overlap and entry.is_busy():
            entry.skipped_overlap += 1
            logger.warning(
                "periodic job %s skipped a run: the previous run (job %s) is still going",
                name,
                entry.last_job.id if entry.last_job else "?",
            )
            return
        if not self.store.claim_slot(name, slot):
            return  # another process ran this slot
        job: Job[Any] = Job(entry.task, (), None, self._control, enqueued=now)
        if not self._dispatcher.try_submit(job):
            entry.skipped_full += 1
            logger.warning(
                "periodic job %s skipped a run: the pool and backlog are full "
                "(raise concurrency or max_pending)",
                name,
            )
            return
        self.store.add(job)
        entry.last_job = job
        entry.last_run = now
        entry.runs += 1

    def _fire(self, job: Job[Any], now: float) -> None:
        if job.ready():
            self._cancelled -= 1
            return  # cancelled while it waited (already uncounted by forget())
        previous = job.state
        job.state = JobState.PENDING
        if self._dispatcher.try_submit(job):
            self.waiting -= 1
            job.due = 0.0
            self.store.update(job)
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
