"""Turning jobs into rows and back: arguments and results as pickles.

Arguments are pickled when the job is accepted, so an argument that cannot
be stored (a socket, a lambda, an open file) fails at ``delay()`` with
:class:`~taskrun.errors.NotSerializable` naming the task and the argument,
not later in the process that recovers the job.  A result that cannot be
pickled is stored as its ``repr``; other processes then see that text.
"""

from __future__ import annotations

import logging
import pickle
import reprlib
from collections.abc import Callable
from typing import Any

from taskrun.errors import JobLost, NotSerializable
from taskrun.jobs import FINISHED, Job, JobControl, JobState, TaskLike
from taskrun.options import TaskOptions

__all__ = ["JOB_COLUMNS", "UnknownTask", "decode_payload", "encode_payload", "job_from_row"]

logger = logging.getLogger(__name__)

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80

#: The columns :func:`job_from_row` expects, in order.
JOB_COLUMNS = (
    "id, task, state, payload, attempts, enqueued, started, finished, due, "
    "result, result_text, traceback"
)


def encode_payload(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bytes:
    """Pickle a job's arguments.

    :raises NotSerializable: (a ``TypeError``) naming the task and the first
        argument that cannot be pickled.
    """
    try:
        return pickle.dumps((args, kwargs), _PROTOCOL)
    except Exception as error:
        raise _not_serializable(task_name, args, kwargs, error) from error


def _not_serializable(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, error: Exception
) -> NotSerializable:
    where = "its arguments"
    culprit: Any = (args, kwargs)
    candidates: list[tuple[str, Any]] = [(f"argument {i}", value) for i, value in enumerate(args)]
    candidates += [(f"argument {key!r}", value) for key, value in (kwargs or {}).items()]
    for label, value in candidates:
        try:
            pickle.dumps(value, _PROTOCOL)
        except Exception as found:
            where, culprit, error = label, value, found
            break
    return NotSerializable(
        f"cannot store a job of task {task_name!r}: {where} ({_repr.repr(culprit)}) cannot be "
        f"pickled ({type(error).__name__}: {error}); pass plain data such as ids, strings "
        "and numbers and load the object inside the task"
    )


def decode_payload(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Unpickle a job's arguments (raises whatever unpickling raises)."""
    args, kwargs = pickle.loads(payload)
    return tuple(args), kwargs


def encode_result(job: Job[Any]) -> tuple[bytes | None, str | None]:
    """Return (pickle, text) for a finished job's value; text when it cannot be pickled."""
    value = job.result
    if value is None:
        return None, None
    try:
        return pickle.dumps(value, _PROTOCOL), None
    except Exception as error:
        logger.warning(
            "job %s (%s): its %s cannot be pickled (%r); other processes see its repr",
            job.id,
            job.name,
            "exception" if isinstance(value, BaseException) else "result",
            error,
        )
        return None, repr(value)


def decode_result(blob: bytes | None, text: str | None) -> Any:
    """Return the stored value: the unpickled object, else its repr text."""
    if blob is None:
        return text
    try:
        return pickle.loads(blob)
    except Exception as error:
        return f"<result that cannot be loaded here: {error!r}>"


class UnknownTask:
    """Stands in for a task this process does not have, on a job read from the store."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        """The name the job was stored under."""
        return self._name

    @property
    def options(self) -> TaskOptions:
        """Default options: the job is never run here."""
        return TaskOptions()

    @property
    def fn(self) -> Callable[..., Any]:
        """A function that raises: a job of an unknown task cannot run here."""
        return self._refuse

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise JobLost(
            f"task {self._name!r} is not registered in this process; "
            "declare it with @runner.task(name=...) under the same name"
        )


def job_from_row(
    row: tuple[Any, ...], task: TaskLike | None, control: JobControl | None
) -> Job[Any]:
    """Build a :class:`Job` from a row of :data:`JOB_COLUMNS`.

    Arguments that cannot be unpickled here leave ``args`` empty.

    :param task: the registered task of that name, or ``None`` for an unknown one.
    """
    (job_id, name, state, payload, attempts, enqueued, started, finished, due) = row[:9]
    try:
        args, kwargs = decode_payload(payload)
    except Exception:
        args, kwargs = (), None
    job: Job[Any] = Job(
        task or UnknownTask(name),
        args,
        kwargs,
        control,
        job_id=job_id,
        state=JobState(state),
        enqueued=enqueued,
    )
    job.due = due or 0.0
    runs = job._run_record()
    runs.attempts = attempts
    runs.started = started
    runs.traceback = row[11]
    if job.state in FINISHED:
        runs.finished = finished
        runs.value = decode_result(row[9], row[10])
    return job


def refresh_from_row(job: Job[Any], row: tuple[Any, ...]) -> None:
    """Copy a newer row's state, attempts, times and outcome onto ``job``."""
    job.state = JobState(row[2])
    job.due = row[8] or 0.0
    runs = job._run_record()
    runs.attempts = row[4]
    runs.started = row[6]
    runs.traceback = row[11]
    if job.state in FINISHED:
        job._finish(job.state, decode_result(row[9], row[10]), row[7])
