"""How ``flask taskrun`` prints: tables for people, JSON for scripts; and durations it reads.

Pure helpers of :mod:`taskrun.flask.cli`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from taskrun.jobs import Job

from .dashboard.words import short_repr

__all__ = ["emit", "job_data", "json_option", "parse_duration", "table", "vars_of"]

F = TypeVar("F", bound=Callable[..., Any])


def parse_duration(text: str) -> float:
    """Return seconds from ``90``, ``90s``, ``30m``, ``12h`` or ``7d``.

    :raises click.BadParameter: for anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration; use e.g. 90s, 30m, 12h or 7d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return float(match[1]) * unit


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(data: Any, as_json: bool, human: Callable[[], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human())


def job_data(job: Job[Any]) -> dict[str, Any]:
    runs = job._runs
    return {
        "id": job.id,
        "task": job.name,
        "state": job.state.value,
        "args": short_repr(job.args),
        "kwargs": short_repr(job.kwargs or {}),
        "attempts": job.attempts,
        "enqueued": job._enqueued,
        "started": runs.started if runs else None,
        "finished": runs.finished if runs else None,
        "due": job.due or None,
        "result": short_repr(job.result) if job.result is not None else None,
        "traceback": job.traceback,
        "meta": getattr(job, "meta", None),
    }


def vars_of(obj: Any) -> dict[str, Any]:
    """Return a slotted dataclass's fields as a dict."""
    return {name: getattr(obj, name) for name in obj.__slots__}
