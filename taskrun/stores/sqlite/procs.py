"""Who owns a job in a shared store: this process's identity and whether another is alive.

Every process that opens a shared store registers a row with a random
token, its pid, the pid's start time and a *host key* (the kernel's boot id
and pid namespace).  Another process with the same host key is checked
directly: it is dead when ``/proc/<pid>`` is gone, is a zombie, or belongs to
a newer process that reused the pid (a different start time).  A process
seen from another host key (another container or machine) is judged by its
heartbeat lease alone.

Pure functions over ``/proc``; they never block for long and never raise.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

__all__ = ["ProcessInfo", "host_key", "is_alive", "pid_start_time", "this_process"]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process's identity as recorded in the store's ``processes`` table."""

    token: str
    pid: int
    pid_start: str | None
    host: str


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return None


def host_key() -> str:
    """Return a key shared by processes that can see each other's pids.

    It combines the boot id (new after a reboot) with the pid namespace, so
    two containers sharing a store file never judge each other by pid.
    """
    boot = _read("/proc/sys/kernel/random/boot_id") or "no-boot-id"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "no-pid-ns"
    return f"{boot}/{namespace}"


def _stat_fields(pid: int) -> list[str] | None:
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    return text[text.rfind(")") + 2 :].split()


def pid_start_time(pid: int) -> str | None:
    """Return the start time of ``pid`` in clock ticks since boot, or ``None``.

    ``None`` when the process does not exist or ``/proc`` is not available.
    """
    fields = _stat_fields(pid)
    # After the name: state is field 3, starttime field 22 (index 19 here).
    return fields[19] if fields is not None and len(fields) > 19 else None


def this_process() -> ProcessInfo:
    """Return a fresh identity for the calling process (call it after any fork)."""
    pid = os.getpid()
    return ProcessInfo(secrets.token_hex(8), pid, pid_start_time(pid), host_key())


def is_alive(pid: int, pid_start: str | None) -> bool:
    """Return whether the process ``pid`` started at ``pid_start`` still runs.

    Only meaningful for a process with this process's :func:`host_key`.
    A zombie (killed, not yet reaped by its parent) counts as dead.
    """
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc: fall back to a signal probe
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return pid_start is None or len(fields) <= 19 or fields[19] == pid_start
