"""The shared store's SQL: every statement taskrun runs on the file, as plain functions.

Each function takes an open connection (see :mod:`taskrun.stores.sqlite.schema`)
and runs one short transaction; none touches gevent, so they run on the
event loop or in a thread alike.  Write transactions start with ``BEGIN
IMMEDIATE``: with ``busy_timeout=0`` a file locked by another process
raises ``sqlite3.OperationalError`` at once and the caller decides how to
wait (see :func:`is_busy`).
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from taskrun.stores.sqlite.codec import JOB_COLUMNS
from taskrun.stores.sqlite.procs import ProcessInfo, is_alive

__all__ = [
    "INSERT_JOB",
    "UPDATE_JOB",
    "is_busy",
    "write_batch",
    "write_transaction",
]

#: Parameters: id, task, state, payload, attempts, enqueued, due, owner,
#: expires, unique_key, result_ttl.
INSERT_JOB = (
    "INSERT OR IGNORE INTO jobs (id, task, state, payload, attempts, enqueued, due, owner, "
    "expires, unique_key, result_ttl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Parameters: meta (JSON), blocked, id, current owner: what a running job reports.
UPDATE_META = "UPDATE jobs SET meta = ?, blocked = ? WHERE id = ? AND owner = ?"
#: Parameters: state, attempts, started, finished, due, result, result_text,
#: traceback, blocked, new owner, id, current owner.  A process that lost a
#: job to another one (see :func:`reap_dead`) can no longer write to its row.
UPDATE_JOB = (
    "UPDATE jobs SET state = ?, attempts = ?, started = ?, finished = ?, due = ?, result = ?, "
    "result_text = ?, traceback = ?, blocked = ?, owner = ? WHERE id = ? AND owner = ?"
)
_REQUEUE = "state = CASE state WHEN 'STARTED' THEN 'PENDING' ELSE state END"


def is_busy(error: BaseException) -> bool:
    """Return whether ``error`` means "the file is locked by another connection; retry"."""
    text = str(error)
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction: commit, or roll back and re-raise.

    :raises sqlite3.OperationalError: at once if another connection holds the
        write lock (see :func:`is_busy`).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def write_batch(
    conn: sqlite3.Connection,
    inserts: Iterable[tuple[Any, ...]],
    updates: Iterable[tuple[Any, ...]],
    metas: Iterable[tuple[Any, ...]] = (),
) -> None:
    """Insert new jobs, then write meta and update changed ones, in one transaction."""
    with write_transaction(conn):
        conn.executemany(INSERT_JOB, inserts)
        conn.executemany(UPDATE_META, metas)
        conn.executemany(UPDATE_JOB, updates)


# -- processes and ownership ---------------------------------------------------


def register(conn: sqlite3.Connection, me: ProcessInfo, now: float) -> None:
    """Record this process (again) as a live owner of jobs."""
    with write_transaction(conn):
        _insert_process(conn, me, now)


def _insert_process(conn: sqlite3.Connection, me: ProcessInfo, now: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO processes "
        "(token, pid, pid_start, host, started, heartbeat, hostname) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (me.token, me.pid, me.pid_start, me.host, now, now, socket.gethostname()),
    )


def heartbeat(conn: sqlite3.Connection, token: str, now: float) -> bool:
    """Renew this process's lease; ``False`` if another process declared it dead."""
    with write_transaction(conn):
        cursor = conn.execute("UPDATE processes SET heartbeat = ? WHERE token = ?", (now, token))
        return cursor.rowcount > 0


def keep_own(conn: sqlite3.Connection, me: ProcessInfo, now: float, ids: Sequence[str]) -> set[str]:
    """After being declared dead: re-register and take back the jobs nobody took yet.

    :returns: the ids among ``ids`` whose rows this process owns again.
    """
    kept: set[str] = set()
    with write_transaction(conn):
        _insert_process(conn, me, now)
        for start in range(0, len(ids), 500):
            chunk = json.dumps(list(ids[start : start + 500]))
            rows = conn.execute(
                "UPDATE jobs SET owner = ? WHERE id IN (SELECT value FROM json_each(?)) "
                "AND finished IS NULL AND (owner IS NULL OR owner = ?) RETURNING id",
                (me.token, chunk, me.token),
            )
            kept.update(row[0] for row in rows)
    return kept


def release_all(conn: sqlite3.Connection, token: str) -> int:
    """Hand back every unfinished job of ``token`` (running ones as PENDING) and unregister.

    :returns: how many jobs were handed back.
    """
    with write_transaction(conn):
        count = conn.execute(
            f"UPDATE jobs SET owner = NULL, {_REQUEUE} WHERE owner = ? AND finished IS NULL",
            (token,),
        ).rowcount
        conn.execute("DELETE FROM processes WHERE token = ?", (token,))
    return count


def reap_dead(
    conn: sqlite3.Connection, me: ProcessInfo, lease: float, now: float
) -> list[tuple[int, int]]:
    """Hand back the jobs of processes that died, or (on another host key) whose lease expired.

    A process of this host key is judged by its pid alone: dead when the pid
    is gone, a zombie or reused (another start time), alive otherwise, however
    old its heartbeat (its loop may have stalled, or the wall clock stepped).
    A process of another host key is dead when its heartbeat is older than
    ``lease`` seconds.  A dead process's unfinished jobs become unowned
    (running ones PENDING) and its row is deleted, in one transaction per process.

    :returns: (pid, jobs handed back) for each process reaped.
    """
    rows = conn.execute("SELECT token, pid, pid_start, host, heartbeat FROM processes").fetchall()
    reaped: list[tuple[int, int]] = []
    for token, pid, pid_start, host, beat in rows:
        if token == me.token:
            continue
        if host == me.host:
            if is_alive(pid, pid_start):
                continue
        elif beat >= now - lease:
            continue
        with write_transaction(conn):
            deleted = conn.execute(
                "DELETE FROM processes WHERE token = ? AND heartbeat = ?", (token, beat)
            ).rowcount
            if not deleted:
                continue  # it renewed its lease meanwhile
            count = conn.execute(
                f"UPDATE jobs SET owner = NULL, {_REQUEUE} WHERE owner = ? AND finished IS NULL",
                (token,),
            ).rowcount
        reaped.append((pid, count))
    return reaped


def has_unowned(conn: sqlite3.Connection) -> bool:
    """Return whether any unfinished job waits for an owner (an index probe)."""
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE owner IS NULL AND finished IS NULL LIMIT 1"
    ).fetchone()
    return row is not None


def has_unowned_of(conn: sqlite3.Connection, names: Iterable[str]) -> bool:
    """Return whether an unfinished job of one of the tasks ``names`` waits for an owner."""
    row = conn.execute(
        "SELECT 1 FROM jobs WHERE owner IS NULL AND finished IS NULL "
        "AND task IN (SELECT value FROM json_each(?)) LIMIT 1",
        (json.dumps(sorted(names)),),
    ).fetchone()
    return row is not None


def claim(
    conn: sqlite3.Connection, token: str, names: Iterable[str], limit: int
) -> list[tuple[Any, ...]]:
    """Take up to ``limit`` unowned, unfinished jobs of the tasks ``names`` (in index order).

    :returns: rows of :data:`~taskrun.stores.sqlite.codec.JOB_COLUMNS` plus ``cancel_requested``.
    """
    with write_transaction(conn):
        return conn.execute(
            f"UPDATE jobs SET owner = ?, {_REQUEUE} WHERE id IN ("
            "SELECT id FROM jobs WHERE owner IS NULL AND finished IS NULL "
            "AND task IN (SELECT value FROM json_each(?)) LIMIT ?) "
            f"RETURNING {JOB_COLUMNS}, cancel_requested",
            (token, json.dumps(sorted(names)), limit),
        ).fetchall()


def cancel_requests(conn: sqlite3.Connection, token: str) -> list[str]:
    """Return the ids of this process's unfinished jobs that another process asked to cancel."""
    rows = conn.execute(
        "SELECT id FROM jobs WHERE owner = ? AND cancel_requested = 1 AND finished IS NULL",
        (token,),
    )
    return [row[0] for row in rows]


def request_cancel(conn: sqlite3.Connection, job_id: str, now: float) -> bool | None:
    """Cancel a job owned elsewhere: at once if it waits unowned, else ask its owner.

    :returns: ``True`` if it is now CANCELLED, ``False`` if its owner was
        asked to cancel it, ``None`` if it is finished or unknown.
    """
    with write_transaction(conn):
        done = conn.execute(
            "UPDATE jobs SET state = 'CANCELLED', finished = ?, result = NULL, "
            "result_text = NULL WHERE id = ? AND owner IS NULL AND finished IS NULL",
            (now, job_id),
        ).rowcount
        if done:
            return True
        asked = conn.execute(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND finished IS NULL", (job_id,)
        ).rowcount
    return False if asked else None


def read_job(conn: sqlite3.Connection, job_id: str) -> tuple[Any, ...] | None:
    """Return the row of :data:`~.codec.JOB_COLUMNS` for ``job_id``, or ``None``."""
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    return row


# -- periodic slots --------------------------------------------------------------


def claim_slot(conn: sqlite3.Connection, name: str, slot: float, token: str, now: float) -> bool:
    """Record that this process runs ``(name, slot)``; ``False`` if another one already did."""
    with write_transaction(conn):
        return (
            conn.execute(
                "INSERT OR IGNORE INTO periodic_slots (name, slot, owner, claimed) "
                "VALUES (?, ?, ?, ?)",
                (name, slot, token, now),
            ).rowcount
            > 0
        )


def last_slot(conn: sqlite3.Connection, name: str) -> float | None:
    """Return the latest slot of periodic task ``name`` that any process claimed, or ``None``."""
    row = conn.execute("SELECT MAX(slot) FROM periodic_slots WHERE name = ?", (name,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


# -- housekeeping (run off the event loop) ------------------------------------------


def prune(
    conn: sqlite3.Connection,
    oldest_kept: float,
    max_results: int,
    slots_before: float,
    limit: int,
    now: float | None = None,
) -> int:
    """Delete finished jobs older than ``oldest_kept`` and all but ``max_results`` finished ones.

    Rows lie in about the order jobs were accepted (rowid order), and a job
    finishes after it is accepted, so the jobs past ``oldest_kept`` all lie
    before the first row accepted after it: only that prefix is scanned.
    Past ``max_results``, the earliest accepted finished jobs go first.  At
    most ``limit`` jobs go per rule, so one call stays short; periodic slot
    claims older than ``slots_before`` go too.  Jobs of tasks with their own
    ``result_ttl`` go by that instead, once ``now`` is past it.

    :returns: how many jobs were deleted.
    """
    first_new = conn.execute(
        "SELECT rowid FROM jobs WHERE enqueued >= ? ORDER BY rowid LIMIT 1", (oldest_kept,)
    ).fetchone()
    finished = conn.execute("SELECT count(*) FROM jobs WHERE finished IS NOT NULL").fetchone()[0]
    with write_transaction(conn):
        count = conn.execute(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE rowid < ? "
            "AND finished < ? AND result_ttl IS NULL LIMIT ?)",
            (first_new[0] if first_new else 2**63 - 1, oldest_kept, limit),
        ).rowcount
        if now is not None:
            count += conn.execute(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs WHERE "
                "result_ttl IS NOT NULL AND finished + result_ttl < ? LIMIT ?)",
                (now, limit),
            ).rowcount
        excess = min(finished - count - max_results, limit)
        if excess > 0:
            count += conn.execute(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs "
                "WHERE finished IS NOT NULL ORDER BY rowid LIMIT ?)",
                (excess,),
            ).rowcount
        conn.execute("DELETE FROM periodic_slots WHERE claimed < ?", (slots_before,))
        conn.execute("DELETE FROM job_minutes WHERE minute < ?", (int(slots_before // 60),))
    return count


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy committed pages from the WAL into the file (fsyncs; never on the event loop)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
