"""What each dashboard page shows, gathered from the runner and its store's operator views.

One function per page; each returns plain data for its template and asks
the store bounded questions only (counts on an index, one page of a listing, one
job by id), so a page renders in milliseconds with 100,000 jobs kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskrun.errors import StoreError
from taskrun.jobs import FINISHED, Job, JobState
from taskrun.stores.base import JobPage, ProcessRecord, StoreQueries

from .charts import bar_chart, depth_series, finished_series, line_chart
from .words import schedule_words, zone_of

if TYPE_CHECKING:
    from taskrun.runner import TaskRunner

__all__ = ["job_page", "jobs_page", "overview_page", "periodic_page", "processes_page", "views_of"]

STATES = [state.value for state in JobState]
WAITING = ("PENDING", "SCHEDULED", "RETRY")
PAGE_SIZE = 50


def views_of(runner: TaskRunner) -> StoreQueries:
    """Return the runner's store as operator views.

    :raises StoreError: if the store answers no such questions.
    """
    store = runner.store
    if not isinstance(store, StoreQueries):
        raise StoreError(
            f"the runner's store {store!r} lists no jobs; use the memory or the SQLite store"
        )
    return store


def scope_of(store: StoreQueries) -> str:
    """Return ``"machine"`` for a shared store, else ``"process"``."""
    return "machine" if store.is_shared else "process"


def overview_page(runner: TaskRunner, now: float) -> dict[str, Any]:
    """Return jobs per state, backlog, running, failures and charts of the last hour."""
    store = views_of(runner)
    stats = runner.stats()
    counts: dict[str, int] = stats["states"]
    rows = store.minutes(now - 3600, now)
    finished = finished_series(rows, now)
    waiting = sum(counts.get(state, 0) for state in WAITING)
    depth = depth_series(rows, waiting, now)
    processes = stats.get("processes") or []
    return {
        "stats": stats,
        "counts": counts,
        "waiting": waiting,
        "backlog": sum(p["backlog"] for p in processes) if processes else stats["backlog"],
        "running": counts.get("STARTED", 0),
        "scheduled": counts.get("SCHEDULED", 0) + counts.get("RETRY", 0),
        "failed_hour": sum(finished.layers["FAILURE"]),
        "finished_hour": sum(sum(layer) for layer in finished.layers.values()),
        "finished_chart": bar_chart(finished, "Jobs finished per minute, last hour"),
        "depth_chart": line_chart(depth, "Waiting jobs, last hour"),
        "processes": len(processes) or 1,
        "leader": stats.get("leader"),
        "scope": stats["scope"],
    }


def jobs_page(
    runner: TaskRunner, state: str | None, task: str | None, search: str | None, cursor: str | None
) -> dict[str, Any]:
    """Return one page of jobs, newest first, with the filters that chose it."""
    store = views_of(runner)
    state = state if state in STATES else None
    search = (search or "").strip() or None
    page: JobPage = store.list_jobs(
        state=state, task=task or None, id_prefix=search, cursor=cursor, limit=PAGE_SIZE
    )
    return {
        "page": page,
        "state": state,
        "task": task or "",
        "search": search or "",
        "states": STATES,
        "tasks": sorted(runner.tasks),
        "scope": scope_of(store),
    }


@dataclass
class JobView:
    """A job as its page shows it."""

    job: Job[Any]
    owner_pid: int | None
    owner: str | None
    meta: Any
    progress: float | None
    durations: dict[str, float | None] = field(default_factory=dict)
    can_cancel: bool = False
    can_retry: bool = False


def job_page(runner: TaskRunner, job_id: str, now: float) -> JobView | None:
    """Return what the job page shows about ``job_id``, or ``None`` if it is not kept."""
    job = runner.job(job_id)
    if job is None:
        return None
    store = views_of(runner)
    owner = store.job_owner(job_id) if store.is_shared else None
    pid = next((p.pid for p in store.processes() if p.token == owner), None) if owner else None
    meta = getattr(job, "meta", None)
    runs = job._runs
    started = runs.started if runs else None
    finished = runs.finished if runs else None
    return JobView(
        job=job,
        owner_pid=pid,
        owner=owner,
        meta=meta,
        progress=_progress(meta),
        durations={
            "waited": (started or finished or now) - job._enqueued if job._enqueued else None,
            "ran": (finished or now) - started if started else None,
        },
        can_cancel=job.state not in FINISHED,
        can_retry=job.state in (JobState.FAILURE, JobState.CANCELLED),
    )


def _progress(meta: Any) -> float | None:
    if not isinstance(meta, dict):
        return None
    current, total = meta.get("current"), meta.get("total")
    if not isinstance(current, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * current / total))


def periodic_page(runner: TaskRunner) -> dict[str, Any]:
    """Return each periodic job: schedule in words and as written, zone, runs, skips, leader."""
    entries = {entry.task.name: entry for entry in runner.periodic_entries}
    rows = []
    for info in runner.periodic_jobs():
        entry = entries.get(info.name)
        rows.append(
            {
                "info": info,
                "words": schedule_words(entry.schedule) if entry else info.schedule,
                "zone": zone_of(entry.schedule) if entry else "—",
            }
        )
    store = views_of(runner)
    return {"rows": rows, "scope": scope_of(store)}


def processes_page(runner: TaskRunner) -> dict[str, Any]:
    """Return the live processes sharing the store and the jobs each runs.

    With a broker, ``broker`` holds what Redis tells (the queue, its length,
    the workers whose heartbeat it holds), else ``None``.
    """
    store = views_of(runner)
    procs: list[ProcessRecord] = store.processes()
    stats = runner.stats() if store.is_shared or runner.engine.is_remote else {}
    return {
        "processes": procs,
        "leader": stats.get("leader"),
        "scope": scope_of(store),
        "broker": stats.get("broker"),
    }
