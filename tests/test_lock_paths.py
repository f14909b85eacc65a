"""The default leader lock: a private directory, one lock per deployment, problems logged once."""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import serving_helpers
from conftest import STOP_TIMEOUT, assert_stopped_cleanly
from flask import Flask

from taskrun import ConfigError, ManualClock, TaskRunner, every
from taskrun.periodic import timer
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.lock_paths import ensure_private_directory, leader_lock_path, lock_scope
from taskrun.periodic.timer import LEADER_RETRY, LeaderTick
from taskrun.validation import DEFAULT

OTHER_UID = 65534  # nobody
TIMER_LOGGER = timer.logger.name
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the temp directory at ``tmp_path/tmp`` (never the machine's shared /tmp)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return temp


@pytest.fixture
def runners() -> Iterator[list[TaskRunner]]:
    """Runners a test made and started; stopped (and checked) on teardown."""
    made: list[TaskRunner] = []
    yield made
    for runner in made:
        runner.stop(timeout=STOP_TIMEOUT)
    for runner in made:
        assert_stopped_cleanly(runner)


def periodic_runner(**options: Any) -> TaskRunner:
    """A runner with one periodic task named ``shop.tick`` (the same in every runner)."""
    runner = TaskRunner(concurrency=2, **options)

    @runner.periodic(every(hours=1), name="shop.tick")
    def tick() -> None: ...

    return runner


def started_lock_path(runner: TaskRunner, made: list[TaskRunner]) -> Path:
    made.append(runner)
    runner.start()
    assert runner._leader is not None
    return runner._leader.path


# -- the private directory ---------------------------------------------------------


def test_the_default_lock_lives_in_a_private_directory_created_0700(private_tempdir: Path) -> None:
    path = Path(leader_lock_path(DEFAULT, "shop", []))

    assert path.parent == private_tempdir / f"taskrun-{os.getuid()}"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists()  # only the directory is made here


@needs_root
def test_a_lock_directory_made_first_by_another_user_is_refused(private_tempdir: Path) -> None:
    squatted = private_tempdir / f"taskrun-{os.getuid()}"
    squatted.mkdir(mode=0o700)
    os.chown(squatted, OTHER_UID, OTHER_UID)

    with pytest.raises(
        ConfigError,
        match=rf"lock directory '{squatted}' is owned by uid {OTHER_UID}, not by this process's "
        r"uid 0, so another local user could take the lock .*; remove it .* or pass lock_path=",
    ):
        leader_lock_path(DEFAULT, "shop", [])


def test_a_lock_directory_others_may_write_to_is_refused(private_tempdir: Path) -> None:
    shared = private_tempdir / f"taskrun-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)

    with pytest.raises(ConfigError, match=r"can be written by other users \(mode 777\).*chmod 700"):
        leader_lock_path(DEFAULT, "shop", [])


def test_a_symlink_in_place_of_the_lock_directory_is_refused(
    private_tempdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (private_tempdir / f"taskrun-{os.getuid()}").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(ConfigError, match=r"is not a directory \(a symlink or a file\)"):
        ensure_private_directory(private_tempdir / f"taskrun-{os.getuid()}")


def test_a_runtime_dir_that_is_not_private_is_not_used(
    private_tempdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))

    path = Path(leader_lock_path(DEFAULT, "shop", []))

    assert path.parent == private_tempdir / f"taskrun-{os.getuid()}"
    runtime.chmod(0o700)
    assert Path(leader_lock_path(DEFAULT, "shop", [])).parent == runtime


@needs_root
def test_a_runner_refuses_to_start_on_a_foreign_lock_directory(
    private_tempdir: Path, runners: list[TaskRunner]
) -> None:
    squatted = private_tempdir / f"taskrun-{os.getuid()}"
    squatted.mkdir(mode=0o700)
    os.chown(squatted, OTHER_UID, OTHER_UID)
    runner = periodic_runner()

    with pytest.raises(ConfigError, match=r"is owned by uid 65534"):
        runner.start()
    assert not runner.is_running


def test_a_lock_file_open_to_others_is_made_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.lock"
    path.write_text("")
    path.chmod(0o666)
    lock = LeaderLock(path)

    assert lock.try_acquire()
    lock.release()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "was open to other users (mode 666); made it 0600" in caplog.text


# -- one lock per deployment -----------------------------------------------------------


def load_module(directory: Path, name: str) -> ModuleType:
    """Import ``directory/name.py`` (written here) as module ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text("def tick() -> None: ...\n")
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_checkouts_of_one_app_get_two_locks(
    tmp_path: Path, runners: list[TaskRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = []
    for checkout in ("staging", "prod"):
        module = load_module(tmp_path / checkout / "shop", f"tasks_{checkout}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        runner = TaskRunner(concurrency=2)
        runner.periodic(every(hours=1), name="shop.tick")(module.tick)
        paths.append(started_lock_path(runner, runners))

    assert paths[0] != paths[1]
    assert paths[0].parent == paths[1].parent


def test_two_flask_apps_with_the_same_tasks_but_other_root_paths_get_two_locks(
    tmp_path: Path, runners: list[TaskRunner]
) -> None:
    paths = []
    for root in ("a", "b", "a"):
        runner = periodic_runner()
        runner.init_app(Flask("shop", root_path=str(tmp_path / root)))
        paths.append(started_lock_path(runner, runners))

    assert paths[0] != paths[1]
    assert paths[0] == paths[2]  # the same deployment: one lock


def test_processes_sharing_a_store_share_a_lock_whatever_their_root_path(
    tmp_path: Path, runners: list[TaskRunner]
) -> None:
    store = tmp_path / "taskrun.db"
    paths = []
    for root, store_path in (("a", store), ("b", store), ("a", tmp_path / "other.db")):
        runner = periodic_runner(store=store_path)
        runner.init_app(Flask("shop", root_path=str(tmp_path / root)))
        paths.append(started_lock_path(runner, runners))

    assert paths[0] == paths[1]
    assert paths[0] != paths[2]


def test_a_named_runner_ignores_the_root_path_but_not_the_store(
    tmp_path: Path, runners: list[TaskRunner]
) -> None:
    def named(root: str, **options: Any) -> Path:
        runner = periodic_runner(name="shop", **options)
        runner.init_app(Flask("shop", root_path=str(tmp_path / root)))
        return started_lock_path(runner, runners)

    release_1, release_2 = named("releases/1"), named("releases/2")
    with_store = named("releases/1", store=tmp_path / "taskrun.db")

    assert release_1 == release_2  # a rolling restart from one release dir to the next
    assert release_1.name == f"taskrun-shop-{os.getuid()}.lock"
    assert with_store != release_1


def test_lock_scope_prefers_the_store_then_the_root_path_then_the_module() -> None:
    class Store:
        path = "/var/lib/shop/taskrun.db"

    def tick() -> None: ...

    here = os.path.dirname(os.path.abspath(__file__))

    assert lock_scope(Store(), "/srv/shop", [tick]) == ("store", "/var/lib/shop/taskrun.db")
    assert lock_scope(object(), "/srv/shop", [tick]) == ("root", "/srv/shop")
    assert lock_scope(object(), None, [tick]) == ("root", here)
    assert lock_scope(object(), None, []) is None


# -- problems and leaders, logged once ------------------------------------------------


Wait = Callable[..., Any]


def advance_retries(clock: ManualClock, rounds: int, *runners: TaskRunner) -> None:
    """Move ``clock`` past ``rounds`` leader retries, letting each runner's timer try the lock."""

    def retried() -> bool:
        ticks = [
            entry
            for runner in runners
            for segment in runner._scheduler._segments
            for entry in segment.heap
            if isinstance(entry, LeaderTick)
        ]
        return len(ticks) == len(runners) and all(tick.due > clock.time() for tick in ticks)

    for _ in range(rounds):
        clock.advance(LEADER_RETRY + 0.1)
        serving_helpers.wait_for(retried, 5, "the timers to try the leader lock", step=0.001)


@needs_root
def test_a_foreign_lock_file_is_an_error_logged_once_then_info_when_it_recovers(
    tmp_path: Path,
    clock: ManualClock,
    runners: list[TaskRunner],
    caplog: pytest.LogCaptureFixture,
    wait_for: Wait,
) -> None:
    lock = tmp_path / "app.lock"
    lock.write_text("")
    os.chown(lock, OTHER_UID, OTHER_UID)
    runner = periodic_runner(clock=clock, lock_path=lock)
    caplog.set_level(logging.DEBUG, logger=TIMER_LOGGER)
    runners.append(runner.start())

    advance_retries(clock, 4, runner)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    retries = [r for r in caplog.records if "still cannot take the leader lock" in r.getMessage()]
    os.chown(lock, os.geteuid(), os.getegid())
    clock.advance(LEADER_RETRY + 0.1)
    wait_for(lambda: runner._scheduler.is_leader, "the runner to lead once the file is fixed")

    assert len(errors) == 1, caplog.text
    assert "cannot take the leader lock" in errors[0].getMessage()
    assert f"is owned by uid {OTHER_UID}" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line, no traceback
    assert len(retries) >= 3 and all(r.levelno == logging.DEBUG for r in retries)
    assert f"the leader lock {lock} can be used again" in caplog.text


def test_a_follower_logs_once_which_process_leads(
    tmp_path: Path, clock: ManualClock, runners: list[TaskRunner], caplog: pytest.LogCaptureFixture
) -> None:
    lock = tmp_path / "app.lock"
    leader = periodic_runner(clock=clock, lock_path=lock)
    follower = TaskRunner(concurrency=2, clock=clock, lock_path=lock)

    @follower.periodic(every(hours=1), name="shop.tick")
    def tick() -> None: ...

    caplog.set_level(logging.INFO, logger=TIMER_LOGGER)
    runners.append(leader.start())
    runners.append(follower.start())
    advance_retries(clock, 3, leader, follower)

    follows = [r for r in caplog.records if "runs the periodic jobs" in r.getMessage()]
    assert leader._scheduler.is_leader and not follower._scheduler.is_leader
    assert len(follows) == 1, caplog.text
    assert follows[0].levelno == logging.INFO
    assert follows[0].getMessage() == (
        f"pid {os.getpid()} runs the periodic jobs (leader lock {lock}); this process follows"
    )
