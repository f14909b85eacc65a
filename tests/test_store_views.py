"""Operator views of the stores: listings, counts, processes, periodic state, machine-wide stats.

Both stores answer the same questions (:class:`taskrun.stores.base.StoreQueries`):
the memory store for this process, the SQLite store for every runner on the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gevent.event import Event

from taskrun import TaskRunner
from taskrun.errors import ConfigError
from taskrun.schedules import every
from taskrun.stores.base import StoreQueries
from taskrun.stores.sqlite.client import StoreClient
from taskrun.stores.sqlite.queries import record_minute
from taskrun.stores.sqlite.store import SqliteStore

MakeRunner = Callable[..., TaskRunner]


def views(runner: TaskRunner) -> StoreQueries:
    store = runner.store
    assert isinstance(store, StoreQueries)
    if isinstance(store, SqliteStore):
        assert store.flush(timeout=10)
    return store


@pytest.fixture(params=["memory", "sqlite"])
def any_runner(
    request: pytest.FixtureRequest, make_runner: MakeRunner, tmp_path: Path
) -> TaskRunner:
    if request.param == "memory":
        return make_runner(lock_path=None)
    return make_runner(store=f"sqlite:///{tmp_path / 'taskrun.db'}", lock_path=None)


def test_listing_is_newest_first_filtered_and_paginated(any_runner: TaskRunner) -> None:
    @any_runner.task(name="views.ok")
    def ok(n: int) -> int:
        return n

    @any_runner.task(name="views.bad")
    def bad() -> None:
        raise ValueError("no")

    done = [ok.delay(n) for n in range(5)]
    failed = bad.delay()
    for job in done:
        job.get(timeout=5)
    with pytest.raises(ValueError):
        failed.get(timeout=5)
    store = views(any_runner)

    first = store.list_jobs(limit=4)
    assert [job.id for job in first.jobs] == [failed.id, *[j.id for j in reversed(done)][:3]]
    assert first.next_cursor is not None
    rest = store.list_jobs(cursor=first.next_cursor, limit=4)
    assert [job.id for job in rest.jobs] == [done[1].id, done[0].id]
    assert rest.next_cursor is None
    assert [job.id for job in store.list_jobs(state="FAILURE").jobs] == [failed.id]
    assert len(store.list_jobs(task="views.ok").jobs) == 5
    assert [job.id for job in store.list_jobs(id_prefix=failed.id[:10]).jobs] == [failed.id]
    assert store.count_by_state()["SUCCESS"] == 5
    assert store.count_by_state()["FAILURE"] == 1
    finished = sum(sum(m.finished.values()) for m in store.minutes(time.time() - 3600, time.time()))
    assert finished == 6
    if isinstance(store, SqliteStore):  # a recorded minute reads back as counted
        sql = store._sql
        assert sql is not None
        sql(record_minute, int(time.time() // 60))
        rows = store.minutes(time.time() - 3600, time.time())
        assert rows[-1].waiting == 0 and sum(rows[-1].finished.values()) == 6
    with pytest.raises(ConfigError, match="bad page cursor 'nonsense'"):
        store.list_jobs(cursor="nonsense")


def test_purge_deletes_old_finished_jobs_of_one_state(any_runner: TaskRunner) -> None:
    @any_runner.task(name="views.ok")
    def ok() -> None: ...

    ok.delay().get(timeout=5)
    store = views(any_runner)
    assert store.purge("SUCCESS", time.time() - 3600) == 0
    assert store.purge("SUCCESS", time.time() + 1) == 1
    assert store.count_by_state()["SUCCESS"] == 0
    if store.is_shared:
        with pytest.raises(ConfigError, match="only finished jobs can be purged, not 'PENDING'"):
            store.purge("PENDING", time.time())


def test_processes_show_running_jobs_of_every_runner_on_the_file(
    make_runner: MakeRunner, tmp_path: Path, wait_for: Any
) -> None:
    path = f"sqlite:///{tmp_path / 'taskrun.db'}"
    first, second = (make_runner(store=path, lock_path=None) for _ in range(2))
    release = Event()

    @first.task(name="views.hold")
    def hold() -> None:
        release.wait(10)

    second.task(name="views.hold")(lambda: None)
    job = hold.delay()
    wait_for(lambda: job.state.value == "STARTED", "the job to start")
    store = views(first)
    seen = views(second).processes()
    assert len(seen) == 2
    assert [p.running for p in seen if p.running] == [[job.id]]
    stats = second.stats()
    assert stats["scope"] == "machine"
    assert stats["states"]["STARTED"] == 1
    assert sorted(p["running"] for p in stats["processes"]) == [0, 1]
    assert store.job_owner(job.id) is not None
    release.set()
    job.get(timeout=5)


def test_memory_store_stats_say_process_scope(runner: TaskRunner) -> None:
    assert runner.stats()["scope"] == "process"


def test_pause_in_the_store_stops_the_leaders_runs_and_resume_restarts_them(
    make_runner: MakeRunner, tmp_path: Path, wait_for: Any
) -> None:
    path = tmp_path / "taskrun.db"
    runs: list[float] = []
    runner = TaskRunner(store=f"sqlite:///{path}", lock_path=None)

    @runner.periodic(every(seconds=0.2), name="views.tick")
    def tick() -> None:
        runs.append(time.monotonic())

    with StoreClient(str(path), {}) as client:
        client.set_paused("views.tick", True)
        with runner:
            wait_for(lambda: runner.periodic_jobs()[0].skipped_paused >= 2, "two paused slots")
            assert runs == []
            info = runner.periodic_jobs()[0]
            assert (info.paused, info.scope) == (True, "machine")
            client.set_paused("views.tick", False)
            wait_for(lambda: len(runs) >= 1, "a run after resume")
            assert client.periodic_state()["views.tick"].last_slot is not None
            assert runner.periodic_jobs()[0].last_run is not None


def test_a_job_submitted_through_a_client_runs_in_a_serving_runner(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    path = tmp_path / "taskrun.db"
    runner = make_runner(store=f"sqlite:///{path}", lock_path=None)

    @runner.task(name="views.double")
    def double(n: int) -> int:
        return n * 2

    with StoreClient(str(path), dict(runner.tasks)) as client:
        job_id = client.submit("views.double", (21,), None)
        job = client.get(job_id)
        assert job is not None
        assert job.get(timeout=10) == 42
