"""Periodic jobs: the timer entry of one periodic task and the pure policies it follows.

Policies, all pure (time is passed in):

* **Slots.** A crontab's slots are its fire times; an interval's slots are
  aligned to multiples of the interval since the Unix epoch, so every
  process of an app (and every restart) agrees on them.
* **Misfire.** When the timer wakes late (the loop was blocked or the
  machine slept), the slots missed meanwhile are coalesced: the latest one
  runs once if it is within ``misfire_grace`` seconds, never a burst; the
  others are counted as missed.
* **Overlap.** A slot that comes due while the previous run of the same
  task is still unfinished is skipped and counted (unless ``overlap=True``).
* **Jitter.** ``every(..., jitter=J)`` delays a slot's run by a fraction of
  ``J`` derived from a hash of (task name, slot), so every process fires a
  slot at the same moment: a follower does not give a slot up long before
  the leader's timer reaches it.
* **Takeover.** A process that takes the lead runs the slots its
  predecessor may have missed, those after the last slot known to have
  run, at most once (coalesced), if within ``misfire_grace``
  (:meth:`PeriodicEntry.take_over`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskrun.jobs import Job, JobState, TaskLike
from taskrun.schedules import IntervalSchedule, Schedule

#: Bounds the walk over missed slots after a very long pause.
MAX_CATCH_UP_STEPS = 10_000


def at(stamp: float) -> datetime:
    """Return POSIX time ``stamp`` as an aware UTC datetime."""
    return datetime.fromtimestamp(stamp, UTC)


def first_slot(schedule: Schedule, now: float) -> float:
    """Return the first slot of ``schedule`` strictly after POSIX time ``now``."""
    if isinstance(schedule, IntervalSchedule):
        step = schedule.interval.total_seconds()
        return (math.floor(now / step) + 1) * step
    return schedule.next_after(at(now)).timestamp()


def next_slot(schedule: Schedule, slot: float) -> float:
    """Return the slot of ``schedule`` after ``slot`` (POSIX seconds)."""
    if isinstance(schedule, IntervalSchedule):
        return slot + schedule.interval.total_seconds()
    return schedule.next_after(at(slot)).timestamp()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What to do when a slot's timer fires at ``now``."""

    run_slot: float | None  # the slot to run now, or None if all are too late
    missed: int  # slots dropped (coalesced or past the grace period)
    next_slot: float  # the first slot strictly after now


def catch_up(schedule: Schedule, slot: float, now: float, grace: float) -> CatchUp:
    """Coalesce the slots from ``slot`` up to ``now`` into at most one run.

    :param slot: the slot whose timer fired (``slot <= now``).
    :param grace: how late (seconds) a slot may still run.
    """
    latest, missed = slot, 0
    upcoming = next_slot(schedule, slot)
    steps = 0
    while upcoming <= now:
        latest, missed, steps = upcoming, missed + 1, steps + 1
        if steps >= MAX_CATCH_UP_STEPS:
            upcoming = first_slot(schedule, now)
            break
        upcoming = next_slot(schedule, upcoming)
    if now - latest <= grace:
        return CatchUp(latest, missed, upcoming)
    return CatchUp(None, missed + 1, upcoming)


def jitter_delay(name: str, slot: float, jitter: float) -> float:
    """Return how long after ``slot`` the task ``name`` runs, in ``[0, jitter)`` seconds.

    The same in every process and on every call (a hash, not a random draw),
    and spread evenly over ``[0, jitter)`` from one slot to the next.
    """
    if jitter <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{name}\0{slot!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * jitter


def missed_slots(
    schedule: Schedule, first: float, armed: float, now: float, grace: float
) -> CatchUp:
    """Coalesce the slots from ``first`` up to, not including, ``armed`` into at most one run.

    For a process that has just taken the lead: ``first`` is the first slot
    no process is known to have run, ``armed`` the slot its own timer waits
    for (or fires now), which runs on its own.  As in :func:`catch_up`, the
    walk stops after :data:`MAX_CATCH_UP_STEPS` slots (too old to run).

    :returns: the latest such slot to run if within ``grace`` of ``now``
        (else ``None``), how many are dropped, and ``armed``.
    """
    if first >= armed:
        return CatchUp(None, 0, armed)
    latest, missed = first, 0
    upcoming = next_slot(schedule, first)
    while upcoming < armed and missed < MAX_CATCH_UP_STEPS:
        latest, missed = upcoming, missed + 1
        upcoming = next_slot(schedule, upcoming)
    if now - latest <= grace:
        return CatchUp(latest, missed, armed)
    return CatchUp(None, missed + 1, armed)


@dataclass(frozen=True, slots=True)
class PeriodicInfo:
    """A snapshot of one periodic job, for monitoring (``runner.periodic_jobs()``)."""

    #: The periodic task's name (its module and function, e.g. ``shop.tasks.warm_cache``).
    name: str
    #: The schedule as written, e.g. ``crontab('*/15 * * * *', tz='Europe/Berlin')``.
    schedule: str
    #: The next slot this process's timer waits for (aware UTC), or ``None`` if disabled.
    next_run: datetime | None
    #: The latest slot that ran (aware UTC; machine-wide with a shared store), or ``None``.
    last_run: datetime | None
    #: The state of the latest run this process started, or ``None``.
    last_state: JobState | None
    #: Slots this process ran.
    runs: int
    #: Slots skipped because the previous run was unfinished (``overlap=False``).
    skipped_overlap: int
    #: Slots skipped because the pool and backlog were full.
    skipped_full: int
    #: Slots dropped: coalesced after a late wake-up, or later than ``misfire_grace``.
    missed: int
    #: Whether this process leads the periodic jobs (holds the leader lock).
    is_leader: bool
    #: Why the job no longer runs (its schedule or its timing raised), or ``None``.
    disabled: str | None = None
    #: Runs skipped because an operator paused the job.
    skipped_paused: int = 0
    #: Whether the job is paused (in the store, for every process).
    paused: bool = False
    #: ``"machine"`` when last run and leader come from a shared store, else ``"process"``.
    scope: str = "process"
    #: The pid of the process that ran the latest slot (with a shared store), if known.
    leader_pid: int | None = None


class PeriodicEntry:
    """The timer-heap entry of one periodic task; it carries its own counters.

    :param task: the task to run each slot.
    :param schedule: when.
    :param overlap: allow a run while the previous one is unfinished.
    :param misfire_grace: how late (seconds) a slot may still run.
    :param pass_slot: call the task with its slot, an aware UTC datetime.
    """

    def __init__(
        self,
        task: TaskLike,
        schedule: Schedule,
        overlap: bool,
        misfire_grace: float,
        pass_slot: bool = False,
    ) -> None:
        self.task = task
        self.schedule = schedule
        self.overlap = overlap
        self.misfire_grace = misfire_grace
        self.pass_slot = pass_slot
        self.slot = 0.0  # the nominal time of the next run
        self.due = 0.0  # when the timer fires: slot plus any jitter
        #: The latest slot that came due while this process was a follower.
        self.last_seen_slot: float | None = None
        self.last_job: Job[Any] | None = None
        self.last_run: float | None = None
        self.runs = 0
        self.skipped_overlap = 0
        self.skipped_full = 0
        self.skipped_paused = 0
        self.missed = 0
        #: Why this entry is no longer timed (set by the timer on an error), or ``None``.
        self.disabled: str | None = None

    def __lt__(self, other: Any) -> bool:
        return self.due < other.due  # type: ignore[no-any-return]

    def take_over(self, last_run: float | None, now: float) -> CatchUp | None:
        """Return the run a process that just took the lead owes this task at once, if any.

        The slots that may have been missed are those after ``last_run`` or,
        with no record of any run, from the last one this process saw come
        due as a follower, up to the slot its timer is armed for.  If that
        slot is due already (it fires now, or waits out its jitter), its run
        covers them: :attr:`slot` moves back so that :func:`catch_up`
        coalesces them, and this returns ``None``.  Else :func:`missed_slots`
        says which one runs now.

        :param last_run: the latest slot any process is known to have run
            (the leader lock file, a durable store), or ``None``.
        """
        if last_run is not None:
            first = first_slot(self.schedule, last_run)
        elif self.last_seen_slot is not None:
            first = self.last_seen_slot
        else:
            return None
        if first >= self.slot:
            return None
        if self.slot <= now:
            self.slot = first
            return None
        return missed_slots(self.schedule, first, self.slot, now, self.misfire_grace)

    def job_args(self, slot: float) -> tuple[Any, ...]:
        """Return the arguments of the run of ``slot``: the slot itself if ``pass_slot``."""
        return (at(slot),) if self.pass_slot else ()

    def is_busy(self) -> bool:
        """Return whether the previous run has not finished yet."""
        return self.last_job is not None and not self.last_job.ready()

    def info(self, is_leader: bool) -> PeriodicInfo:
        """Return a snapshot for monitoring."""
        last = self.last_job
        return PeriodicInfo(
            name=self.task.name,
            schedule=self.schedule.describe(),
            next_run=at(self.slot) if self.slot else None,
            last_run=at(self.last_run) if self.last_run is not None else None,
            last_state=last.state if last is not None else None,
            runs=self.runs,
            skipped_overlap=self.skipped_overlap,
            skipped_full=self.skipped_full,
            missed=self.missed,
            is_leader=is_leader,
            disabled=self.disabled,
            skipped_paused=self.skipped_paused,
        )
