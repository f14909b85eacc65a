"""One leader among the processes that share a lock file.

Each worker process of an app has its own runner, yet periodic jobs must run
once per machine.  The workers elect a leader with an exclusive
:func:`fcntl.flock` on one shared file; the kernel drops the lock the moment its
holder dies (even by ``SIGKILL``), so another worker's next
:meth:`LeaderLock.try_acquire` succeeds.

* Nothing blocks: only ``LOCK_EX | LOCK_NB``; retrying is the caller's job (the
  scheduler's timer).  No greenlet or thread is spawned; gevent is not imported.
* The lock file must be on a **local** filesystem: ``flock`` over NFS is
  emulated or unsupported and cannot be trusted.  The file is never unlinked
  (two processes would lock two inodes under one name); a leader that finds
  its file removed or replaced steps down.
* ``flock`` locks belong to the *open file description*, not to the process: a
  child made by ``fork`` shares its parent's description, hence its lock, and a
  ``LOCK_UN`` in the child would release the parent's lock.  So a forked child
  closes the inherited descriptor *without* unlocking (at fork, and again by a
  pid check on every call) and opens the file afresh: it leads only once it
  wins a lock of its own, and cannot keep a dead leader's lock alive.
* The file holds the leader's pid on its first line, then the last slot each
  periodic task ran (:meth:`LeaderLock.record_slot`), so the next leader,
  after a crash, a recycle or a restart, knows what its predecessor did.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import stat
import weakref
from pathlib import Path

from taskrun.errors import ConfigError

__all__ = ["LeaderLock"]

logger = logging.getLogger(__name__)

_FIX = (
    "pass lock_path= a writable local file, or lock_path=None to disable periodic leader election"
)
_open_locks: weakref.WeakSet[LeaderLock] = weakref.WeakSet()
_MAX_RECORD = 1 << 16  # bytes of the lock file read for slot records
_fork_hook_registered = False


class LeaderLock:
    """A non-blocking leader election on one local lock file.

    Construction only checks the path (no file is opened or created), so a
    lock may be made in a gunicorn master before the fork.  Call
    :meth:`try_acquire` from one thread or greenlet, e.g. the scheduler's
    timer, after the fork; never acquire in a master whose workers should lead.

    :param path: the lock file; its directory must exist and be writable.
    :raises ConfigError: the directory is missing or not writable, or the path
        is a directory.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._owner_pid: int | None = None
        self._is_leader = False
        self._slots: dict[str, float] = {}  # task name -> last slot run, by any leader
        problem = _path_problem(self.path)
        if problem:
            raise ConfigError(f"{problem}; {_FIX}")

    def __repr__(self) -> str:
        return f"<LeaderLock {os.fspath(self.path)!r} is_leader={self.is_leader}>"

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the lock, as of the last call; never blocks."""
        return self._is_leader and self._owner_pid == os.getpid()

    def try_acquire(self) -> bool:
        """Try once, without waiting, to make this process the leader.

        Idempotent for the leader (it only re-checks that its file is still the
        one at :attr:`path`).  On winning, writes this pid into the file.  An
        inherited descriptor is closed without unlocking, then reopened.

        :returns: ``True`` if this process is the leader now.
        :raises ConfigError: the file cannot be opened or locked (missing
            directory, permissions, not a regular file, owned by another user,
            a filesystem without ``flock``).
        """
        if self._fd is not None and self._owner_pid != os.getpid():
            self._close_without_unlock()
        if self._is_leader and self._fd is not None:
            if _same_file(self._fd, self.path):
                return True
            logger.warning("leader lock file %s was removed or replaced; stepping down", self.path)
            self.release()
        for _ in range(3):
            if self._fd is None:
                self._fd, self._owner_pid = self._open(), os.getpid()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError as exc:
                self.release()
                where = os.fspath(self.path)
                msg = f"cannot flock leader lock file {where!r}: {exc.strerror} (is it local?)"
                raise ConfigError(f"{msg}; {_FIX}") from exc
            if _same_file(self._fd, self.path):
                self._is_leader = True
                self._slots = _read_slots(self._fd)  # what earlier leaders ran
                self._write_record(self._fd, holder=True)
                logger.info("pid %d is now the leader for %s", os.getpid(), self.path)
                return True
            # Locked an inode unlinked after our open(): it guards nothing; reopen.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._close_without_unlock()
        return False

    def release(self) -> None:
        """Give up leadership (if held) and close the file; never blocks.

        Safe to call twice, and when never acquired.  In a forked child it only
        closes the inherited descriptor, leaving the parent's lock alone.
        """
        fd, was_leader = self._fd, self.is_leader
        self._fd, self._owner_pid, self._is_leader = None, None, False
        if fd is None:
            return
        try:
            if was_leader:
                self._write_record(fd, holder=False)  # no stale pid; the slots stay
                # Unlock explicitly: a bare close would not release a description
                # still shared with a forked child (e.g. between fork and exec).
                fcntl.flock(fd, fcntl.LOCK_UN)
                logger.info("pid %d is no longer the leader for %s", os.getpid(), self.path)
        finally:
            os.close(fd)

    def record_slot(self, name: str, slot: float) -> None:
        """Note in the lock file that periodic task ``name`` ran ``slot`` (POSIX seconds).

        Only the leader writes (else a no-op); a later leader reads it back
        with :meth:`last_slot`.  Rewrites the small file in place; a write
        error is logged, never raised.
        """
        if self.is_leader and self._fd is not None:
            self._slots[name] = max(slot, self._slots.get(name, slot))
            self._write_record(self._fd, holder=True)

    def last_slot(self, name: str) -> float | None:
        """Return the latest slot of ``name`` that this or an earlier leader recorded.

        Earlier leaders' records are read when this process takes the lead.
        """
        return self._slots.get(name)

    def holder_pid(self) -> int | None:
        """Return the leader's pid as written in the lock file, best effort.

        Probes the lock with a non-blocking shared ``flock`` first, so a pid
        left behind by a killed leader is not reported.  The probe may make a
        contender's concurrent :meth:`try_acquire` fail once.

        :returns: the pid, or ``None`` if no process holds the lock, the file
            is missing or unreadable, or the leader is between truncate and write.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it; os.close drops this probe lock
        except BlockingIOError:
            text = os.read(fd, 32).split(b"\n", 1)[0].decode("ascii", "replace").strip()
            return int(text) if text.isdigit() and int(text) > 0 else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def _open(self) -> int:
        where = os.fspath(self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open leader lock file {where!r}: {exc.strerror}; {_FIX}"
            ) from exc
        info = os.fstat(fd)
        problem = ""
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = f"is owned by uid {info.st_uid}, not by this process's uid {os.geteuid()}"
        if problem:
            os.close(fd)
            raise ConfigError(f"leader lock file {where!r} {problem}; {_FIX}")
        if stat.S_IMODE(info.st_mode) & 0o077:
            # Anyone who can open the file can flock it, and so keep every process
            # of the app from leading: owner-only, as taskrun creates it.
            logger.warning(
                "leader lock file %s was open to other users (mode %o); made it 0600",
                where,
                stat.S_IMODE(info.st_mode),
            )
            os.fchmod(fd, 0o600)
        _watch_forks(self)
        return fd

    def _write_record(self, fd: int, *, holder: bool) -> None:
        lines = [str(os.getpid()) if holder else ""]
        lines += [f"{slot!r} {json.dumps(name)}" for name, slot in self._slots.items()]
        record = ("\n".join(lines) + "\n").encode()
        try:
            # Write, then cut: a reader never sees the file empty, and a leader
            # killed in between leaves a torn tail that _read_slots skips.
            os.pwrite(fd, record, 0)
            os.ftruncate(fd, len(record))
        except OSError as exc:  # leadership stands; a later leader may re-run a slot
            logger.warning("could not write to leader lock file %s: %s", self.path, exc)

    def _close_without_unlock(self) -> None:
        # In a forked child, LOCK_UN would release the lock of the process we
        # forked from: they share the open file description.
        fd, self._fd, self._owner_pid, self._is_leader = self._fd, None, None, False
        if fd is not None:
            os.close(fd)


def _read_slots(fd: int) -> dict[str, float]:
    """Parse the slot records after the pid line; skip any line that is not one."""
    try:
        text = os.pread(fd, _MAX_RECORD, 0).decode("utf-8", "replace")
    except OSError:
        return {}
    slots: dict[str, float] = {}
    for line in text.splitlines()[1:]:
        stamp, _, quoted = line.partition(" ")
        try:
            slot, name = float(stamp), json.loads(quoted)
        except ValueError:
            continue
        if isinstance(name, str) and math.isfinite(slot):
            slots[name] = max(slot, slots.get(name, slot))
    return slots


def _path_problem(path: Path) -> str | None:
    """Say what makes ``path`` unusable as a lock file, without touching it."""
    where, parent = os.fspath(path), os.fspath(path.parent)
    if path.is_dir():
        return f"leader lock path {where!r} is a directory"
    if not os.path.isdir(parent):
        return f"leader lock directory {parent!r} does not exist"
    writable = os.access(path, os.W_OK) if path.exists() else os.access(parent, os.W_OK | os.X_OK)
    return None if writable else f"leader lock file {where!r} is not writable"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the inode open at ``fd``."""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _watch_forks(lock: LeaderLock) -> None:
    """Have forked children close ``lock``'s inherited descriptor at once."""
    global _fork_hook_registered
    _open_locks.add(lock)
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _after_fork_in_child() -> None:
    for lock in list(_open_locks):
        if lock._owner_pid != os.getpid():
            lock._close_without_unlock()
