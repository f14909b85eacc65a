"""Leader election over a shared lock file, with real processes and real flock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from taskrun.errors import ConfigError
from taskrun.periodic.leader import LeaderLock
from taskrun.periodic.lock_paths import app_lock_name, default_lock_path

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
CHILD = Path(__file__).with_name("leader_child.py")
DEADLINE = 10.0  # seconds; generous for a loaded CI machine


def wait_for(check: Callable[[], T], what: str, alive: Sequence[subprocess.Popen[bytes]] = ()) -> T:
    """Poll ``check`` every 20 ms until it returns a true value, and return that value.

    Fails after ``DEADLINE`` seconds, or at once if a process in ``alive`` has exited.
    """
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        for proc in alive:
            if proc.poll() is not None:
                pytest.fail(f"child {proc.pid} exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE} s waiting for {what}")
        time.sleep(0.02)


def read_events(record: Path) -> list[tuple[int, str]]:
    """Return the ``(pid, event)`` lines the child processes appended."""
    if not record.exists():
        return []
    lines = record.read_text().splitlines()
    return [(int(pid), event) for pid, event in (line.split(" ", 1) for line in lines)]


@contextmanager
def contenders(tmp_path: Path, count: int, *flags: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``count`` child processes contending for ``tmp_path/app.lock``; kill them all after."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            args = [sys.executable, str(CHILD), str(tmp_path / "app.lock")]
            args += [str(tmp_path / "record"), *flags]
            # stderr is inherited: pytest shows a crashing child's traceback.
            procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=DEADLINE)


def test_second_description_in_one_process_is_refused_until_first_releases(
    tmp_path: Path,
) -> None:
    first, second = LeaderLock(tmp_path / "app.lock"), LeaderLock(tmp_path / "app.lock")
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert (first.is_leader, second.is_leader) == (True, False)

        first.release()

        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.release()
        second.release()


def test_try_acquire_returns_at_once_while_another_holds_the_lock(tmp_path: Path) -> None:
    holder, contender = LeaderLock(tmp_path / "app.lock"), LeaderLock(tmp_path / "app.lock")
    try:
        assert holder.try_acquire()
        started = time.monotonic()
        for _ in range(100):
            assert not contender.try_acquire()
        assert time.monotonic() - started < 1.0
    finally:
        holder.release()
        contender.release()


def test_leader_is_idempotent_writes_its_pid_and_release_is_repeatable(tmp_path: Path) -> None:
    lock = LeaderLock(tmp_path / "app.lock")
    assert not lock.is_leader
    assert lock.holder_pid() is None
    lock.release()  # never acquired: a no-op

    assert lock.try_acquire()
    assert lock.try_acquire()
    assert lock.holder_pid() == os.getpid()
    assert LeaderLock(tmp_path / "app.lock").holder_pid() == os.getpid()
    assert (tmp_path / "app.lock").stat().st_mode & 0o777 == 0o600

    lock.release()
    lock.release()
    assert not lock.is_leader
    assert lock.holder_pid() is None
    assert (tmp_path / "app.lock").exists(), "the lock file must never be unlinked"


def test_construction_touches_no_file(tmp_path: Path) -> None:
    lock = LeaderLock(tmp_path / "app.lock")

    assert not (tmp_path / "app.lock").exists()
    assert not lock.is_leader
    assert "app.lock" in repr(lock)


@pytest.mark.slow
def test_one_of_three_processes_leads_and_another_takes_over_after_kill9(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record"
    with contenders(tmp_path, 3) as procs:
        pids = {proc.pid for proc in procs}
        first = wait_for(lambda: read_events(record), "a first leader", procs)[0]
        time.sleep(0.5)  # ten retry rounds of every child: no second leader may appear
        assert read_events(record) == [first]
        leader_pid = first[0]
        assert leader_pid in pids
        assert LeaderLock(tmp_path / "app.lock").holder_pid() == leader_pid

        os.kill(leader_pid, signal.SIGKILL)

        survivors = [proc for proc in procs if proc.pid != leader_pid]
        events = wait_for(lambda: read_events(record)[1:], "a new leader after kill", survivors)
        new_pid = events[0][0]
        assert events == [(new_pid, "leader")]
        assert new_pid in pids - {leader_pid}
        time.sleep(0.3)
        assert len(read_events(record)) == 2, read_events(record)
        assert LeaderLock(tmp_path / "app.lock").holder_pid() == new_pid


def test_forked_child_neither_leads_nor_releases_the_parents_lock(tmp_path: Path) -> None:
    lock = LeaderLock(tmp_path / "app.lock")
    assert lock.try_acquire()
    read_end, write_end = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns on fork in a multi-threaded process; the child
            # below only makes syscalls and leaves with os._exit.
            warnings.filterwarnings("ignore", "This process", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            report = b"error"
            try:
                os.close(read_end)
                before = lock.is_leader
                acquired = lock.try_acquire()
                lock.release()
                lock.release()
                report = f"{before} {acquired} {lock.is_leader}".encode()
            finally:
                os.write(write_end, report)
                os._exit(0)
        os.close(write_end)
        wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, "the forked child to exit")
        assert os.read(read_end, 100) == b"False False False"

        assert lock.is_leader
        assert lock.holder_pid() == os.getpid()
        other = LeaderLock(tmp_path / "app.lock")
        assert not other.try_acquire(), "the child's release() freed the parent's lock"
        other.release()
    finally:
        lock.release()
        os.close(read_end)


@pytest.mark.slow
def test_lock_is_freed_when_leader_dies_even_if_its_forked_child_lives(tmp_path: Path) -> None:
    record = tmp_path / "record"
    with contenders(tmp_path, 1, "--fork") as (proc,):
        events = wait_for(lambda: read_events(record)[1:], "the leader's forked child", [proc])
        child_pid = events[0][0]
        try:
            assert read_events(record) == [(proc.pid, "leader"), (child_pid, "forked False")]
            os.kill(proc.pid, signal.SIGKILL)
            lock = LeaderLock(tmp_path / "app.lock")
            try:
                wait_for(lock.try_acquire, "the lock to be free while the forked child lives")
                os.kill(child_pid, 0)  # raises if the child already exited
            finally:
                lock.release()
        finally:
            os.kill(child_pid, signal.SIGKILL)


def test_leader_steps_down_when_its_lock_file_is_replaced(tmp_path: Path) -> None:
    old, new = LeaderLock(tmp_path / "app.lock"), LeaderLock(tmp_path / "app.lock")
    try:
        assert old.try_acquire()
        (tmp_path / "app.lock").unlink()  # e.g. a tmp cleaner
        assert new.try_acquire()

        assert not old.try_acquire()
        assert not old.is_leader

        new.release()
        assert old.try_acquire()
    finally:
        old.release()
        new.release()


def test_default_lock_path_uses_runtime_dir_and_includes_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    assert default_lock_path("shop") == tmp_path / f"taskrun-shop-{os.getuid()}.lock"


@pytest.mark.parametrize("runtime_dir", [None, "", "relative/dir", "/nonexistent/taskrun"])
def test_default_lock_path_falls_back_to_tempdir(
    runtime_dir: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if runtime_dir is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime_dir)

    path = default_lock_path("shop")

    private = Path(tempfile.gettempdir()) / f"taskrun-{os.getuid()}"
    assert path == private / f"taskrun-shop-{os.getuid()}.lock"


def test_default_lock_path_sanitises_names_and_keeps_them_distinct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    odd = default_lock_path("../my shop/app:1")
    plain = default_lock_path("___my_shop_app_1")

    assert odd.parent == tmp_path
    assert odd.name.startswith("taskrun-.._my_shop_app_1-")
    assert odd.name.endswith(f"-{os.getuid()}.lock")
    assert odd != plain
    assert odd == default_lock_path("../my shop/app:1")
    assert len(default_lock_path("x" * 1000).name) < 100


@pytest.mark.parametrize("name", ["", "   "])
def test_default_lock_path_rejects_a_blank_name(name: str) -> None:
    with pytest.raises(ConfigError, match=r"lock name must be a non-empty string, got '\s*'"):
        default_lock_path(name)


def test_app_lock_name_depends_on_the_set_of_periodic_tasks_only() -> None:
    shop = app_lock_name(["shop.tasks.warm_cache", "shop.tasks.report"])

    assert shop == app_lock_name(["shop.tasks.report", "shop.tasks.warm_cache"])
    assert shop.startswith("shop-")
    assert shop != app_lock_name(["shop.tasks.warm_cache"])
    assert app_lock_name(["blog.tasks.digest"]).startswith("blog-")


def test_the_lock_file_hands_the_last_slot_of_each_task_to_the_next_leader(
    tmp_path: Path,
) -> None:
    odd = 'a "task"\nwith a newline'
    first, second = LeaderLock(tmp_path / "app.lock"), LeaderLock(tmp_path / "app.lock")
    assert first.try_acquire()
    first.record_slot("shop.tick", 1_800_000_060.0)
    first.record_slot("shop.tick", 1_800_000_000.0)  # an older slot never replaces a newer
    first.record_slot(odd, 1_800_000_120.5)
    second.record_slot("shop.tick", 1.0)  # not the leader: ignored
    assert not second.try_acquire()
    assert first.holder_pid() == os.getpid()
    first.release()

    assert second.try_acquire()
    assert second.last_slot("shop.tick") == 1_800_000_060.0
    assert second.last_slot(odd) == 1_800_000_120.5
    assert second.last_slot("shop.other") is None
    second.release()


def test_a_torn_lock_file_yields_the_slots_it_can_read(tmp_path: Path) -> None:
    path = tmp_path / "app.lock"
    # A leader killed between writing a shorter record and cutting the file leaves a tail.
    path.write_text('123\n1800000060.0 "shop.tick"\n60.0 "shop.tick"\nrbage\n0.0 "sh\n')
    path.chmod(0o600)
    lock = LeaderLock(path)

    assert lock.try_acquire()
    assert lock.last_slot("shop.tick") == 1_800_000_060.0
    assert lock.last_slot("sh") is None
    lock.release()


def test_missing_directory_is_a_config_error_naming_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'.*/missing' does not exist; pass lock_path=") as info:
        LeaderLock(tmp_path / "missing" / "app.lock")
    assert "lock_path=None to disable periodic leader election" in str(info.value)


def test_lock_path_that_is_a_directory_or_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    with pytest.raises(ConfigError, match=r"is a directory; pass lock_path="):
        LeaderLock(tmp_path)
    with pytest.raises(ConfigError, match=r"'.*/file' does not exist"):
        LeaderLock(tmp_path / "file" / "app.lock")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match=r"'.*/ro/app.lock' is not writable; pass lock_path="):
        LeaderLock(locked / "app.lock")


def test_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("keep me")
    (tmp_path / "app.lock").symlink_to(tmp_path / "victim")
    lock = LeaderLock(tmp_path / "app.lock")

    with pytest.raises(
        ConfigError, match=r"cannot open leader lock file '.*app.lock': .*lock_path="
    ):
        lock.try_acquire()
    assert (tmp_path / "victim").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown the file")
def test_lock_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.lock").write_text("")
    os.chown(tmp_path / "app.lock", 65534, 65534)
    lock = LeaderLock(tmp_path / "app.lock")

    with pytest.raises(ConfigError, match=r"is owned by uid 65534, not by this process's uid 0"):
        lock.try_acquire()
