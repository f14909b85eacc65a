"""A job's current state as the parameters of an ``UPDATE``: built so that it never fails.

:func:`update_row` is called by the writer greenlet for every changed job.
Whatever the job holds (a result that cannot be pickled, an exception whose
message has a lone surrogate, a result nested too deeply to pickle), it
returns a row SQLite accepts: an outcome that cannot be stored becomes a
FAILURE whose error text says why (:func:`failure_row`), and text columns
are escaped (:func:`~taskrun.stores.sqlite.codec.safe_text`).  A RETRY job's
row holds the error it retries after, so every process shows it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from taskrun.jobs import FINISHED, Job, JobState
from taskrun.stores.sqlite.codec import Unstorable, encode_result, safe_text

__all__ = ["failure_row", "update_row"]

logger = logging.getLogger(__name__)

# Positions in the parameters of db.UPDATE_JOB.
_STATE, _FINISHED, _RESULT, _TEXT, _TRACEBACK, _ID = 0, 3, 5, 6, 7, 10


def update_row(job: Job[Any], token: str, released: bool) -> tuple[Any, ...]:
    """The parameters of :data:`~.db.UPDATE_JOB` for the current state of ``job``; never raises."""
    try:
        return _update_row(job, token, released)
    except Exception as error:
        owner = None if released else token
        row: tuple[Any, ...] = (job.state.value, job.attempts, None, None, 0.0, None)
        row += (None, None, job.blocked_for, owner, job.id, token)
        why = f"taskrun could not encode it ({type(error).__name__}: {safe_text(str(error))})"
        logger.error("job %s (%s): %s; stored as FAILURE", job.id, job.name, why)
        return failure_row(row, why)


def _update_row(job: Job[Any], token: str, released: bool) -> tuple[Any, ...]:
    runs = job._runs  # None until the job first starts, fails or finishes
    started = runs.started if runs is not None else None
    blob: bytes | None = None
    text: str | None = None
    finished: float | None = None
    state = job.state
    traceback = safe_text(job.traceback)
    if state in FINISHED or state is JobState.RETRY:
        encoded = encode_result(job)
        if isinstance(encoded, Unstorable) and state is JobState.RETRY:
            text = encoded.text  # not an outcome yet: the next attempt may store one
        elif isinstance(encoded, Unstorable):
            state, text, traceback = JobState.FAILURE, encoded.text, encoded.text
        else:
            blob, text = encoded
    if state in FINISHED:
        finished = runs.finished if runs is not None and runs.finished is not None else None
        if finished is None:
            finished = time.time()
    return (
        state.value,
        job.attempts,
        started,
        finished,
        job.due,
        blob,
        text,
        traceback,
        runs.blocked if runs is not None else None,
        None if released else token,
        job.id,
        token,
    )


def failure_row(row: tuple[Any, ...], why: str) -> tuple[Any, ...]:
    """Return ``row`` changed to a FAILURE whose result text and traceback say ``why``."""
    changed = list(row)
    text = f"job {row[_ID]}: {why}"
    changed[_STATE] = JobState.FAILURE.value
    changed[_FINISHED] = changed[_FINISHED] or time.time()
    changed[_RESULT] = None
    changed[_TEXT] = changed[_TRACEBACK] = text
    return tuple(changed)
