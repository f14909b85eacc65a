"""Jobs: the handle a caller keeps for one run of a task, and its states.

A *task* is the function; a *job* is one run of it.  A :class:`Job` is
created by ``Task.delay``/``apply_async``, moves through the
:class:`JobState` values, and can be waited on with :meth:`Job.get` from
any greenlet of the process that owns it.
"""

from __future__ import annotations

import binascii
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from gevent._hub_local import get_hub_if_exists
from gevent.event import Event

from taskrun.errors import JobCancelled, JobLost, JobNotFinished, WaitTimeout
from taskrun.meta import MetaSink, check_meta
from taskrun.options import TaskOptions
from taskrun.validation import seconds

R = TypeVar("R")


class JobState(StrEnum):
    """Where a job is in its life; the names match Celery's."""

    PENDING = "PENDING"  # accepted, waiting for a free slot in the pool
    SCHEDULED = "SCHEDULED"  # waiting for its eta
    STARTED = "STARTED"  # running now
    RETRY = "RETRY"  # failed, waiting to run again
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.CANCELLED})

# Ids are made 256 at a time from one os.urandom() call: the system call is
# most of the cost of an id, and an id is most of the cost of ``delay()``.
# ``list.pop`` is atomic, so threads never share an id; a forked child drops
# the ids it inherited, so two processes never share one either.
_ID_BATCH = 256
_B64_URLSAFE = bytes.maketrans(b"+/", b"-_")
_spare_ids: list[str] = []
os.register_at_fork(after_in_child=_spare_ids.clear)


def _make_ids() -> None:
    raw = os.urandom(16 * _ID_BATCH)
    ids = [
        binascii.b2a_base64(raw[i : i + 16], newline=False)[:22]
        .translate(_B64_URLSAFE)
        .decode("ascii")
        for i in range(0, len(raw), 16)
    ]
    # No id starts with "-", which a command line (``flask taskrun show ID``) would
    # read as an option: the leading run of "-" moves to the end instead.  No
    # other id ends with "-" (the 22nd character holds the last 2 bits: A, Q, g
    # or w), so ids stay distinct and keep their 128 random bits.
    _spare_ids.extend(_without_leading_dash(id_) if id_[0] == "-" else id_ for id_ in ids)


def _without_leading_dash(id_: str) -> str:
    rest = id_.lstrip("-")
    return rest + "-" * (len(id_) - len(rest))


def new_job_id() -> str:
    """Return a fresh, unguessable job id: 128 random bits as 22 URL-safe characters.

    The first character is never ``-``, so an id can be given on a command line.
    """
    try:
        return _spare_ids.pop()
    except IndexError:
        _make_ids()
        return _spare_ids.pop()


class TaskLike(Protocol):
    """What a job needs to know about its task."""

    @property
    def name(self) -> str:
        """The task's registered name."""
        ...

    @property
    def options(self) -> TaskOptions:
        """How jobs of the task run, retry and time out."""
        ...

    @property
    def fn(self) -> Callable[..., Any]:
        """The function a job calls."""
        ...


class JobControl(Protocol):
    """What a job needs from the runner that owns it."""

    def cancel_job(self, job: Job[Any]) -> bool:
        """Cancel ``job``; return whether it was still unfinished."""
        ...


def _as_datetime(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


class _Runs:
    """What a job's runs produced: made when it first starts, fails, finishes or is waited on.

    Kept apart from :class:`Job` so that the many jobs that only wait (queued
    or scheduled) stay small: at most ``max_scheduled`` of them may exist.
    """

    __slots__ = (
        "attempts",
        "started",
        "finished",
        "value",
        "traceback",
        "done",
        "thread_done",
        "poll",
        "control",
        "due_at",
        "blocked",
        "meta",
        "sink",
        "unique_key",
        "expires",
    )

    def __init__(self) -> None:
        self.attempts = 0
        self.started: float | None = None
        self.finished: float | None = None
        self.value: Any = None
        self.traceback: str | None = None
        self.done: Event | None = None
        #: Set when the job finishes, for waiters on threads without a hub (see Job.get).
        self.thread_done: threading.Event | None = None
        #: Set on a job owned by another process: waits by polling a shared store.
        self.poll: Callable[[Job[Any], float | None], None] | None = None
        #: Who cancels the job when that is not its task's runner (e.g. a shared store).
        self.control: JobControl | None = None
        #: When the timer found it due (POSIX seconds); ``None`` for a job due when accepted.
        self.due_at: float | None = None
        #: Seconds its runs held the event loop, as the loop monitor saw (``None``: never).
        self.blocked: float | None = None
        #: What the job's body reported with update(); ``None`` until then.
        self.meta: dict[str, Any] | None = None
        #: Told about each update(): set by the pool while the job runs.
        self.sink: MetaSink | None = None
        #: At most one unfinished job of the task has this key (``apply_async(unique_key=)``).
        self.unique_key: str | None = None
        #: A job not started by this POSIX time never runs (``apply_async(expires=)``).
        self.expires: float | None = None


class Job(Generic[R]):
    """One run of a task: its id, state, and (once finished) its outcome.

    Callers get a ``Job`` from ``delay``/``apply_async`` or ``runner.job(id)``.
    Waiting (:meth:`get`) blocks only the calling greenlet.  Fields are
    written by the runner; treat them as read-only.

    :param control: who cancels the job: ``None`` (or the task's ``runner``)
        for the task's runner, else e.g. the shared store that holds a job
        of another process.
    """

    # Only what a waiting job needs lives in the job itself; everything its
    # runs produce is in ``_runs`` (see _Runs): read through the properties
    # below, written through ``_run_record()`` and the methods at the end.  A
    # job is controlled by its task's runner, so that needs no slot either.
    __slots__ = ("id", "task", "args", "kwargs", "state", "_enqueued", "due", "_runs")

    def __init__(
        self,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        control: JobControl | None,
        *,
        job_id: str | None = None,
        state: JobState = JobState.PENDING,
        enqueued: float = 0.0,
    ) -> None:
        #: The job's id: 128 random bits, URL-safe; give it to the client to look the job up.
        self.id: str = job_id or new_job_id()
        #: The task this job runs (a :class:`~taskrun.Task`; its ``name`` is the task's name).
        self.task = task
        #: The positional arguments the job runs with.
        self.args = args
        #: The keyword arguments the job runs with (``None`` for none).
        self.kwargs = kwargs
        #: Where the job is in its life: a :class:`~taskrun.JobState`.
        self.state: JobState = state
        self._enqueued = enqueued
        #: When a scheduled or retrying job is due (POSIX seconds), else 0.
        self.due = 0.0
        self._runs: _Runs | None = None
        if control is not None and control is not getattr(task, "runner", None):
            self._run_record().control = control

    @property
    def attempts(self) -> int:
        """How many times the job has started (1 on the first run)."""
        return 0 if self._runs is None else self._runs.attempts

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of the last failure, or ``None``."""
        return None if self._runs is None else self._runs.traceback

    # Jobs are ordered by due time so the scheduler's heap can hold them.
    def __lt__(self, other: Job[Any]) -> bool:
        return self.due < other.due

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.state.value}>"

    @property
    def name(self) -> str:
        """The task's name."""
        return self.task.name

    @property
    def enqueued_at(self) -> datetime | None:
        """When the job was accepted (aware UTC)."""
        return _as_datetime(self._enqueued)

    @property
    def started_at(self) -> datetime | None:
        """When the latest attempt started (aware UTC), or ``None``."""
        return None if self._runs is None else _as_datetime(self._runs.started)

    @property
    def finished_at(self) -> datetime | None:
        """When the job finished (aware UTC), or ``None``."""
        return None if self._runs is None else _as_datetime(self._runs.finished)

    @property
    def eta(self) -> datetime | None:
        """When a scheduled or retrying job is due to run (aware UTC), or ``None``."""
        return _as_datetime(self.due) if self.due else None

    @property
    def wait_time(self) -> float | None:
        """Seconds the latest attempt waited for a worker, from when it was due; ``None`` before.

        Due means accepted by ``delay()``, or its eta or retry time came.
        """
        runs = self._runs
        if runs is None or runs.started is None:
            return None
        return max(runs.started - (runs.due_at or self._enqueued), 0.0)

    @property
    def run_time(self) -> float | None:
        """Seconds the finished job's last attempt ran, or ``None`` if it is not finished."""
        runs = self._runs
        if runs is None or runs.started is None or runs.finished is None:
            return None
        return max(runs.finished - runs.started, 0.0)

    @property
    def blocked_for(self) -> float | None:
        """Seconds the job's runs blocked the event loop, if the loop monitor saw it, else ``None``.

        Measured only while the blocking warning is on (``blocking_warning=``),
        in the process that ran the job.
        """
        return None if self._runs is None else self._runs.blocked

    @property
    def result(self) -> Any:
        """The return value on SUCCESS, the exception on FAILURE, else ``None``.

        ``None`` on SUCCESS too for a task declared with ``ignore_result=True``;
        the :class:`~taskrun.errors.JobCancelled` that :meth:`get` raises for
        a job that expired before it started.
        """
        return None if self._runs is None else self._runs.value

    @property
    def meta(self) -> dict[str, Any]:
        """What the job's body reported with :meth:`update`, merged (a copy; ``{}`` if nothing).

        Seen from any process with a shared store (within about 0.25 s of the update).
        """
        runs = self._runs
        return {} if runs is None or runs.meta is None else dict(runs.meta)

    @property
    def unique_key(self) -> str | None:
        """The ``unique_key`` the job was submitted with, or ``None``."""
        return None if self._runs is None else self._runs.unique_key

    @property
    def expires_at(self) -> datetime | None:
        """When the job expires if it has not started by then (aware UTC), or ``None``."""
        return None if self._runs is None else _as_datetime(self._runs.expires)

    def update(self, **meta: Any) -> None:
        """Merge ``meta`` into :attr:`meta`, e.g. progress: ``job.update(current=3, total=4)``.

        Call it from the job's own body (see :func:`~taskrun.current.current_job`)
        as often as needed: a shared store writes the latest meta at most every
        0.25 s, however many updates came in between, and every process then
        sees it.  Called on a job this process does not run, it changes only
        this object.

        :raises NotSerializable: (a ``TypeError``) naming the key and the type of
            a value that is not JSON-serialisable.
        """
        check_meta(self.id, self.name, meta)
        runs = self._run_record()
        if runs.meta is None:
            runs.meta = meta
        else:
            runs.meta.update(meta)
        if runs.sink is not None:
            runs.sink.save_meta(self)

    def retry(self) -> Job[R]:
        """Submit a new job of the same task with the same arguments; for a failed or cancelled job.

        Works on a job looked up from another process through a shared store,
        given this process registers its task.

        :returns: the new job.
        :raises JobNotFinished: if this job has not failed or been cancelled.
        :raises JobLost: if this process does not register the job's task.
        """
        if self.state not in (JobState.FAILURE, JobState.CANCELLED):
            raise JobNotFinished(
                f"job {self.id} ({self.name}) is {self.state.value}: only a FAILURE or "
                "CANCELLED job can be retried; wait for it with job.get(), or cancel() it first"
            )
        submit = getattr(getattr(self.task, "runner", None), "submit", None)
        if submit is None:
            raise JobLost(
                f"cannot retry job {self.id}: task {self.name!r} is not registered in this "
                "process; declare it with @runner.task(name=...) under the same name"
            )
        return submit(self.task, self.args, self.kwargs)  # type: ignore[no-any-return]

    def ready(self) -> bool:
        """Return whether the job has finished (succeeded, failed or was cancelled)."""
        return self.state in FINISHED

    def successful(self) -> bool:
        """Return whether the job finished with SUCCESS."""
        return self.state is JobState.SUCCESS

    def failed(self) -> bool:
        """Return whether the job finished with FAILURE."""
        return self.state is JobState.FAILURE

    def get(self, timeout: float | timedelta | None = None) -> R:
        """Wait for the job to finish and return its value.

        Blocks the calling greenlet only; on a thread with no gevent hub
        (a request thread of ``flask run``, while the runner lives on its own
        thread) it blocks that thread, on a :class:`threading.Event`.

        :param timeout: seconds (or a ``timedelta``) to wait; ``None`` waits
            as long as it takes.
        :returns: the task's return value.
        :raises WaitTimeout: (a ``TimeoutError``) if the job is not finished in time.
        :raises JobCancelled: if the job was cancelled.
        :raises Exception: the task's own exception, type and args intact, if it failed.
        :raises ConfigError: for a negative or non-numeric ``timeout``.
        """
        if timeout is not None:
            timeout = seconds("timeout", timeout)
        if not self.ready():
            runs = self._run_record()
            if runs.poll is not None:
                runs.poll(self, timeout)  # owned by another process: poll the shared store
            elif get_hub_if_exists() is None:
                _wait_in_thread(self, runs, timeout)
            else:
                if runs.done is None:
                    runs.done = Event()
                runs.done.wait(timeout)
            if not self.ready():
                raise WaitTimeout(
                    f"job {self.id} ({self.name}) did not finish within {timeout!r} s "
                    f"(state {self.state.value}); wait longer or poll job.ready()"
                )
        value = self.result
        if self.state is JobState.SUCCESS:
            return value  # type: ignore[no-any-return]
        if self.state is JobState.FAILURE:
            if isinstance(value, BaseException):
                raise value
            raise JobLost(f"job {self.id} ({self.name}) failed: {value!r}")
        if isinstance(value, JobCancelled):
            raise value  # it expired
        raise JobCancelled(f"job {self.id} ({self.name}) was cancelled")

    def cancel(self) -> bool:
        """Cancel the job: a pending or scheduled job never runs, a running one is stopped.

        A running greenlet job is killed, and ``cancel()`` waits a moment
        (at most :data:`~taskrun.dispatcher.CANCEL_WAIT` seconds) for it to
        end; a running thread job cannot be killed, so it is CANCELLED at
        once and its thread's result is discarded when it returns.

        :returns: ``True`` if the job was unfinished and is now CANCELLED;
            ``False`` if it had finished, or if it is running and would not
            end (it catches the cancel and goes on: it may still finish).
        """
        if self.ready():
            return False
        control = self._runs.control if self._runs is not None else None
        if control is None:
            control = getattr(self.task, "runner", None)
        return control is not None and bool(control.cancel_job(self))

    # -- written by the runner and the stores ------------------------------

    def _run_record(self) -> _Runs:
        """The record of the job's runs, made on first use; its writers set its fields."""
        runs = self._runs
        if runs is None:
            runs = self._runs = _Runs()
        return runs

    def _mark_started(self, now: float, sink: MetaSink) -> None:
        """Record that an attempt starts at ``now``: STARTED, one attempt more.

        :param sink: told about each :meth:`update` from now on (the store).
        """
        self.state = JobState.STARTED
        runs = self._run_record()
        runs.attempts += 1
        runs.started = now
        runs.sink = sink

    def _finish(self, state: JobState, value: Any, now: float) -> None:
        """Record the outcome and wake every waiter."""
        self.state = state
        runs = self._run_record()
        runs.value = value
        runs.finished = now
        if runs.done is not None:
            runs.done.set()
        if runs.thread_done is not None:
            runs.thread_done.set()


_thread_wait_lock = threading.Lock()


def _wait_in_thread(job: Job[Any], runs: _Runs, timeout: float | None) -> None:
    """Wait on a thread without a hub for ``job``, finished by the runner's own thread."""
    with _thread_wait_lock:
        if runs.thread_done is None:
            runs.thread_done = threading.Event()
    # The runner sets the state before it looks for thread_done: checked after
    # publishing the event, a finish cannot slip between the check and the wait.
    if not job.ready():
        runs.thread_done.wait(timeout)
