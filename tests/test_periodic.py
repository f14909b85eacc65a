"""Periodic jobs: slots, misfire coalescing, overlap and full-pool skips, leader election."""

from __future__ import annotations

import math
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
from serving_helpers import wait_for

from taskrun import ConfigError, JobState, ManualClock, TaskRunner
from taskrun.periodic.policy import catch_up, first_slot, jitter_delay, missed_slots, next_slot
from taskrun.periodic.timer import LEADER_RETRY
from taskrun.schedules import crontab, every

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHILD = Path(__file__).with_name("periodic_child.py")


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


def test_jitter_is_derived_from_task_and_slot_the_same_in_every_process() -> None:
    slot = START.timestamp()
    code = (
        "from taskrun.periodic.policy import jitter_delay; "
        "print(repr(jitter_delay('tick', %r, 20)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code % slot], capture_output=True, text=True, timeout=30, check=True
    )
    delays = {jitter_delay("tick", slot + 60 * k, 20) for k in range(200)}

    assert float(other.stdout) == jitter_delay("tick", slot, 20)  # another interpreter agrees
    assert all(0 <= delay < 20 for delay in delays)
    assert len(delays) == 200 and min(delays) < 2 and max(delays) > 18  # spread, per slot
    assert jitter_delay("poll", slot, 20) != jitter_delay("tick", slot, 20)
    assert jitter_delay("tick", slot, 0) == 0


@pytest.mark.parametrize(
    ("first", "armed", "now", "grace", "run", "missed"),
    [
        (120, 180, 150, 60, 120, 0),  # the one slot before the armed one: run it
        (60, 180, 150, 60, 120, 1),  # two: run the latest, count the other
        (180, 180, 150, 60, None, 0),  # nothing before the armed slot
        (60, 180, 170, 30, None, 2),  # the latest is too old
    ],
)
def test_a_new_leader_coalesces_the_slots_it_may_have_missed(
    first: float, armed: float, now: float, grace: float, run: float | None, missed: int
) -> None:
    base = START.timestamp()
    plan = missed_slots(every(minutes=1), base + first, base + armed, base + now, grace)
    assert plan.run_slot == (None if run is None else base + run)
    assert plan.missed == missed


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
            assert runner.join(timeout=5)
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


def blocking_periodic(
    runner: TaskRunner, manual: ManualClock, *, overlap: bool = False
) -> tuple[Event, list[datetime]]:
    """Register a one-minute periodic job that records its starts and waits for the event."""
    release = Event()
    starts: list[datetime] = []

    @runner.periodic(every(minutes=1), overlap=overlap)
    def slow() -> None:
        starts.append(manual.now())
        release.wait(5)

    return release, starts


def test_overlapping_run_is_skipped_and_counted(manual: ManualClock) -> None:
    runner = make_runner(manual)
    release, starts = blocking_periodic(runner, manual)

    with runner:
        manual.advance(60)
        wait_for(lambda: len(starts) == 1, 5, "the first run")
        manual.advance(60)  # the first run still holds
        wait_for(lambda: runner.periodic_jobs()[0].skipped_overlap, 5, "the skip")
        (info,) = runner.periodic_jobs()
        release.set()
        assert runner.join(timeout=5)
    assert len(starts) == 1
    assert info.skipped_overlap == 1
    assert info.last_state is JobState.STARTED


def test_overlap_allowed_runs_concurrently(manual: ManualClock) -> None:
    runner = make_runner(manual)
    release, starts = blocking_periodic(runner, manual, overlap=True)

    with runner:
        manual.advance(60)
        wait_for(lambda: len(starts) == 1, 5, "the first run")
        manual.advance(60)
        wait_for(lambda: len(starts) == 2, 5, "the second run, alongside")
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
        manual.advance(60)
        wait_for(lambda: runner.periodic_jobs()[0].skipped_full, 5, "the skip")
        (info,) = runner.periodic_jobs()
        release.set()
        for job in hogs:
            job.get(timeout=5)
    assert ran == []
    assert info.skipped_full == 1


def test_a_slot_skipped_for_a_full_pool_is_not_recorded_as_run(
    manual: ManualClock, tmp_path: Path
) -> None:
    runner = make_runner(manual, store=tmp_path / "jobs.db")
    release = Event()

    @runner.task
    def hog() -> None:
        release.wait(5)

    @runner.periodic(every(minutes=1))
    def tick() -> None:
        pass

    with runner:
        hogs = [hog.delay() for _ in range(3)]  # two running, one waiting: full
        manual.advance(60)
        wait_for(lambda: runner.periodic_jobs()[0].skipped_full, 5, "the skip")
        skipped_slot_claimed = runner.store.last_slot(tick.name)
        release.set()
        for job in hogs:
            job.get(timeout=5)
        manual.advance(60)
        wait_for(lambda: runner.periodic_jobs()[0].runs == 1, 5, "the next slot's run")
        next_slot_claimed = runner.store.last_slot(tick.name)
    assert skipped_slot_claimed is None
    assert next_slot_claimed == (START + timedelta(minutes=2)).timestamp()


def test_a_periodic_run_enters_like_delay_recorded_in_the_store_first(
    manual: ManualClock,
) -> None:
    runner = make_runner(manual)
    seen_in_store: list[bool] = []

    @runner.periodic(every(minutes=1))
    def tick() -> None:
        (job,) = [job for job in runner.store if job.name == tick.name]
        seen_in_store.append(runner.job(job.id) is job)

    with runner:
        manual.advance(60)
        wait_for(lambda: seen_in_store, 5, "the periodic run")
        submitted = runner.stats()["submitted"]
    assert seen_in_store == [True]
    assert submitted == 1


def test_missed_runs_are_coalesced_never_a_burst(manual: ManualClock) -> None:
    runner = make_runner(manual)
    seen: list[datetime] = []

    @runner.periodic(every(minutes=1), misfire_grace=30)
    def tick() -> None:
        seen.append(manual.now())

    with runner:
        manual.advance(timedelta(minutes=10))  # as if the loop was blocked 10 minutes
        assert runner.join(timeout=5)
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


def test_pass_slot_gives_the_task_its_slot_not_the_time_it_runs(manual: ManualClock) -> None:
    runner = make_runner(manual)
    seen: list[tuple[datetime, datetime]] = []

    @runner.periodic(every(minutes=1, jitter=20), misfire_grace=120, pass_slot=True)
    def report(slot: datetime) -> None:
        seen.append((slot, manual.now()))

    with runner:
        manual.advance(timedelta(minutes=3, seconds=50))  # late: three slots coalesced
        assert runner.join(timeout=5)
    assert seen == [(START + timedelta(minutes=3), START + timedelta(minutes=3, seconds=50))]
    assert seen[0][0].tzinfo is UTC


@pytest.mark.parametrize(
    ("pass_slot", "message"),
    [
        (False, r"cannot be called with no argument .*or pass pass_slot=True"),
        (True, r"cannot be called with one argument, its slot .*def report\(slot: datetime\)"),
    ],
)
def test_a_periodic_function_with_the_wrong_parameters_is_refused(
    pass_slot: bool, message: str
) -> None:
    runner = TaskRunner(lock_path=None)

    def takes_one(slot: datetime) -> None: ...

    def takes_none() -> None: ...

    with pytest.raises(ConfigError, match=message):
        runner.periodic(every(minutes=1), pass_slot=pass_slot)(
            takes_none if pass_slot else takes_one
        )
    assert runner.tasks == {}


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
        assert all(r.join(timeout=5) for r in runners)
        leaders = [info.is_leader for r in runners for info in r.periodic_jobs()]
        runners[0].stop(timeout=1)  # the leader goes away; the other takes over at the next slot
        manual.advance(60)
        assert all(r.join(timeout=5) for r in runners)
    finally:
        for runner in runners:
            runner.stop(timeout=1)
    assert leaders == [True, False]
    assert runs == ["first", "second"]


def jittered_runner(
    clock: ManualClock, lock: Path, label: str, seen: list[object], grace: float = 60
) -> TaskRunner:
    runner = TaskRunner(clock=clock, lock_path=lock)

    @runner.periodic(every(minutes=1, jitter=20), name="tick", misfire_grace=grace, pass_slot=True)
    def tick(slot: datetime) -> None:
        seen.append((label, slot))

    return runner


def test_a_slot_a_follower_gave_up_runs_once_when_the_leader_dies_before_running_it(
    tmp_path: Path,
) -> None:
    # Each process has its own clock: the leader's loop runs late (its clock lags).
    leader_clock, follower_clock = ManualClock(START), ManualClock(START)
    seen: list[object] = []
    leader = jittered_runner(leader_clock, tmp_path / "app.lock", "leader", seen).start()
    follower = jittered_runner(follower_clock, tmp_path / "app.lock", "follower", seen).start()
    try:
        for clock in (leader_clock, follower_clock):
            clock.advance(80)  # past slot +1 min and its jitter
        assert leader.join(timeout=5) and follower.join(timeout=5)
        follower_clock.advance(60)  # the follower sees slot +2 come due, the leader alive
        assert leader.join(timeout=5) and follower.join(timeout=5)
        leader.stop(timeout=1)  # the leader dies before its timer reached slot +2
        follower_clock.advance(LEADER_RETRY)  # the follower's next try takes the lock
        assert leader.join(timeout=5) and follower.join(timeout=5)
        follower_clock.advance(60)
        assert leader.join(timeout=5) and follower.join(timeout=5)
    finally:
        leader.stop(timeout=1)
        follower.stop(timeout=1)
    minute = timedelta(minutes=1)
    assert seen == [
        ("leader", START + minute),
        ("follower", START + 2 * minute),
        ("follower", START + 3 * minute),
    ]


def test_a_new_leader_whose_own_slot_is_due_coalesces_the_missed_one_into_it(
    tmp_path: Path,
) -> None:
    leader_clock, follower_clock = ManualClock(START), ManualClock(START)
    seen: list[object] = []
    lock = tmp_path / "app.lock"
    leader = jittered_runner(leader_clock, lock, "leader", seen, grace=120).start()
    follower = jittered_runner(follower_clock, lock, "follower", seen, grace=120).start()
    try:
        for clock in (leader_clock, follower_clock):
            clock.advance(80)
        assert leader.join(timeout=5) and follower.join(timeout=5)
        follower_clock.advance(60)  # the follower gives slot +2 min up: the leader is alive
        assert leader.join(timeout=5) and follower.join(timeout=5)
        leader.stop(timeout=1)  # and dies before running it
        follower_clock.advance(60)  # the follower's loop wakes late: slot +3 is due too
        assert leader.join(timeout=5) and follower.join(timeout=5)
        (info,) = follower.periodic_jobs()
    finally:
        leader.stop(timeout=1)
        follower.stop(timeout=1)
    minute = timedelta(minutes=1)
    assert seen == [("leader", START + minute), ("follower", START + 3 * minute)]
    assert info.missed == 1  # slot +2: coalesced, never a burst


def test_a_new_leader_does_not_run_again_the_slot_its_predecessor_ran(
    tmp_path: Path, manual: ManualClock
) -> None:
    seen: list[object] = []
    first = jittered_runner(manual, tmp_path / "app.lock", "first", seen).start()
    second = jittered_runner(manual, tmp_path / "app.lock", "second", seen).start()
    try:
        manual.advance(80)  # both timers fire slot +1 min at the same moment; the leader runs it
        assert first.join(timeout=5) and second.join(timeout=5)
        first.stop(timeout=1)  # a graceful recycle right after the run (or a crash)
        manual.advance(LEADER_RETRY)  # the second takes the lock, knowing slot +1 ran
        assert first.join(timeout=5) and second.join(timeout=5)
        manual.advance(60)
        assert first.join(timeout=5) and second.join(timeout=5)
    finally:
        first.stop(timeout=1)
        second.stop(timeout=1)
    minute = timedelta(minutes=1)
    assert seen == [("first", START + minute), ("second", START + 2 * minute)]


def test_a_process_taking_the_lead_as_its_timer_fires_a_slot_already_run_does_not_run_it(
    tmp_path: Path,
) -> None:
    # Their loops are out of step: the leader runs slot +1 min and stops (a
    # graceful shutdown) before the other process's timer has fired slot +1.
    leader_clock, late_clock = ManualClock(START), ManualClock(START)
    seen: list[object] = []
    lock = tmp_path / "app.lock"
    leader = TaskRunner(clock=leader_clock, lock_path=lock)
    late = TaskRunner(clock=late_clock, lock_path=lock)
    for label, runner in (("leader", leader), ("late", late)):

        @runner.periodic(every(minutes=1), name="tick", pass_slot=True)
        def tick(slot: datetime, label: str = label) -> None:
            seen.append((label, slot))

    leader.start()
    late.start()
    try:
        leader_clock.advance(60)
        assert leader.join(timeout=5)
        leader.stop(timeout=1)
        late_clock.advance(60)  # takes the lead and fires slot +1, which already ran
        assert late.join(timeout=5)
        late_clock.advance(60)
        assert late.join(timeout=5)
    finally:
        leader.stop(timeout=1)
        late.stop(timeout=1)
    minute = timedelta(minutes=1)
    assert seen == [("leader", START + minute), ("late", START + 2 * minute)]


@pytest.mark.parametrize(("grace", "catch_up_runs"), [(60, 1), (10, 0)])
def test_a_restarted_app_runs_the_slot_missed_while_down_once_thanks_to_its_lock_file(
    tmp_path: Path, manual: ManualClock, grace: float, catch_up_runs: int
) -> None:
    seen: list[datetime] = []

    def new_runner() -> TaskRunner:
        runner = TaskRunner(clock=manual, lock_path=tmp_path / "app.lock")

        @runner.periodic(every(minutes=1), name="tick", misfire_grace=grace, pass_slot=True)
        def tick(slot: datetime) -> None:
            seen.append(slot)

        return runner

    with new_runner() as first:
        manual.advance(60)
        assert first.join(timeout=5)
    manual.advance(5 * 60 + 30)  # down for slots +2 .. +6 minutes; now 30 s past the last
    with new_runner() as second:
        assert second.join(timeout=5)
        (info,) = second.periodic_jobs()

    assert seen == [START + timedelta(minutes=m) for m in (1, 6)[: 1 + catch_up_runs]]
    assert info.missed == 5 - catch_up_runs


def test_apps_with_other_periodic_tasks_get_their_own_default_lock(
    tmp_path: Path, manual: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    runs: list[str] = []

    def app(task_name: str, label: str, **options: object) -> TaskRunner:
        runner = TaskRunner(clock=manual, **options)  # type: ignore[arg-type]

        @runner.periodic(every(minutes=1), name=task_name)
        def tick() -> None:
            runs.append(label)

        return runner

    runners = [
        app("shop.tasks.warm_cache", "shop"),
        app("blog.tasks.digest", "blog"),
        app("shop.tasks.warm_cache", "shop, another worker"),
        app("wiki.tasks.index", "wiki", name="blog"),  # an explicit name= overrides
    ]
    try:
        for runner in runners:
            runner.start()
        manual.advance(60)
        assert all(r.join(timeout=5) for r in runners)
        leads = [info.is_leader for runner in runners for info in runner.periodic_jobs()]
    finally:
        for runner in runners:
            runner.stop(timeout=1)
    assert leads == [True, True, False, True]
    assert sorted(runs) == ["blog", "shop", "wiki"]
    locks = sorted(path.name for path in tmp_path.glob("taskrun-*.lock"))
    assert f"taskrun-blog-{os.getuid()}.lock" in locks, locks  # the explicit name
    assert [lock.split("-")[1] for lock in locks] == ["blog", "blog", "shop"], locks


# -- real processes sharing a lock file ----------------------------------------------


def read_runs(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(pid), int(slot)) for pid, slot in rows]


@pytest.mark.slow
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


#: Seconds between slots when a test kills leaders: more than LEADER_RETRY plus
#: the margins below, so that a new leader takes over before the next slot.
SLOW_SLOTS = 3


def sleep_until(stamp: float) -> None:
    time.sleep(max(0.0, stamp - time.time()))


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_leaders_killed_just_after_a_run_or_while_a_slot_is_due_leave_no_gap_and_no_repeat(
    tmp_path: Path, store: str
) -> None:
    lock, out = tmp_path / "shop.lock", tmp_path / "runs.txt"
    command = [sys.executable, str(CHILD), str(lock), str(out), str(SLOW_SLOTS)]
    if store == "sqlite":
        command.append(str(tmp_path / "taskrun.db"))
        with TaskRunner(lock_path=None, store=tmp_path / "taskrun.db"):
            pass  # create the file first: three first opens at once may find it locked
    children = [subprocess.Popen(command) for _ in range(3)]
    try:
        wait_for(lambda: read_runs(out), 15, "a first periodic run")
        # 1. Killed right after a run: the next leader must not run that slot again.
        first_leader = read_runs(out)[-1][0]
        os.kill(first_leader, signal.SIGKILL)
        wait_for(
            lambda: any(pid != first_leader for pid, _ in read_runs(out)), 10, "a second leader"
        )
        # 2. Frozen across a slot, then killed: the followers saw the slot come due
        # with the leader alive and let it be; the next leader must run it.
        second_leader = read_runs(out)[-1][0]
        due = (math.floor(time.time() / SLOW_SLOTS) + 1) * SLOW_SLOTS
        due += SLOW_SLOTS if due - time.time() < 0.6 else 0
        sleep_until(due - 0.3)
        os.kill(second_leader, signal.SIGSTOP)
        sleep_until(due + 0.4)
        os.kill(second_leader, signal.SIGKILL)
        wait_for(lambda: read_runs(out)[-1][1] > due, 10, "runs after the frozen slot")
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)
    runs = read_runs(out)
    slots = Counter(slot for _, slot in runs)
    assert [slot for slot, count in slots.items() if count > 1] == [], runs
    assert sorted(slots) == list(range(min(slots), max(slots) + 1, SLOW_SLOTS)), runs
    ran_due = [pid for pid, slot in runs if slot == due]
    assert len(ran_due) == 1 and ran_due[0] != second_leader, runs


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
    assert first.join(timeout=5)
    first.stop(timeout=5)
    manual.advance(5 * 60 + 30)  # down for slots +2 .. +6 minutes; now 30 s past the last
    second = new_runner().start()
    assert second.join(timeout=5)
    (info,) = second.periodic_jobs()
    second.stop(timeout=5)

    caught_up = [START + timedelta(minutes=6, seconds=30)] * catch_up_runs  # run at once
    assert seen == [START + timedelta(minutes=1), *caught_up]
    assert info.missed == 5 - catch_up_runs
