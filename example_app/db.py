"""The example app's SQLite database: one connection per app context, a request's or a job's.

taskrun pushes an app context around every job, so :func:`get_db` works the
same in a view and in a task, and the ``teardown_appcontext`` hook closes
the job's connection when the job ends.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

from flask import Flask, current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
-- One row per sign-up whose welcome email a job has claimed or sent.
CREATE TABLE IF NOT EXISTS welcome_emails (
    signup_id INTEGER PRIMARY KEY REFERENCES signups (id),
    claimed_at REAL,
    sent_at REAL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def connect(path: str) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit ``BEGIN``s), rows by name."""
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


def init_app(app: Flask) -> None:
    """Create the tables if they are missing and close each context's connection at its end."""
    with closing(connect(app.config["DATABASE"])) as db:
        # WAL lets worker processes read while one of them writes.
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    app.teardown_appcontext(close_db)


def get_db() -> sqlite3.Connection:
    """Return this app context's connection, opening it on first use."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    db: sqlite3.Connection = g.db
    return db


def close_db(error: BaseException | None = None) -> None:
    """Close this app context's connection, if it opened one."""
    db = g.pop("db", None)
    if db is not None:
        db.close()


def count(sql: str, *params: Any) -> int:
    """Return the single integer ``sql`` selects."""
    row = get_db().execute(sql, params).fetchone()
    return int(row[0])
