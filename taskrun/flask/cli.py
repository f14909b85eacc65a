"""``flask taskrun ...``: look at and act on an app's jobs from a shell.

Registered on the app by ``init_app``.  Commands: ``jobs``, ``show``,
``cancel``, ``retry``, ``enqueue``, ``periodic``, ``pause``, ``resume``,
``trigger``, ``stats``, ``purge``.  Each prints a table (``--json`` for
scripts) and exits 1 with a message for an unknown job id, task or
periodic job.

The command's process runs no job: it opens the shared store only to read
and write rows (:func:`open_store`), and the serving processes (``taskrun
serve``, gunicorn) take the jobs it submits within about a heartbeat.  So
every command needs the app's store to be a shared SQLite file
(``TASKRUN_STORE``); with the memory store a command says so and exits 1.

Example::

    $ flask --app shop taskrun jobs --state FAILURE --limit 5
    $ flask --app shop taskrun retry 3f2a...
    $ flask --app shop taskrun enqueue shop.tasks.send_welcome --args '[42]'
    $ flask --app shop taskrun purge --state SUCCESS --older-than 7d
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from taskrun.errors import TaskrunError
from taskrun.jobs import FINISHED, Job, JobState
from taskrun.machine import leader_pid, machine_stats
from taskrun.periodic.policy import PeriodicEntry, first_slot

from .cli_format import emit, job_data, json_option, parse_duration, table, vars_of
from .dashboard.words import schedule_words, timestamp, zone_of

if TYPE_CHECKING:
    from taskrun.runner import TaskRunner
    from taskrun.stores.sqlite.client import StoreClient

__all__ = ["open_store", "taskrun_command"]


taskrun_command = AppGroup("taskrun", help="Look at and act on taskrun's jobs (shared store).")


def _runner() -> TaskRunner:
    runner: TaskRunner = current_app.extensions["taskrun"]
    return runner


def open_store(runner: TaskRunner) -> StoreClient:
    """Open the runner's shared store for submitting and looking up, running no job here.

    The one place the commands open the store: it takes the SQLite file of
    the runner's ``store`` and opens it without registering a process or
    starting workers (jobs it submits are unowned rows for the serving
    processes).

    :raises click.ClickException: if the store is not a shared SQLite file.
    """
    from taskrun.stores.sqlite.client import StoreClient
    from taskrun.stores.sqlite.store import SqliteStore

    store = runner.store
    if not isinstance(store, SqliteStore):
        raise click.ClickException(
            f"this command needs a shared store, and the app's store is {store!r}: jobs in "
            "memory live only inside each serving process; set TASKRUN_STORE = "
            "'sqlite:////path/to/taskrun.db' so the serving processes and this command share it"
        )
    try:
        return StoreClient(store.path, dict(runner.tasks))
    except TaskrunError as error:
        raise click.ClickException(str(error)) from error


def _lookup(client: StoreClient, job_id: str) -> Job[Any]:
    job = client.get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id!r} in the store (unknown, or aged out)")
    return job


def _entry(runner: TaskRunner, name: str) -> PeriodicEntry:
    entry = next((e for e in runner.periodic_entries if e.task.name == name), None)
    if entry is None:
        known = sorted(e.task.name for e in runner.periodic_entries)
        raise click.ClickException(f"no periodic job named {name!r}; known: {known!r}")
    return entry


@taskrun_command.command("jobs")
@click.option("--state", type=click.Choice([s.value for s in JobState], case_sensitive=False))
@click.option("--task", help="Only jobs of this task.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
def jobs_command(state: str | None, task: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    with open_store(_runner()) as client:
        page = client.list_jobs(state=state.upper() if state else None, task=task, limit=limit)
    rows = [
        (j.id, j.task, j.state, j.attempts, timestamp(j.enqueued), timestamp(j.finished))
        for j in page.jobs
    ]
    headers = ("ID", "TASK", "STATE", "ATTEMPTS", "ENQUEUED", "FINISHED")
    emit([vars_of(j) for j in page.jobs], as_json, lambda: table(headers, rows))


@taskrun_command.command("show")
@click.argument("job_id")
@json_option
def show_command(job_id: str, as_json: bool) -> None:
    """Show one job: state, arguments, times, result or traceback."""
    with open_store(_runner()) as client:
        data = job_data(_lookup(client, job_id))

    def human() -> str:
        keys = [k for k in data if k != "traceback" and data[k] is not None]
        text = table(("FIELD", "VALUE"), [(k, _shown(k, data[k])) for k in keys])
        return text + (f"\n\n{data['traceback']}" if data["traceback"] else "")

    emit(data, as_json, human)


def _shown(key: str, value: Any) -> str:
    return timestamp(value) if key in ("enqueued", "started", "finished", "due") else str(value)


@taskrun_command.command("cancel")
@click.argument("job_id")
def cancel_command(job_id: str) -> None:
    """Cancel a job that has not finished (its process stops it within a heartbeat)."""
    with open_store(_runner()) as client:
        job = _lookup(client, job_id)
        if job.ready():
            click.echo(f"job {job_id} already finished: {job.state.value}")
            return
        job.cancel()
        click.echo(f"job {job_id}: {'cancelled' if job.ready() else 'cancel requested'}")


@taskrun_command.command("retry")
@click.argument("job_id")
def retry_command(job_id: str) -> None:
    """Enqueue a new job of a failed or cancelled job's task, with the same arguments."""
    runner = _runner()
    with open_store(runner) as client:
        job = _lookup(client, job_id)
        if job.state not in (JobState.FAILURE, JobState.CANCELLED):
            raise click.ClickException(
                f"job {job_id} is {job.state.value}; only failed or cancelled jobs are retried"
            )
        if job.name not in runner.tasks:
            raise click.ClickException(f"task {job.name!r} is not registered in this app")
        new_id = client.submit(job.name, job.args, job.kwargs)
    click.echo(new_id)


@taskrun_command.command("enqueue")
@click.argument("task")
@click.option("--args", "args_json", default="[]", help="Positional arguments, a JSON list.")
@click.option("--kwargs", "kwargs_json", default="{}", help="Keyword arguments, a JSON object.")
@click.option("--countdown", type=click.FloatRange(min=0), default=0.0, help="Seconds from now.")
def enqueue_command(task: str, args_json: str, kwargs_json: str, countdown: float) -> None:
    """Enqueue a job of TASK for the serving processes; print its id."""
    runner = _runner()
    if task not in runner.tasks:
        raise click.ClickException(
            f"no task named {task!r} in this app; known: {sorted(runner.tasks)!r}"
        )
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}") from error
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise click.BadParameter("--args takes a JSON list and --kwargs a JSON object")
    with open_store(runner) as client:
        click.echo(client.submit(task, tuple(args), kwargs or None, countdown))


@taskrun_command.command("periodic")
@json_option
def periodic_command(as_json: bool) -> None:
    """List the periodic jobs: schedule, zone, last and next run, paused, leader."""
    runner = _runner()
    now = time.time()
    with open_store(runner) as client:
        state, procs = client.periodic_state(), client.processes()
    leader = leader_pid(state, procs, False)
    data: list[dict[str, Any]] = []
    for entry in runner.periodic_entries:
        name = entry.task.name
        kept = state.get(name)
        data.append(
            {
                "name": name,
                "schedule": entry.schedule.describe(),
                "words": schedule_words(entry.schedule),
                "zone": zone_of(entry.schedule),
                "last_run": kept.last_slot if kept else None,
                "next_run": first_slot(entry.schedule, now),
                "paused": bool(kept and kept.paused),
                "leader_pid": leader,
            }
        )
    headers = ("NAME", "SCHEDULE", "ZONE", "LAST RUN", "NEXT RUN", "PAUSED")
    rows = [
        (
            d["name"],
            d["words"],
            d["zone"],
            timestamp(d["last_run"]),
            timestamp(d["next_run"]),
            "yes" if d["paused"] else "no",
        )
        for d in data
    ]
    emit(data, as_json, lambda: table(headers, rows) + f"\nleader: pid {leader or 'unknown'}")


def _pause(name: str, paused: bool) -> None:
    runner = _runner()
    _entry(runner, name)
    with open_store(runner) as client:
        client.set_paused(name, paused)
    click.echo(f"periodic job {name}: {'paused' if paused else 'resumed'}")


@taskrun_command.command("pause")
@click.argument("name")
def pause_command(name: str) -> None:
    """Pause periodic job NAME: the leading process skips its runs until resumed."""
    _pause(name, True)


@taskrun_command.command("resume")
@click.argument("name")
def resume_command(name: str) -> None:
    """Resume periodic job NAME."""
    _pause(name, False)


@taskrun_command.command("trigger")
@click.argument("name")
def trigger_command(name: str) -> None:
    """Run periodic job NAME once now, outside its schedule; print the job id."""
    runner = _runner()
    entry = _entry(runner, name)
    with open_store(runner) as client:
        click.echo(client.submit(name, entry.job_args(time.time()), None))


@taskrun_command.command("stats")
@json_option
def stats_command(as_json: bool) -> None:
    """Show jobs per state, the processes sharing the store and their work, the leader."""
    with open_store(_runner()) as client:
        stats = machine_stats({}, client, False, time.time())

    def human() -> str:
        states = table(("STATE", "JOBS"), list(stats["states"].items()))
        procs = table(
            ("PID", "HOST", "HEARTBEAT", "RUNNING", "BACKLOG", "SCHEDULED"),
            [
                (
                    p["pid"],
                    p["host"],
                    f"{p['heartbeat_age']:.1f} s ago",
                    p["running"],
                    p["backlog"],
                    p["scheduled"],
                )
                for p in stats["processes"]
            ],
        )
        return f"{states}\n\n{procs}\n\nleader: pid {stats['leader'] or 'unknown'}"

    emit(stats, as_json, human)


@taskrun_command.command("purge")
@click.option("--state", required=True, type=click.Choice(sorted(s.value for s in FINISHED)))
@click.option("--older-than", "older_than", required=True, help="e.g. 7d, 12h, 30m, 90s.")
def purge_command(state: str, older_than: str) -> None:
    """Delete finished jobs in STATE accepted longer ago than the duration."""
    cutoff = time.time() - parse_duration(older_than)
    with open_store(_runner()) as client:
        click.echo(f"deleted {client.purge(state, cutoff)} {state} job(s)")
