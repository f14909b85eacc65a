"""The shared store's file: create it safely, check it, and migrate its schema.

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
import os
import sqlite3
import stat
import time
from collections.abc import Sequence

from taskrun.errors import ConfigError, StoreError
from taskrun.stores.sqlite.db import is_busy, write_transaction

__all__ = ["LATEST", "MIGRATIONS", "connect", "create_file", "migrate", "store_path"]

logger = logging.getLogger(__name__)

#: Migration ``i`` brings a file from version ``i`` to ``i + 1``.
#:
#: ``jobs`` is a rowid table: rows are appended in about the order jobs are
#: accepted, which pruning relies on.  Its only secondary indexes are partial
#: ones that the hot path never touches (a job enters them only when it is
#: unowned or asked to cancel), so a job costs one insert and one update.
MIGRATIONS: tuple[str, ...] = (
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
)

#: The schema version this taskrun writes.
LATEST = len(MIGRATIONS)


def store_path(spec: str | os.PathLike[str]) -> str:
    """Return the absolute file path named by a store setting.

    ``"sqlite:///var/lib/app/taskrun.db"`` and ``"/var/lib/app/taskrun.db"``
    are absolute; ``"sqlite://taskrun.db"`` and ``"taskrun.db"`` are relative
    to the current directory.

    :raises ConfigError: for another scheme, an in-memory SQLite name or an empty path.
    """
    text = os.fspath(spec)
    path = text
    if "://" in text:
        scheme, _, path = text.partition("://")
        if scheme.lower() != "sqlite":
            raise ConfigError(
                f"unknown store {text!r}: use 'memory', 'sqlite:///path/to/taskrun.db' "
                "or a file path"
            )
    elif text.lower().startswith("sqlite:"):
        path = text[len("sqlite:") :]
    if not path.strip() or path.strip() == ":memory:" or "?" in path:
        raise ConfigError(
            f"store {text!r} does not name a file; use e.g. 'sqlite:///var/lib/app/taskrun.db' "
            "(processes share jobs through the file, so it must be a real path)"
        )
    return os.path.abspath(path)


def create_file(path: str) -> None:
    """Create the store file with owner-only permissions (0600) if it does not exist.

    SQLite gives its ``-wal`` and ``-shm`` files the same permissions.

    :raises StoreError: the directory is missing or not writable, the path
        is not a regular file, an existing file cannot be read and written,
        or it (or its ``-wal``/``-shm``) is not the app user's alone
        (:func:`check_trusted`).
    """
    directory = os.path.dirname(path) or "."
    try:
        is_directory = stat.S_ISDIR(os.stat(directory).st_mode)
    except PermissionError as error:
        raise StoreError(
            f"cannot open the taskrun store {path!r}: this user (uid {os.getuid()}) may not "
            f"enter {error.filename!r}; fix the directory's permissions or point store= elsewhere"
        ) from error
    except OSError:
        is_directory = False
    if not is_directory:
        raise StoreError(
            f"cannot open the taskrun store {path!r}: the directory {directory!r} does not "
            "exist; create it (mkdir -p) or point store= at a file in an existing directory"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        _check_existing(path)
    except OSError as error:
        raise StoreError(
            f"cannot create the taskrun store {path!r}: {error.strerror}; make the directory "
            f"{directory!r} writable by this user (uid {os.getuid()}) or point store= elsewhere"
        ) from error
    else:
        os.close(fd)
        logger.info("created the taskrun store %s (mode 0600)", path)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot use the taskrun store {path!r}: its directory {directory!r} is not "
            f"writable by this user (uid {os.getuid()}), and SQLite keeps its -wal and -shm "
            "files next to the store; make the directory writable or move the store"
        )


def _check_existing(path: str) -> None:
    try:
        info = os.stat(path)
    except OSError as error:
        raise StoreError(f"cannot use the taskrun store {path!r}: {error.strerror}") from error
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(
            f"the taskrun store {path!r} is not a regular file; point store= at a file path"
        )
    check_trusted(path, info)
    if not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"the taskrun store {path!r} is not readable and writable by this user "
            f"(uid {os.getuid()}); fix its owner or mode (e.g. chown the file to the app's "
            "user and chmod 600 it) or point store= elsewhere"
        )
    for suffix in ("-wal", "-shm"):
        try:
            side = os.stat(path + suffix)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StoreError(
                f"cannot use the taskrun store {path!r}: {path + suffix!r}: {error.strerror}"
            ) from error
        check_trusted(path + suffix, side)


def check_trusted(path: str, info: os.stat_result) -> None:
    """Refuse a store file (or its ``-wal``/``-shm``) that others could write or read.

    The file holds pickles: whoever can write it runs code as the app, and
    whoever can read it sees every job's arguments and results.

    :raises StoreError: naming the file, its owner and mode, and the fix, if
        another user owns it or its mode grants the group or others any access.
    """
    mode = stat.S_IMODE(info.st_mode)
    uid = os.getuid()
    if info.st_uid != uid:
        raise StoreError(
            f"refusing the taskrun store file {path!r}: it is owned by uid {info.st_uid}, not "
            f"by this user (uid {uid}), and it holds pickles (whoever can write it runs code "
            f"as the app); chown {uid} {path} && chmod 600 {path}, or point store= at a file "
            "of this user"
        )
    if mode & 0o077:
        access = "write" if mode & 0o022 else "read"
        raise StoreError(
            f"refusing the taskrun store file {path!r}: its mode {mode:04o} lets other users "
            f"{access} it (owner uid {info.st_uid}); it "
            "holds pickles (whoever can write it runs code as the app) and job data; "
            f"chmod 600 {path}"
        )


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
    conn: sqlite3.Connection, path: str, migrations: Sequence[str] = MIGRATIONS
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
                for statement in _statements(migrations[version]):
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
