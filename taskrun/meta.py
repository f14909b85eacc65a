"""What a running job reports with ``Job.update``: the check of its values, and where it goes."""

from __future__ import annotations

import json
from typing import Any, Protocol

from taskrun.errors import NotSerializable

__all__ = ["MetaSink", "check_meta"]


class MetaSink(Protocol):
    """Where what a running job reports goes: the store that holds the job."""

    def save_meta(self, job: Any) -> None:
        """Record ``job.meta`` and ``job.blocked_for`` (a durable store coalesces calls)."""
        ...


_PLAIN = (str, int, float, bool, type(None))


def check_meta(job_id: str, task_name: str, meta: dict[str, Any]) -> None:
    """Check that every value of ``meta`` is JSON-serialisable.

    :raises NotSerializable: (a ``TypeError``) naming the job, the key and the value's type.
    """
    for key, value in meta.items():
        if type(value) in _PLAIN:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise NotSerializable(
                f"job {job_id} ({task_name}): update({key}=...) got a value of type "
                f"{type(value).__name__} ({error}); meta must be JSON-serialisable: "
                "str, int, float, bool, None, or lists and dicts of them"
            ) from None
