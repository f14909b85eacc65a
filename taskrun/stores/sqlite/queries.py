"""The shared store's read-mostly SQL for operator views: listings, counts, processes, periodic.

Plain functions of an open connection, like :mod:`taskrun.stores.sqlite.db`.
Every query is bounded by an index: a listing walks ``(state, enqueued)``,
``(task, enqueued)`` or ``(enqueued)`` backwards and stops after one page;
counts per state and per minute are read from the tables the schema's
triggers keep (see :mod:`taskrun.stores.sqlite.schema`, migration 2).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from taskrun.errors import ConfigError
from taskrun.jobs import FINISHED, JobState
from taskrun.stores.base import JobSummary, MinuteCounts, PeriodicState, ProcessRecord
from taskrun.stores.sqlite.db import INSERT_JOB, write_transaction

__all__ = [
    "SUMMARY_COLUMNS",
    "count_by_state",
    "insert_unowned",
    "job_owner",
    "list_jobs",
    "minutes",
    "periodic_state",
    "processes",
    "purge",
    "set_paused",
]

#: The columns of a :class:`~taskrun.stores.base.JobSummary`, in order.
SUMMARY_COLUMNS = "id, task, state, attempts, enqueued, started, finished, due, owner"
_WAITING = ("PENDING", "SCHEDULED", "RETRY")
_FINAL = tuple(sorted(state.value for state in FINISHED))


def list_jobs(
    conn: sqlite3.Connection,
    state: str | None,
    task: str | None,
    id_prefix: str | None,
    after: tuple[float, str] | None,
    limit: int,
) -> list[JobSummary]:
    """Return up to ``limit`` jobs newest first, older than the ``after`` (enqueued, id) key."""
    where: list[str] = []
    params: list[Any] = []
    if id_prefix:
        # A range on the primary key (ids are URL-safe base64 text).
        where.append("id >= ? AND id < ?")
        params += [id_prefix, id_prefix + "\uffff"]
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if after is not None:
        where.append("(enqueued < ? OR (enqueued = ? AND id < ?))")
        params += [after[0], after[0], after[1]]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM jobs {clause} ORDER BY enqueued DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [JobSummary(*row) for row in rows]


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """Return the jobs per state (every state), counted on the state index.

    A walk of the index only (about 5 ms at 100,000 jobs); no row is read.
    """
    counts = {state.value: 0 for state in JobState}
    for state, n in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
        if state in counts:
            counts[state] = int(n)
    return counts


def processes(conn: sqlite3.Connection) -> list[ProcessRecord]:
    """Return every registered process with its running job ids and its waiting jobs by state."""
    running: dict[str, list[str]] = {}
    for owner, job_id in conn.execute(
        "SELECT owner, id FROM jobs WHERE state = 'STARTED' AND owner IS NOT NULL"
    ):
        running.setdefault(owner, []).append(job_id)
    waiting: dict[str, dict[str, int]] = {}
    for owner, state, n in conn.execute(
        "SELECT owner, state, count(*) FROM jobs WHERE state IN (?, ?, ?) "
        "AND owner IS NOT NULL GROUP BY owner, state",
        _WAITING,
    ):
        waiting.setdefault(owner, {})[state] = n
    rows = conn.execute(
        "SELECT token, pid, coalesce(hostname, host), started, heartbeat FROM processes "
        "ORDER BY started"
    ).fetchall()
    return [
        ProcessRecord(
            token, pid, host, started, beat, running.get(token, []), waiting.get(token, {})
        )
        for token, pid, host, started, beat in rows
    ]


def periodic_state(conn: sqlite3.Connection) -> dict[str, PeriodicState]:
    """Return each periodic task's latest claimed slot (and its claimer) and paused flag."""
    found: dict[str, PeriodicState] = {}
    # SQLite takes the bare column (owner) from the row holding MAX(slot).
    for name, slot, owner in conn.execute(
        "SELECT name, MAX(slot), owner FROM periodic_slots GROUP BY name"
    ):
        found[name] = PeriodicState(name, slot, owner, False)
    for name, paused in conn.execute("SELECT name, paused FROM periodic"):
        last = found.get(name)
        found[name] = PeriodicState(
            name, last.last_slot if last else None, last.last_owner if last else None, bool(paused)
        )
    return found


def is_paused(conn: sqlite3.Connection, name: str) -> bool:
    """Return whether periodic task ``name`` is paused (a primary-key probe)."""
    row = conn.execute("SELECT paused FROM periodic WHERE name = ?", (name,)).fetchone()
    return bool(row and row[0])


def set_paused(conn: sqlite3.Connection, name: str, paused: bool) -> None:
    """Pause or resume periodic task ``name`` for every process."""
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO periodic (name, paused, changed) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, changed = excluded.changed",
            (name, int(paused), time.time()),
        )


def _finished_in(conn: sqlite3.Connection, minute: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT state, count(*) FROM jobs WHERE finished >= ? AND finished < ? GROUP BY state",
        (minute * 60, (minute + 1) * 60),
    )
    return {state: int(n) for state, n in rows}


def waiting_now(conn: sqlite3.Connection) -> int:
    """Return how many jobs are PENDING, SCHEDULED or RETRY (a walk of their index range)."""
    row = conn.execute("SELECT count(*) FROM jobs WHERE state IN (?, ?, ?)", _WAITING).fetchone()
    return int(row[0])


def record_minute(conn: sqlite3.Connection, minute: int) -> None:
    """Record the outcomes of ``minute`` (a whole minute, past) and the queue depth now.

    Called about once a minute by a live process; the first process to
    record a minute wins (the counts are the same).  Reads one minute's
    range of the finished index.
    """
    rows = [(minute, kind, n) for kind, n in _finished_in(conn, minute).items()]
    rows.append((minute, "waiting", waiting_now(conn)))
    with write_transaction(conn):
        conn.executemany(
            "INSERT OR IGNORE INTO job_minutes (minute, kind, n) VALUES (?, ?, ?)", rows
        )


def minutes(conn: sqlite3.Connection, since: float, now: float) -> list[MinuteCounts]:
    """Return outcomes per minute from ``since`` to ``now``, oldest first.

    Minutes already recorded are read from ``job_minutes``; the later ones
    (normally the current minute and maybe the one before) are counted on
    the finished index.  A minute without a recorded depth has ``waiting``
    ``None``.
    """
    first, last = int(since // 60), int(now // 60)
    merged: dict[int, MinuteCounts] = {}
    for minute, kind, n in conn.execute(
        "SELECT minute, kind, n FROM job_minutes WHERE minute >= ? ORDER BY minute", (first,)
    ):
        entry = merged.setdefault(minute, MinuteCounts(minute, {}, None))
        if kind == "waiting":
            merged[minute] = MinuteCounts(minute, entry.finished, int(n))
        else:
            entry.finished[kind] = int(n)
    recorded = max(merged, default=first - 1)
    for minute in range(max(recorded + 1, first), last + 1):
        merged[minute] = MinuteCounts(minute, _finished_in(conn, minute), None)
    return [merged[minute] for minute in sorted(merged)]


def job_owner(conn: sqlite3.Connection, job_id: str) -> str | None:
    """Return the owner token on the job's row (``None``: unowned or unknown)."""
    row = conn.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else row[0]


def purge(conn: sqlite3.Connection, state: str, older_than: float) -> int:
    """Delete finished jobs in ``state`` accepted before ``older_than``; return how many."""
    if state not in _FINAL:
        raise ConfigError(
            f"only finished jobs can be purged, not {state!r}; use one of {list(_FINAL)!r}"
        )
    with write_transaction(conn):
        return conn.execute(
            "DELETE FROM jobs WHERE state = ? AND enqueued < ? AND finished IS NOT NULL",
            (state, older_than),
        ).rowcount


def insert_unowned(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Insert a job row that no process owns yet: a live process takes it within a heartbeat.

    :param row: the parameters of :data:`~taskrun.stores.sqlite.db.INSERT_JOB`, owner ``None``.
    """
    with write_transaction(conn):
        conn.execute(INSERT_JOB, row)
