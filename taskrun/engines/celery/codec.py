"""A job as JSON, the form it takes in Redis and in Celery's messages; pure.

Celery carries JSON only (pickle would let anyone who can write to Redis
run code on every worker), so a job's arguments, its result and the
arguments of the exception it failed with must be JSON values: JSON as
Celery's own serializer writes it (:mod:`kombu.utils.json`), plain values
plus datetimes, dates, UUIDs and decimals, which come back as themselves (a
periodic job's ``pass_slot`` datetime among them).  Arguments are checked
at ``delay()`` (:func:`check_arguments`), naming the one that is not; a
result that is not JSON fails the job with
:class:`~taskrun.errors.NotSerializable`.  An exception crosses as its
class's import path and its args, and is rebuilt on the reading side
(:func:`decode_error`), type and args intact when the class can be
imported and called with them.
"""

from __future__ import annotations

import base64
import importlib
import uuid
from typing import Any

from kombu.utils import json as kombu_json

from taskrun.errors import JobLost, NotSerializable
from taskrun.jobs import Job, JobState

__all__ = [
    "apply_record",
    "check_arguments",
    "decode_error",
    "encode_error",
    "envelope_of",
    "from_json",
    "record_of",
    "to_json",
]


def to_json(value: Any) -> str:
    """Return ``value`` as Celery's JSON; raise ``TypeError`` for what it cannot encode."""
    return str(kombu_json.dumps(value))  # type: ignore[no-untyped-call]


def from_json(text: str | bytes) -> Any:
    """Return the value :func:`to_json` wrote (datetimes and the like rebuilt)."""
    return kombu_json.loads(text)  # type: ignore[no-untyped-call]


def _is_json(value: Any) -> bool:
    try:
        to_json(value)
    except (TypeError, ValueError):
        return False
    return True


def check_arguments(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any]]:
    """Return ``args`` and ``kwargs`` as JSON-ready values, or say which one is not.

    :raises NotSerializable: (a ``TypeError``) naming the task, the argument
        (position or keyword) and its type.
    """
    plain_kwargs = kwargs or {}
    if _is_json([list(args), plain_kwargs]):
        return list(args), plain_kwargs
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in plain_kwargs.items()]
    for where, value in named:
        if not _is_json(value):
            raise NotSerializable(
                f"cannot send a job of {task_name} to Celery: its {where} is a "
                f"{type(value).__name__} ({value!r:.80}), which is not JSON; with a broker, "
                "arguments must be JSON values (str, int, float, bool, None, lists and dicts "
                "of them; datetimes, UUIDs and decimals too): pass an id and load the object "
                "in the task"
            )
    raise NotSerializable(
        f"cannot send a job of {task_name} to Celery: its arguments are not JSON "
        "(a dict key that is not a string?); pass JSON values only"
    )


def envelope_of(headers: dict[str, Any], properties: dict[str, Any], body: Any, queue: str) -> str:
    """Return a Celery message as kombu's Redis transport keeps it in a queue's list.

    The body is Celery's JSON, base64-encoded; the message goes to ``queue``
    through the default exchange, as ``send_task(queue=...)`` sends it.
    """
    data = to_json(body).encode("utf-8")
    return to_json(
        {
            "body": base64.b64encode(data).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def encode_error(error: BaseException) -> dict[str, Any]:
    """Return ``error`` as JSON: its class's import path, its args (``repr`` if not JSON)."""
    kind = type(error)
    args = list(error.args) if _is_json(list(error.args)) else [repr(arg) for arg in error.args]
    return {"type": f"{kind.__module__}:{kind.__qualname__}", "args": args, "text": str(error)}


def decode_error(plain: dict[str, Any]) -> BaseException:
    """Rebuild an exception from :func:`encode_error`'s form.

    :returns: the same class with the same args when it can be imported and
        built from them; else a :class:`~taskrun.errors.JobLost` naming the
        class and its message.
    """
    module_name, _, qualname = str(plain.get("type", "")).partition(":")
    args = plain.get("args") or []
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found(*args)
    except Exception:  # any failure to rebuild falls back to the text below
        pass
    return JobLost(f"the job failed with {plain.get('type')}: {plain.get('text')}")


def record_of(job: Job[Any]) -> dict[str, Any]:
    """Return what Redis keeps of ``job``: state, times, attempts, outcome, meta, blocked time.

    :raises NotSerializable: if the job succeeded with a value that is not JSON.
    """
    runs = job._runs
    record: dict[str, Any] = {
        "id": job.id,
        "task": job.name,
        "state": job.state.value,
        "args": list(job.args),
        "kwargs": job.kwargs or {},
        "enqueued": job.enqueued_at.timestamp() if job.enqueued_at else 0.0,
        "due": job.due,
    }
    if runs is not None:
        record.update(
            attempts=runs.attempts,
            started=runs.started,
            finished=runs.finished,
            traceback=runs.traceback,
            meta=runs.meta,
            expires=runs.expires,
            blocked=runs.blocked,
        )
        value = runs.value
        if isinstance(value, BaseException):
            record["error"] = encode_error(value)
        elif job.state is JobState.SUCCESS:
            if not _is_json(value):
                raise NotSerializable(
                    f"job {job.id} ({job.name}) returned a {type(value).__name__}, which is "
                    "not JSON; with a broker, results must be JSON values: return an id or "
                    "a dict of plain values, or declare the task with ignore_result=True"
                )
            record["result"] = value
    return record


def apply_record(job: Job[Any], record: dict[str, Any]) -> None:
    """Make ``job`` show what ``record`` says (a snapshot read from Redis)."""
    job.state = JobState(record["state"])
    job.due = float(record.get("due") or 0.0)
    runs = job._run_record()
    runs.attempts = int(record.get("attempts") or 0)
    runs.started = record.get("started")
    runs.finished = record.get("finished")
    runs.traceback = record.get("traceback")
    runs.meta = record.get("meta")
    runs.expires = record.get("expires")
    runs.blocked = record.get("blocked")
    error = record.get("error")
    runs.value = decode_error(error) if error is not None else record.get("result")
    if job.ready():
        if runs.done is not None:
            runs.done.set()
        if runs.thread_done is not None:
            runs.thread_done.set()
