"""The shared store's connection and schema: open the file with its settings, migrate it.

Creating the file and refusing one others can reach is
:mod:`taskrun.stores.sqlite.files` (re-exported here).

The schema version lives in ``PRAGMA user_version``.  :data:`MIGRATIONS`
holds one script per version, the first being the initial schema of the
first release; opening a file runs, in one transaction, every script past
the file's version, so any file written by any earlier taskrun opens.  A
file from a *newer* taskrun is refused rather than guessed at.

Every problem found at open becomes a :class:`~taskrun.errors.StoreError`
that names the file and says how to fix it, so a bad ``store=`` fails at
``start()`` and not on the first job.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

from taskrun.errors import StoreError
from taskrun.stores.sqlite.db import is_busy, write_transaction
from taskrun.stores.sqlite.files import create_file, store_path

__all__ = ["LATEST", "MIGRATIONS", "Migration", "connect", "create_file", "migrate", "store_path"]

logger = logging.getLogger(__name__)

#: Migration ``i`` brings a file from version ``i`` to ``i + 1``.
#:
#: ``jobs`` is a rowid table: rows are appended in about the order jobs are
#: accepted, which pruning relies on.  Its only secondary indexes are partial
#: ones that the hot path never touches (a job enters them only when it is
#: unowned or asked to cancel), so a job costs one insert and one update.
#: A migration is a script of statements without ``;`` inside them, or a
#: tuple of statements (for triggers, whose bodies hold ``;``).
Migration = str | tuple[str, ...]
MIGRATIONS: tuple[Migration, ...] = (
    # 1: the first release.
    """
    CREATE TABLE jobs (
        id TEXT NOT NULL PRIMARY KEY,
        task TEXT NOT NULL,
        state TEXT NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued REAL NOT NULL,
        started REAL,
        finished REAL,
        due REAL NOT NULL DEFAULT 0,
        result BLOB,
        result_text TEXT,
        traceback TEXT,
        owner TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_unowned ON jobs (task) WHERE owner IS NULL AND finished IS NULL;
    CREATE INDEX jobs_cancel_requested ON jobs (owner)
        WHERE cancel_requested = 1 AND finished IS NULL;
    CREATE TABLE processes (
        token TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        pid_start TEXT,
        host TEXT NOT NULL,
        started REAL NOT NULL,
        heartbeat REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE periodic_slots (
        name TEXT NOT NULL,
        slot REAL NOT NULL,
        owner TEXT NOT NULL,
        claimed REAL NOT NULL,
        PRIMARY KEY (name, slot)
    ) WITHOUT ROWID;
    """,
    # 2: progress meta, unique keys, expiry, per-task result_ttl, running slots, rate windows.
    # The unique index holds only unfinished jobs with a key: finishing frees the key.
    """
    ALTER TABLE jobs ADD COLUMN meta TEXT;
    ALTER TABLE jobs ADD COLUMN expires REAL;
    ALTER TABLE jobs ADD COLUMN unique_key TEXT;
    ALTER TABLE jobs ADD COLUMN result_ttl REAL;
    CREATE UNIQUE INDEX jobs_unique_key ON jobs (task, unique_key)
        WHERE unique_key IS NOT NULL AND finished IS NULL;
    CREATE INDEX jobs_result_ttl ON jobs (finished) WHERE result_ttl IS NOT NULL;
    CREATE TABLE running_slots (
        job TEXT NOT NULL PRIMARY KEY,
        task TEXT NOT NULL,
        owner TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX running_slots_task ON running_slots (task);
    CREATE TABLE rate_starts (
        task TEXT NOT NULL,
        started REAL NOT NULL
    );
    CREATE INDEX rate_starts_task ON rate_starts (task, started);
    """,
    # 3: operator views.  Listings newest first by state, by task or all,
    # and counts per state, walk the indexes (an index costs the writer about
    # a microsecond a job; triggers keeping counts cost several, so there are
    # none); outcomes per minute are recorded once a minute by a live process
    # (a range of the finished index), with the queue depth then; the host
    # name of each process; periodic tasks' paused flags.
    (
        "CREATE INDEX jobs_state_enqueued ON jobs (state, enqueued)",
        "CREATE INDEX jobs_task_enqueued ON jobs (task, enqueued)",
        "CREATE INDEX jobs_enqueued ON jobs (enqueued)",
        "CREATE INDEX jobs_finished ON jobs (finished, state) WHERE finished IS NOT NULL",
        "ALTER TABLE processes ADD COLUMN hostname TEXT",
        "CREATE TABLE periodic (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0, "
        "changed REAL NOT NULL) WITHOUT ROWID",
        # kind: a final state (jobs that reached it that minute) or 'waiting'
        # (PENDING, SCHEDULED and RETRY jobs when the minute was recorded).
        "CREATE TABLE job_minutes (minute INTEGER NOT NULL, kind TEXT NOT NULL, "
        "n INTEGER NOT NULL, PRIMARY KEY (minute, kind)) WITHOUT ROWID",
    ),
    # 4: seconds a job's runs held the event loop (``Job.blocked_for``), for every process.
    "ALTER TABLE jobs ADD COLUMN blocked REAL",
)

#: The schema version this taskrun writes.
LATEST = len(MIGRATIONS)


def connect(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with the store's settings.

    WAL journal (readers never wait for the writer), ``synchronous=NORMAL``
    (a commit costs no fsync; a power loss may lose the last commits, a
    process crash none), no automatic checkpoint (the store checkpoints
    off the event loop) and ``busy_timeout=0`` (a locked file raises at
    once; the caller yields and retries instead of blocking the loop).

    :raises StoreError: the file is not a database, is corrupt or is read-only.
    """
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=0, check_same_thread=check_same_thread
        )
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the taskrun store {path!r}: {error}") from error
    try:
        mode = _set_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA cache_size=-16000")
        conn.execute("PRAGMA foreign_keys=OFF")
    except sqlite3.DatabaseError as error:
        conn.close()
        raise _open_error(path, error) from error
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(
            f"the taskrun store {path!r} cannot use SQLite's WAL mode (got {mode!r}); "
            "keep it on a local filesystem (not NFS or a read-only mount)"
        )
    return conn


#: How long opening waits for another process that is switching a new file to WAL.
WAL_SWITCH_WAIT = 5.0


def _set_wal(conn: sqlite3.Connection) -> object:
    """Switch to WAL and return the journal mode, retrying while another process switches.

    Several workers opening a new file at once race to switch it to WAL; the
    losers see "database is locked" for a moment.  ``time.sleep`` yields to
    the event loop in a patched process, so the wait does not block it.
    """
    deadline = time.monotonic() + WAL_SWITCH_WAIT
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _open_error(path: str, error: sqlite3.DatabaseError) -> StoreError:
    text = str(error)
    if "readonly" in text or "read-only" in text:
        return StoreError(
            f"the taskrun store {path!r} is read-only ({text}); make the file and its "
            "directory writable by the app's user, or point store= elsewhere"
        )
    if isinstance(error, sqlite3.OperationalError) and "locked" in text:
        return StoreError(
            f"the taskrun store {path!r} stayed locked by another process ({text}); "
            "retry, or find the process holding it (fuser)"
        )
    return StoreError(
        f"the taskrun store {path!r} is not a taskrun store or is corrupt (SQLite: {text}); "
        f"move it aside (mv {path} {path}.broken) and start again to create a new, empty store"
    )


def migrate(
    conn: sqlite3.Connection, path: str, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the file to the newest schema version, in one write transaction.

    Safe when several processes open the same file at once: the version is
    re-read under the write lock, so each migration runs exactly once.

    :returns: (the version found, the version now).
    :raises StoreError: the file is newer than this taskrun, is some other
        SQLite database, or is corrupt.
    :raises sqlite3.OperationalError: the file is locked (the caller retries).
    """
    latest = len(migrations)
    try:
        found = _version(conn)
        _check_version(conn, path, found, latest)
        if found == latest:
            return found, found
        with write_transaction(conn):
            found = _version(conn)
            _check_version(conn, path, found, latest)
            for version in range(found, latest):
                script = migrations[version]
                statements = list(script) if isinstance(script, tuple) else _statements(script)
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={latest:d}")
    except sqlite3.OperationalError as error:
        if is_busy(error):
            raise
        raise _open_error(path, error) from error
    except sqlite3.DatabaseError as error:
        raise _open_error(path, error) from error
    if found != latest:
        logger.info("migrated the taskrun store %s from version %d to %d", path, found, latest)
    return found, latest


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_version(conn: sqlite3.Connection, path: str, found: int, latest: int) -> None:
    if found > latest:
        raise StoreError(
            f"the taskrun store {path!r} has schema version {found}, written by a newer "
            f"taskrun (this one knows versions up to {latest}); upgrade taskrun in every "
            "process that shares the store, or point store= at another file"
        )
    if found == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreError(
                f"{path!r} is an SQLite database but not a taskrun store (it has {tables} "
                "other schema objects); point store= at a new file of its own"
            )


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (no ';' inside the statements)."""
    return [part.strip() for part in script.split(";") if part.strip()]
