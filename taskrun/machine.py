"""What ``runner.stats()`` and ``runner.periodic_jobs()`` say: this process's or the machine's.

With a shared store (``is_shared``) the views cover every process on the
file: jobs per state counted on the store's state index (no row read),
each process's running and waiting jobs, which process leads the periodic
jobs, and each periodic job's last run and paused flag from the store.
Otherwise they describe this process.  Each view says which with
``"scope"``: ``"machine"`` or ``"process"``.  Pure functions of what the
runner and the store report.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from taskrun.periodic.policy import PeriodicInfo
from taskrun.stores.base import PeriodicState, ProcessRecord, StoreQueries

__all__ = ["leader_pid", "machine_periodic", "machine_stats", "process_row"]


def process_row(proc: ProcessRecord, now: float) -> dict[str, Any]:
    """Return one process of a stats answer as plain data."""
    waiting = proc.waiting
    return {
        "pid": proc.pid,
        "host": proc.host,
        "token": proc.token,
        "started": proc.started,
        "heartbeat_age": max(now - proc.heartbeat, 0.0),
        "running": len(proc.running),
        "running_jobs": list(proc.running),
        "backlog": waiting.get("PENDING", 0),
        "scheduled": waiting.get("SCHEDULED", 0) + waiting.get("RETRY", 0),
    }


def leader_pid(
    periodic: dict[str, PeriodicState], processes: list[ProcessRecord], this_leads: bool
) -> int | None:
    """Return the pid of the process leading the periodic jobs, if it can be told.

    This process when it leads; else the live process that claimed the most
    recent periodic slot in the store.
    """
    if this_leads:
        return os.getpid()
    latest = max(
        (state for state in periodic.values() if state.last_slot is not None),
        key=lambda state: state.last_slot or 0.0,
        default=None,
    )
    if latest is None:
        return None
    return next((proc.pid for proc in processes if proc.token == latest.last_owner), None)


def machine_stats(
    local: dict[str, Any], store: StoreQueries, this_leads: bool, now: float
) -> dict[str, Any]:
    """Return ``local`` (this process's counters) widened to the store's view.

    :param local: this process's stats, ``states`` left out or to be replaced.
    :param this_leads: whether this process leads the periodic jobs (with any).
    """
    processes = store.processes()
    stats = dict(local)
    stats["scope"] = "machine" if store.is_shared else "process"
    stats["states"] = store.count_by_state()
    stats["processes"] = [process_row(proc, now) for proc in processes]
    periodic = store.periodic_state() if store.is_shared else {}
    stats["leader"] = leader_pid(periodic, processes, this_leads)
    stats["pid"] = os.getpid()
    return stats


def machine_periodic(
    infos: list[PeriodicInfo], store: StoreQueries, this_leads: bool
) -> list[PeriodicInfo]:
    """Return ``infos`` with last run, paused flag and leader from the store, when shared."""
    if not store.is_shared:
        paused = store.periodic_state()
        return [replace(info, paused=info.name in paused) for info in infos]
    periodic = store.periodic_state()
    leader = leader_pid(periodic, store.processes(), this_leads)
    widened = []
    for info in infos:
        state = periodic.get(info.name)
        last = info.last_run
        if state is not None and state.last_slot is not None:
            stored = datetime.fromtimestamp(state.last_slot, UTC)
            last = stored if last is None or stored > last else last
        widened.append(
            replace(
                info,
                last_run=last,
                paused=bool(state and state.paused),
                scope="machine",
                leader_pid=leader,
                is_leader=this_leads,
            )
        )
    return widened
