"""Periodic jobs: slots, misfire coalescing, overlap and full-pool skips, leader election."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gevent
import pytest
from gevent.event import Event

from taskrun import ConfigError, JobState, ManualClock, TaskRunner
from taskrun.periodic import catch_up, first_slot, next_slot
from taskrun.schedules import crontab, every

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHILD = Path(__file__).with_name("periodic_child.py")


def settle() -> None:
    """Let the timer and the workers run what came due."""
    for _ in range(5):
        gevent.sleep(0)
    gevent.sleep(0.01)


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(START)


def make_runner(clock: ManualClock, **options: object) -> TaskRunner:
    return TaskRunner(clock=clock, lock_path=None, concurrency=2, max_pending=1, **options)  # type: ignore[arg-type]


# -- pure policies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "now", "expected"),
    [
        (every(minutes=5), START + timedelta(minutes=2), START + timedelta(minutes=5)),
        (every(minutes=5), START, START + timedelta(minutes=5)),
        (every(hours=1), START + timedelta(minutes=59), START + timedelta(hours=1)),
        (crontab("*/15 * * * *"), START + timedelta(minutes=1), START + timedelta(minutes=15)),
    ],
)
def test_first_slot_is_aligned_and_strictly_later(
    schedule: object, now: datetime, expected: datetime
) -> None:
    assert first_slot(schedule, now.timestamp()) == expected.timestamp()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("late_by", "grace", "run", "missed"),
    [
        (0.5, 60, 0, 0),  # on time: run the slot itself
        (10 * 60 + 1, 120, 10 * 60, 10),  # 10 slots passed: run the latest, count 10 missed
        (10 * 60 + 50, 30, None, 11),  # even the latest is too late: run none
    ],
)
def test_catch_up_coalesces_missed_slots_into_one_run(
    late_by: float, grace: float, run: float | None, missed: int
) -> None:
    schedule = every(minutes=1)
    slot = START.timestamp()
    plan = catch_up(schedule, slot, slot + late_by, grace)
    assert plan.run_slot == (None if run is None else slot + run)
    assert plan.missed == missed
    assert plan.next_slot > slot + late_by
    assert plan.next_slot == next_slot(schedule, plan.next_slot - 60)


# -- with a manual clock -----------------------------------------------------------


def test_periodic_job_runs_once_per_slot(manual: ManualClock) -> None:
    runner = make_runner(manual)
    seen: list[datetime] = []

    @runner.periodic(crontab("*/15 * * * *"))
    def report() -> None:
        seen.append(manual.now())

    with runner:
        for _ in range(12):  # an hour in 5-minute steps
            manual.advance(timedelta(minutes=5))
            settle()
    assert seen == [START + timedelta(minutes=m) for m in (15, 30, 45, 60)]


def test_periodic_task_is_still_a_task(manual: ManualClock) -> None:
    runner = make_runner(manual)

    @runner.periodic(every(minutes=5), name="poll")
    def poll() -> str:
        return "polled"

    assert poll() == "polled"
    with runner:
        assert poll.delay().get(timeout=5) == "polled"
    assert poll.name == "poll"


def test_overlapping_run_is_skipped_and_counted(manual: ManualClock) -> None:
    runner = make_runner(manual)
    release = Event()
    starts: list[datetime] = []

    @runner.periodic(every(minutes=1))
    def slow() -> None:
        starts.append(manual.now())
        release.wait(5)

    with runner:
        manual.advance(60)
        settle()
        manual.advance(60)  # the first run still holds
        settle()
        (info,) = runner.periodic_jobs()
        release.set()
        settle()
    assert len(starts) == 1
    assert info.skipped_overlap == 1
    assert info.last_state is JobState.STARTED


def test_overlap_allowed_runs_concurrently(manual: ManualClock) -> None:
    runner = make_runner(manual)
    release = Event()
    starts: list[datetime] = []

    @runner.periodic(every(minutes=1), overlap=True)
    def slow() -> None:
        starts.append(manual.now())
        release.wait(5)

    with runner:
        manual.advance(60)
        settle()
        manual.advance(60)
        settle()
        release.set()
    assert len(starts) == 2


def test_full_pool_skips_periodic_run(manual: ManualClock) -> None:
    runner = make_runner(manual)
    release = Event()

    @runner.task
    def hog() -> None:
        release.wait(5)

    ran: list[int] = []

    @runner.periodic(every(minutes=1))
    def tick() -> None:
        ran.append(1)

    with runner:
        hogs = [hog.delay() for _ in range(3)]  # two running, one waiting: full
        settle()
        manual.advance(60)
        settle()
        (info,) = runner.periodic_jobs()
        release.set()
        for job in hogs:
            job.get(timeout=5)
    assert ran == []
    assert info.skipped_full == 1


def test_missed_runs_are_coalesced_never_a_burst(manual: ManualClock) -> None:
    runner = make_runner(manual)
    seen: list[datetime] = []

    @runner.periodic(every(minutes=1), misfire_grace=30)
    def tick() -> None:
        seen.append(manual.now())

    with runner:
        manual.advance(timedelta(minutes=10))  # as if the loop was blocked 10 minutes
        settle()
        (info,) = runner.periodic_jobs()
    assert seen == [START + timedelta(minutes=10)]
    assert info.missed == 9
    assert info.runs == 1
    assert info.next_run == START + timedelta(minutes=11)


def test_jitter_delays_each_run_within_bounds(manual: ManualClock) -> None:
    runner = make_runner(manual)
    seen: list[float] = []

    @runner.periodic(every(minutes=1, jitter=20))
    def tick() -> None:
        seen.append(manual.time())

    with runner:
        for _ in range(6 * 60):
            manual.advance(1)
            for _ in range(3):
                gevent.sleep(0)
    slots = [START.timestamp() + 60 * k for k in range(1, 6)]
    seen = seen[:5]
    assert all(slot <= at <= slot + 20 for slot, at in zip(slots, seen, strict=True))


def test_periodic_jobs_reports_schedule_and_leadership(manual: ManualClock) -> None:
    runner = make_runner(manual)

    @runner.periodic(crontab("0 3 * * *", tz="Europe/Berlin"), name="nightly")
    def nightly() -> None: ...

    with runner:
        (info,) = runner.periodic_jobs()
    assert info.name == "nightly"
    assert info.schedule == "crontab('0 3 * * *', tz='Europe/Berlin')"
    assert info.next_run == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert info.last_run is None
    assert info.is_leader


def test_periodic_rejects_a_non_schedule() -> None:
    runner = TaskRunner(lock_path=None)
    with pytest.raises(ConfigError, match=r"needs a schedule, got '\*/5 \* \* \* \*'"):
        runner.periodic("*/5 * * * *")  # type: ignore[arg-type]


def test_runner_without_periodic_jobs_takes_no_lock(tmp_path: Path, manual: ManualClock) -> None:
    lock = tmp_path / "app.lock"
    runner = TaskRunner(clock=manual, lock_path=lock)
    with runner:
        pass
    assert not lock.exists()


def test_only_the_lock_holder_runs_periodic_jobs(tmp_path: Path, manual: ManualClock) -> None:
    lock = tmp_path / "app.lock"
    runs: list[str] = []
    runners = []
    for label in ("first", "second"):
        runner = TaskRunner(clock=manual, lock_path=lock)

        @runner.periodic(every(minutes=1), name="tick")
        def tick(label: str = label) -> None:
            runs.append(label)

        runners.append(runner.start())
    try:
        manual.advance(60)
        settle()
        leaders = [info.is_leader for r in runners for info in r.periodic_jobs()]
        runners[0].stop(timeout=1)  # the leader goes away; the other takes over at the next slot
        manual.advance(60)
        settle()
    finally:
        for runner in runners:
            runner.stop(timeout=1)
    assert leaders == [True, False]
    assert runs == ["first", "second"]


# -- real processes sharing a lock file ----------------------------------------------


def read_runs(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(pid), int(slot)) for pid, slot in rows]


def wait_for(predicate: object, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


@pytest.mark.timeout(60)
def test_leader_killed_another_process_takes_over_and_each_slot_runs_once(
    tmp_path: Path,
) -> None:
    lock, out = tmp_path / "shop.lock", tmp_path / "runs.txt"
    children = [
        subprocess.Popen([sys.executable, str(CHILD), str(lock), str(out)]) for _ in range(3)
    ]
    try:
        wait_for(lambda: len(read_runs(out)) >= 3, 15, "three periodic runs")
        leader = read_runs(out)[-1][0]
        os.kill(leader, signal.SIGKILL)
        killed_at = time.time()
        wait_for(
            lambda: any(pid != leader and slot > killed_at for pid, slot in read_runs(out)),
            10,
            "another process to take over",
        )
        wait_for(lambda: read_runs(out)[-1][1] >= killed_at + 3, 10, "runs after the takeover")
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)
    runs = read_runs(out)
    slots = Counter(slot for _, slot in runs)
    twice = sorted(slot for slot, count in slots.items() if count > 1)
    assert twice == [], f"slots run more than once: {twice}"
    first, last = min(slots), max(slots)
    never = sorted(set(range(first, last + 1)) - set(slots))
    assert never == [], f"slots never run: {never} (runs: {runs})"
    assert len({pid for pid, _ in runs}) >= 2


@pytest.mark.parametrize(("grace", "catch_up_runs"), [(120, 1), (10, 0)])
def test_slots_missed_while_stopped_get_one_catch_up_run_with_a_durable_store(
    tmp_path: Path, manual: ManualClock, grace: float, catch_up_runs: int
) -> None:
    path = tmp_path / "jobs.db"
    seen: list[datetime] = []

    def new_runner() -> TaskRunner:
        runner = TaskRunner(clock=manual, lock_path=None, store=path)

        @runner.periodic(every(minutes=1), name="tick", misfire_grace=grace)
        def tick() -> None:
            seen.append(manual.now())

        return runner

    first = new_runner().start()
    manual.advance(60)
    settle()
    first.stop(timeout=5)
    manual.advance(5 * 60 + 30)  # down for slots +2 .. +6 minutes; now 30 s past the last
    second = new_runner().start()
    settle()
    (info,) = second.periodic_jobs()
    second.stop(timeout=5)

    caught_up = [START + timedelta(minutes=6, seconds=30)] * catch_up_runs  # run at once
    assert seen == [START + timedelta(minutes=1), *caught_up]
    assert info.missed == 5 - catch_up_runs
