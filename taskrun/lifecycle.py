"""Job lifecycle lines on the ``taskrun.jobs`` logger: follow one job by its id through the log.

Every line names the job id and the task::

    INFO taskrun.jobs: job 3fQ... (shop.send_welcome) accepted
    INFO taskrun.jobs: job 3fQ... (shop.send_welcome) started (attempt 1)
    INFO taskrun.jobs: job 3fQ... (shop.send_welcome) succeeded in 12 ms
    WARNING taskrun.jobs: job 3fQ... (shop.send_welcome) failed on attempt 1 (...); retrying in 2 s
    ERROR taskrun.jobs: job 3fQ... (shop.send_welcome) failed after 4 attempt(s)

Accepted, started and succeeded are INFO; silence them with
``logging.getLogger("taskrun.jobs").setLevel(logging.WARNING)`` and keep
retries and failures.  The logger is named for what it reports, not for
this module, so that one name covers every job line.  Callers check
:func:`info_enabled` once per job event: with INFO off a line costs one
cached level check.
"""

from __future__ import annotations

import logging
from typing import Any

from taskrun.jobs import Job

__all__ = ["JOB_LOGGER", "accepted", "failed", "info_enabled", "retrying", "started", "succeeded"]

#: The name of the logger every job lifecycle line goes to.
JOB_LOGGER = "taskrun.jobs"
logger = logging.getLogger(JOB_LOGGER)
_INFO = logging.INFO


def info_enabled() -> bool:
    """Return whether INFO lines of ``taskrun.jobs`` would be emitted (a cached check)."""
    return logger.isEnabledFor(_INFO)


def accepted(job: Job[Any]) -> None:
    """Log that ``job`` was accepted (due now, or at its eta)."""
    if job.due:
        due_in = job.due - job._enqueued
        logger.info("job %s (%s) accepted, due in %.2f s", job.id, job.name, due_in)
    else:
        logger.info("job %s (%s) accepted", job.id, job.name)


def started(job: Job[Any]) -> None:
    """Log that an attempt of ``job`` started."""
    logger.info("job %s (%s) started (attempt %d)", job.id, job.name, job.attempts)


def succeeded(job: Job[Any], seconds: float) -> None:
    """Log that ``job`` succeeded, its last attempt having taken ``seconds``."""
    logger.info("job %s (%s) succeeded in %.0f ms", job.id, job.name, seconds * 1000)


def retrying(job: Job[Any], error: BaseException, delay: float) -> None:
    """Log (WARNING) that an attempt of ``job`` failed with ``error``; it runs in ``delay`` s."""
    logger.warning(
        "job %s (%s) failed on attempt %d (%r); retrying in %.2f s",
        job.id,
        job.name,
        job.attempts,
        error,
        delay,
    )


def failed(job: Job[Any], error: BaseException) -> None:
    """Log (ERROR, with the traceback) that ``job`` failed for good."""
    logger.error(
        "job %s (%s) failed after %d attempt(s)", job.id, job.name, job.attempts, exc_info=error
    )
