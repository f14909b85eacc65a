"""One timer greenlet for everything that runs later: delayed jobs, retries, periodic runs.

Entries sit in a heap ordered by due time.  The timer greenlet sleeps until
the earliest one is due and is woken early only when an earlier entry
arrives, the clock is advanced (a manual clock) or the runner stops: no
greenlet per delayed job and no polling.  Due jobs are handed to the
dispatcher without blocking; a periodic run that finds the pool full is
skipped and counted.  A delayed job or retry that finds it full becomes
PENDING and waits in a FIFO overflow, which the dispatcher's workers drain
as they free up (one warning when the overflow starts, one info line when
it empties).  Periodic runs happen only in the process holding the
leader lock (when one is configured): a follower retries the lock every
:data:`LEADER_RETRY` seconds and at each slot, so it takes over promptly,
and then runs once the slot its predecessor may have missed (the lock file
and a durable store remember the last slot run).  Every process fires a
slot at the same time: jitter is derived from the slot, not drawn.
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
from taskrun.errors import TaskrunError
from taskrun.jobs import Job, JobControl, JobState
from taskrun.leader import LeaderLock
from taskrun.periodic import PeriodicEntry, catch_up, first_slot, jitter_delay
from taskrun.schedules import IntervalSchedule
from taskrun.store import ResultStore

logger = logging.getLogger(__name__)

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
        self._periodic: list[PeriodicEntry] = []
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
        return self._leader is None or self._leader.is_leader

    def start(
        self, periodic: Sequence[PeriodicEntry] = (), leader: LeaderLock | None = None
    ) -> None:
        """Start the timer greenlet, timing ``periodic`` from now on.

        Periodic runs need ``leader`` (if given) to be held.
        """
        self._stopping = False
        self._leader = leader
        self._periodic = list(periodic)
        now = self._clock.time()
        for entry in periodic:
            self._arm(entry, self._resume_slot(entry, now))
        if leader is not None and periodic:
            self._try_lead(now)
            self._push(_LeaderTick(now + LEADER_RETRY))
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> list[Job[Any]]:
        """Release the leader lock, stop the timer, return the jobs still waiting.

        :returns: first the due jobs that waited for room in the pool
            (PENDING), oldest first, then those not yet due (SCHEDULED or RETRY).
        """
        if self._leader is not None:
            self._leader.release()
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
                elif isinstance(entry, PeriodicEntry):
                    self._fire_periodic(entry, now)
                else:
                    self._try_lead(now)
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
            # Derived from the slot, not drawn: a follower must not give a slot
            # up before the leader's timer has fired it too.
            entry.due += jitter_delay(entry.task.name, slot, schedule.jitter)
        self._push(entry)

    def _resume_slot(self, entry: PeriodicEntry, now: float) -> float:
        """Return the first slot to time: one missed while no process ran, else the next."""
        last = self.store.last_slot(entry.task.name)
        if last is not None:
            missed = first_slot(entry.schedule, last)
            if missed <= now:
                return missed  # fires at once; catch_up() coalesces up to now
        return first_slot(entry.schedule, now)

    def _try_lead(self, now: float) -> bool:
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
            self._take_over(self._leader, now)
        return leads

    def _take_over(self, leader: LeaderLock, now: float) -> None:
        """Run, once, what the previous leader may have missed of each periodic task.

        A follower gives a slot up when it sees the leader alive, and that
        leader may die before running it.  See
        :meth:`~taskrun.periodic.PeriodicEntry.take_over`.
        """
        for entry in self._periodic:
            name = entry.task.name
            runs = (self.store.last_slot(name), leader.last_slot(name))
            last = max((slot for slot in runs if slot is not None), default=None)
            plan = entry.take_over(last, now)
            if plan is None:
                continue
            entry.missed += plan.missed
            if plan.run_slot is not None:
                logger.info("periodic job %s: running missed slot %s", name, plan.run_slot)
                self._run_slot(entry, plan.run_slot, now)

    def _fire_periodic(self, entry: PeriodicEntry, now: float) -> None:
        leads = self._try_lead(now)  # first: taking the lead may move entry.slot back
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
        if plan.run_slot is not None:
            if leads:
                self._run_slot(entry, plan.run_slot, now)
            else:
                entry.last_seen_slot = plan.run_slot
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
        if self._leader is not None:
            self._leader.record_slot(name, slot)  # a later leader will not run it again
        job: Job[Any] = Job(entry.task, entry.job_args(slot), None, self._control, enqueued=now)
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
