"""A process contending for a leader lock, started by ``tests/test_leader.py``.

Usage: ``python tests/leader_child.py LOCK_PATH RECORD_PATH [--fork]``

Every 50 ms it calls ``LeaderLock.try_acquire()`` and appends one line to
RECORD_PATH per change: ``"<pid> leader"`` or ``"<pid> follower"``.  With
``--fork``, on becoming leader it forks a child that only sleeps (recording
``"<pid> forked <is_leader>"``), to show that a forked child cannot keep the
lock alive once its parent dies.  Every process exits by itself after
``LIFETIME`` seconds, so a crashed test leaves no process behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskrun.periodic.leader import LeaderLock

LIFETIME = 20.0


def record(path: str, line: str) -> None:
    """Append ``line`` with one ``write`` on an ``O_APPEND`` descriptor (atomic)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {line}\n".encode())
    finally:
        os.close(fd)


def main(lock_path: str, record_path: str, fork: bool) -> None:
    """Contend for the lock until LIFETIME passes."""
    lock = LeaderLock(lock_path)
    deadline = time.monotonic() + LIFETIME
    leading = False
    while time.monotonic() < deadline:
        now_leading = lock.try_acquire()
        if now_leading != leading:
            leading = now_leading
            record(record_path, "leader" if leading else "follower")
            if leading and fork and os.fork() == 0:
                try:
                    record(record_path, f"forked {lock.is_leader}")
                    time.sleep(max(0.0, deadline - time.monotonic()))
                finally:
                    os._exit(0)
        time.sleep(0.05)
    lock.release()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--fork" in sys.argv[3:])
