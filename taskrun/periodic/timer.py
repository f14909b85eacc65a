"""The periodic side of the scheduler's timer: arm each slot, run it while leading.

The scheduler's heap holds one :class:`~taskrun.periodic.PeriodicEntry` per
periodic task, and, with a leader lock, a :class:`LeaderTick`; when one comes
due, the timer greenlet hands it to :meth:`PeriodicTimer.fire`.  Periodic runs
happen only in the process holding the leader lock (when one is
configured): a follower retries the lock every :data:`LEADER_RETRY` seconds
and at each slot, so it takes over promptly, and then runs once the slot its
predecessor may have missed (the lock file and a durable store remember the
last slot run).  Every process fires a slot at the same time: jitter is
derived from the slot, not drawn.  The policies (catch-up, takeover,
jitter) are the pure functions of :mod:`taskrun.periodic.policy`; this module
applies them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from taskrun import signals
from taskrun.errors import InvalidSchedule, QueueFull, TaskrunError
from taskrun.jobs import Job, TaskLike
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.policy import PeriodicEntry, at, catch_up, first_slot, jitter_delay
from taskrun.schedules import IntervalSchedule
from taskrun.stores.base import ResultStore

logger = logging.getLogger(__name__)

#: How often a follower tries to take the leader lock.
LEADER_RETRY = 2.0


class LeaderTick:
    """A heap entry that makes a follower try the leader lock again."""

    __slots__ = ("due",)

    def __init__(self, due: float) -> None:
        self.due = due

    def __lt__(self, other: Any) -> bool:
        return self.due < other.due  # type: ignore[no-any-return]


#: Puts an entry on the scheduler's heap, waking its timer if it is the earliest.
Push = Callable[[PeriodicEntry | LeaderTick], None]


class PeriodicSink(Protocol):
    """Where periodic runs go: the runner's engine, as ``delay()``'s jobs go; it claims slots."""

    @property
    def sender(self) -> object:
        """What signals name as their sender (the runner)."""
        ...

    def has_room(self) -> bool:
        """Return whether a job submitted now would be admitted (the pool is not full)."""
        ...

    def submit(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        countdown: float = 0.0,
        eta: float | None = None,
    ) -> Job[Any]:
        """Record and admit one job of ``task``; raises ``QueueFull`` if there is no room."""
        ...

    def claim_slot(self, task_name: str, slot: float) -> bool:
        """Claim ``slot`` of ``task_name``; ``False`` if another process ran it."""
        ...


class PeriodicTimer:
    """Times a runner's periodic tasks on the scheduler's heap and runs their slots.

    Only the scheduler calls it: :meth:`fire` from its timer greenlet,
    :meth:`start` and :meth:`stop` when the runner starts and stops.

    :param store: claims each slot, and remembers the last one run; replaced
        by the one given to :meth:`start`.
    :param push: puts an entry on the scheduler's heap.
    """

    def __init__(self, store: ResultStore, push: Push) -> None:
        self._store = store
        self._sink: PeriodicSink | None = None
        self._push = push
        self._entries: list[PeriodicEntry] = []
        self._leader: LeaderLock | None = None
        #: The last reason the lock could not be taken (logged once), or ``None``.
        self._lock_problem: str | None = None
        #: The leader's pid as last logged by this process.
        self._holder: int | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this process runs periodic jobs (always, without a leader lock)."""
        return self._leader is None or self._leader.is_leader

    def start(
        self,
        entries: Sequence[PeriodicEntry],
        leader: LeaderLock | None,
        store: ResultStore,
        sink: PeriodicSink,
        now: float,
    ) -> None:
        """Arm ``entries`` from ``now`` on (or from a slot missed while no process ran).

        With ``leader`` (and periodic tasks), try the lock at once and then
        every :data:`LEADER_RETRY` seconds.

        :param store: the runner's store now (it may change before a start).
        :param sink: where each run is submitted.
        """
        self._leader = leader
        self._entries = list(entries)
        self._store = store
        self._sink = sink
        for entry in entries:
            entry.disabled = None
            entry.slot = 0.0
            last = self._store.last_slot(entry.task.name)  # a store error fails the start
            try:
                self._arm(entry, self._resume_slot(entry, last, now))
            except Exception as error:
                self.disable(entry, error, "timing its first slot")
        if leader is not None and entries:
            self._try_lead(now)
            self._push(LeaderTick(now + LEADER_RETRY))

    def stop(self) -> None:
        """Release the leader lock, if held; never blocks."""
        if self._leader is not None:
            self._leader.release()

    def fire(self, entry: PeriodicEntry | LeaderTick, now: float) -> None:
        """Handle ``entry``, come due at ``now``, and put it back on the heap.

        A periodic entry runs its slot if this process leads (coalescing the
        slots missed meanwhile) and is armed for the next one; a leader tick
        tries the lock again.  Never raises: a periodic entry that fails (its
        schedule raises, or returns a time not after the slot) is disabled
        and logged (see :meth:`disable`); the others go on.
        """
        if isinstance(entry, LeaderTick):
            try:
                self._try_lead(now)
            finally:
                entry.due = now + LEADER_RETRY
                self._push(entry)
            return
        if entry.disabled is not None:
            return
        try:
            self._fire_slot(entry, now)
        except Exception as error:
            self.disable(entry, error, "firing its slot")

    def disable(self, entry: PeriodicEntry, error: Exception, doing: str) -> None:
        """Stop timing ``entry`` for good (until a restart), with one ERROR that says why.

        Its :class:`~taskrun.periodic.PeriodicInfo` shows the reason in ``disabled``.
        """
        entry.disabled = f"{type(error).__name__}: {error}"
        logger.error(
            "periodic job %s is disabled: %s raised %s while %s; it will not run again "
            "until the process restarts (fix its schedule or task)",
            entry.task.name,
            type(entry.schedule).__name__,
            entry.disabled,
            doing,
            exc_info=error,
        )

    def _fire_slot(self, entry: PeriodicEntry, now: float) -> None:
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

    def _arm(self, entry: PeriodicEntry, slot: float) -> None:
        if not slot > entry.slot:
            # A user schedule's bug; arming it would fire it again at once, forever.
            raise InvalidSchedule(
                f"{entry.schedule!r} gave {at(slot).isoformat()} as the slot after "
                f"{at(entry.slot).isoformat()}: next_after() must return a later time"
            )
        entry.slot = entry.due = slot
        schedule = entry.schedule
        if isinstance(schedule, IntervalSchedule) and schedule.jitter:
            # Derived from the slot, not drawn: a follower must not give a slot
            # up before the leader's timer has fired it too.
            entry.due += jitter_delay(entry.task.name, slot, schedule.jitter)
        self._push(entry)

    def _resume_slot(self, entry: PeriodicEntry, last: float | None, now: float) -> float:
        """Return the first slot to time: one missed while no process ran, else the next.

        :param last: the latest slot any process ran, as the store remembers it.
        """
        if last is not None:
            missed = first_slot(entry.schedule, last)
            if missed <= now:
                return missed  # fires at once; catch_up() coalesces up to now
        return first_slot(entry.schedule, now)

    def _try_lead(self, now: float) -> bool:
        leader = self._leader
        if leader is None:
            return True
        was_leader = leader.is_leader
        try:
            leads = leader.try_acquire()
        except TaskrunError as error:
            self._note_lock_problem(leader, str(error))
            return False
        if self._lock_problem is not None:
            logger.info("the leader lock %s can be used again", leader.path)
            self._lock_problem = None
        if leads:
            self._holder = os.getpid()
            if not was_leader:
                logger.info("this process now runs periodic jobs (leader lock %s)", leader.path)
                self._take_over(leader, now)
        else:
            self._note_holder(leader)
        return leads

    def _note_lock_problem(self, leader: LeaderLock, problem: str) -> None:
        """Log why the lock cannot be taken: at ERROR once per distinct problem, then at DEBUG."""
        if problem == self._lock_problem:
            logger.debug("still cannot take the leader lock %s: %s", leader.path, problem)
            return
        self._lock_problem = problem
        logger.error(
            "cannot take the leader lock %s, so this process runs no periodic job until it "
            "can (it retries every %s s): %s",
            leader.path,
            LEADER_RETRY,
            problem,
        )

    def _note_holder(self, leader: LeaderLock) -> None:
        """Log, once per change, which process leads while this one follows."""
        holder = leader.holder_pid()
        if holder is not None and holder != self._holder:
            self._holder = holder
            logger.info(
                "pid %d runs the periodic jobs (leader lock %s); this process follows",
                holder,
                leader.path,
            )

    def _take_over(self, leader: LeaderLock, now: float) -> None:
        """Run, once, what the previous leader may have missed of each periodic task.

        A follower gives a slot up when it sees the leader alive, and that
        leader may die before running it.  See
        :meth:`~taskrun.periodic.PeriodicEntry.take_over`.
        """
        for entry in self._entries:
            if entry.disabled is not None:
                continue
            try:
                self._take_over_one(entry, leader, now)
            except Exception as error:
                self.disable(entry, error, "running what the previous leader missed")

    def _take_over_one(self, entry: PeriodicEntry, leader: LeaderLock, now: float) -> None:
        name = entry.task.name
        runs = (self._store.last_slot(name), leader.last_slot(name))
        last = max((slot for slot in runs if slot is not None), default=None)
        plan = entry.take_over(last, now)
        if plan is None:
            return
        entry.missed += plan.missed
        if plan.run_slot is not None:
            logger.info("periodic job %s: running missed slot %s", name, plan.run_slot)
            self._run_slot(entry, plan.run_slot, now)

    def _run_slot(self, entry: PeriodicEntry, slot: float, now: float) -> None:
        name = entry.task.name
        sink = self._sink
        if sink is None:
            return  # not started
        if not entry.overlap and entry.is_busy():
            entry.skipped_overlap += 1
            logger.warning(
                "periodic job %s skipped a run: the previous run (job %s) is still going",
                name,
                entry.last_job.id if entry.last_job else "?",
            )
            self._skipped(entry, "overlap")
            return
        if self._store.is_paused(name):
            entry.skipped_paused += 1
            logger.info("periodic job %s skipped a run: it is paused", name)
            return
        # Room first, claim second: a slot skipped for a full pool is not
        # recorded as run, so a later leader (or the catch-up) may still run it.
        if not sink.has_room():
            self._skip_full(entry)
            return
        if self._ran_before(name, slot) or not sink.claim_slot(name, slot):
            return  # another process ran this slot
        if self._leader is not None:
            self._leader.record_slot(name, slot)  # a later leader will not run it again
        try:
            job = sink.submit(entry.task, entry.job_args(slot), None)
        except QueueFull:
            # The pool filled while the claim was written: the slot is claimed, not run.
            self._skip_full(entry)
            return
        entry.last_job = job
        entry.last_run = now
        entry.runs += 1

    def _ran_before(self, name: str, slot: float) -> bool:
        """Whether an earlier leader recorded in the lock file that it ran ``slot`` (or later).

        A process can take the lead while its own timer fires a slot that its
        predecessor already ran (their loops are not in step): that run must
        not happen twice.  A durable store's claim says the same across
        machines; the lock file says it with any store.
        """
        if self._leader is None:
            return False
        last = self._leader.last_slot(name)
        return last is not None and slot <= last

    def _skip_full(self, entry: PeriodicEntry) -> None:
        entry.skipped_full += 1
        logger.warning(
            "periodic job %s skipped a run: the pool and backlog are full "
            "(raise concurrency or max_pending)",
            entry.task.name,
        )
        self._skipped(entry, "full")

    def _skipped(self, entry: PeriodicEntry, reason: str) -> None:
        if signals.periodic_skipped.receivers and self._sink is not None:
            sender = self._sink.sender
            signals.send(signals.periodic_skipped, sender, task=entry.task, reason=reason)
