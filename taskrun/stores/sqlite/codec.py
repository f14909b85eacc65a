"""Turning jobs into rows and back: arguments and results as pickles.

Arguments are pickled when the job is accepted, so an argument that cannot
be stored (a socket, a lambda, an open file) fails at ``delay()`` with
:class:`~taskrun.errors.NotSerializable` naming the task and the argument,
not later in the process that recovers the job, and so does one larger
than the runner's ``max_arg_bytes`` once pickled (default 1 MB: big blobs
belong in a file or a table, with their key as the argument).

Encoding an outcome never raises: a result that cannot be pickled is
stored as its ``repr`` (other processes then see that text); one whose
``repr`` fails too, or that is too deeply nested to pickle, is stored as a
FAILURE whose error says why.  Text columns are stored with any lone
surrogate escaped (:func:`safe_text`), and decoding a row never raises.
"""

from __future__ import annotations

import json
import logging
import pickle
import reprlib
from collections.abc import Callable
from typing import Any

from taskrun.errors import JobLost, NotSerializable
from taskrun.jobs import FINISHED, Job, JobControl, JobState, TaskLike
from taskrun.options import TaskOptions
from taskrun.stores.base import DEFAULT_MAX_ARG_BYTES

__all__ = [
    "DEFAULT_MAX_ARG_BYTES",
    "JOB_COLUMNS",
    "UnknownTask",
    "decode_payload",
    "encode_payload",
    "job_from_row",
    "safe_text",
]

logger = logging.getLogger(__name__)

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80

#: The columns :func:`job_from_row` expects, in order.
JOB_COLUMNS = (
    "id, task, state, payload, attempts, enqueued, started, finished, due, "
    "result, result_text, traceback, meta, expires, unique_key, blocked"
)
#: How many columns :data:`JOB_COLUMNS` names.
JOB_COLUMN_COUNT = JOB_COLUMNS.count(",") + 1


def safe_text(text: str | None) -> str | None:
    """Return ``text`` storable as UTF-8: lone surrogates (from ``os.fsdecode``) escaped.

    ``"bad \\udcff name"`` becomes ``"bad \\\\udcff name"``; other text is returned as is.
    """
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def describe(value: object) -> str:
    """Return ``repr(value)`` shortened and storable; never raises (a failing repr is named)."""
    try:
        return safe_text(_repr.repr(value)) or ""
    except Exception as error:
        return f"<{type(value).__name__} whose repr raised {type(error).__name__}>"


def encode_payload(
    task_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    limit: int = DEFAULT_MAX_ARG_BYTES,
) -> bytes:
    """Pickle a job's arguments.

    :param limit: the most bytes the pickle may have (the runner's ``max_arg_bytes``).
    :raises NotSerializable: (a ``TypeError``) naming the task and the first
        argument that cannot be pickled, or the size and the limit.
    """
    try:
        payload = pickle.dumps((args, kwargs), _PROTOCOL)
    except Exception as error:
        raise _not_serializable(task_name, args, kwargs, error) from error
    if len(payload) > limit:
        raise NotSerializable(
            f"cannot store a job of task {task_name!r}: its arguments take {len(payload):,} "
            f"bytes pickled, over the limit of {limit:,} (max_arg_bytes); store the data in a "
            "file or a table and pass its key, or raise max_arg_bytes "
            "(TASKRUN_MAX_ARG_BYTES)"
        )
    return payload


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
        f"cannot store a job of task {task_name!r}: {where} ({describe(culprit)}) cannot be "
        f"pickled ({type(error).__name__}: {_message(error)}); pass plain data such as ids, "
        "strings and numbers and load the object inside the task"
    )


def decode_payload(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Unpickle a job's arguments (raises whatever unpickling raises)."""
    args, kwargs = pickle.loads(payload)
    return tuple(args), kwargs


def _message(error: BaseException) -> str:
    """``str(error)``, storable, never raising."""
    try:
        return safe_text(str(error)) or ""
    except Exception:
        return f"<{type(error).__name__} whose str() raised>"


class Unstorable:
    """Why a job's outcome could not be stored: the row becomes a FAILURE with this text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def encode_result(job: Job[Any]) -> tuple[bytes | None, str | None] | Unstorable:
    """Return (pickle, text) for a job's value (its result, or the error of a RETRY).

    Never raises.  A value that cannot be pickled is stored as its ``repr``
    text; if the ``repr`` raises too, or pickling hit the recursion limit
    (which also makes the ``repr`` unreliable), the outcome is
    :class:`Unstorable`: the caller stores a FAILURE with that text.
    """
    value = job.result
    if value is None:
        return None, None
    what = "exception" if isinstance(value, BaseException) else "result"
    try:
        return pickle.dumps(value, _PROTOCOL), None
    except Exception as error:
        cause = f"{type(error).__name__}: {_message(error)}"
        if not isinstance(error, RecursionError):
            try:
                text = safe_text(repr(value))
            except Exception as repr_error:
                cause += f"; its repr raised {type(repr_error).__name__}: {_message(repr_error)}"
            else:
                logger.warning(
                    "job %s (%s): its %s cannot be pickled (%s); other processes see its repr",
                    job.id,
                    job.name,
                    what,
                    cause,
                )
                return None, text
    text = (
        f"taskrun could not store the {what} of job {job.id} ({job.name}): its "
        f"{type(value).__name__} cannot be pickled ({cause}); return plain data "
        "(numbers, strings, lists, dicts) from the task"
    )
    logger.error("job %s (%s): %s; stored as FAILURE", job.id, job.name, text)
    return Unstorable(text)


def decode_result(blob: bytes | None, text: str | None) -> Any:
    """Return the stored value: the unpickled object, else its repr text."""
    if blob is None:
        return text
    try:
        return pickle.loads(blob)
    except Exception as error:
        return f"<result that cannot be loaded here: {type(error).__name__}: {_message(error)}>"


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

    Never raises for what a row holds: arguments that cannot be unpickled
    here leave ``args`` empty, a result that cannot be loaded becomes a text
    saying why.  A RETRY job's ``result`` is the error it retries after.

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
    runs.meta = decode_meta(row[12])
    runs.expires = row[13]
    runs.unique_key = row[14]
    runs.blocked = row[15]
    if job.state in FINISHED:
        runs.finished = finished
        runs.value = decode_result(row[9], row[10])
    elif job.state is JobState.RETRY:
        runs.value = decode_result(row[9], row[10])  # the error it retries after
    return job


def encode_meta(job: Job[Any]) -> str | None:
    """Return ``job.meta`` as JSON (its values were checked by ``Job.update``), or ``None``.

    ``None`` when the job reported no meta (only its ``blocked_for`` changed).
    """
    runs = job._runs
    if runs is None or runs.meta is None:
        return None
    return json.dumps(runs.meta, default=repr)


def decode_meta(text: str | None) -> dict[str, Any] | None:
    """Return the meta stored as JSON, or ``None``."""
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def refresh_from_row(job: Job[Any], row: tuple[Any, ...]) -> None:
    """Copy a newer row's state, attempts, times and outcome onto ``job``."""
    job.state = JobState(row[2])
    job.due = row[8] or 0.0
    runs = job._run_record()
    runs.attempts = row[4]
    runs.started = row[6]
    runs.traceback = row[11]
    runs.meta = decode_meta(row[12])
    runs.blocked = row[15]
    if job.state in FINISHED:
        job._finish(job.state, decode_result(row[9], row[10]), row[7])
    elif job.state is JobState.RETRY:
        runs.value = decode_result(row[9], row[10])
    else:
        runs.value = None
