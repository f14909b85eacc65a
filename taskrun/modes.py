"""Where a started runner answers from, when not from the caller's own hub.

:class:`ThreadedMode`: the process is not gevent-patched (``flask run``,
``app.run()``, waitress, gunicorn ``-k gthread``), so the runner's timer,
workers and store writer live on a :class:`~taskrun.hub_thread.HubThread`.
A request thread's ``delay()`` makes the job on its own thread and posts
it to the hub (a few microseconds, never waiting); lookups, cancels and
the stop are run there and waited for.  Under gevent the same mode is how
the body of an ``executor="thread"`` job, on a thread of the pool, reaches
the runner on the main hub.

:class:`SubmitOnlyMode`: ``runner.start(run_jobs=False)`` in a shell, a cron
script or a management command: jobs go into the shared store for the
serving processes to run (see :mod:`taskrun.stores.sqlite.client`).

The runner asks its mode first (:meth:`TaskRunner.submit` and friends);
without one it works on the caller's hub, as under gevent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from taskrun.errors import QueueFull, RunnerNotRunning, TaskrunError
from taskrun.jobs import Job, JobControl, JobState
from taskrun.routing import JobRouter

if TYPE_CHECKING:  # sqlite3 is imported only for a SQLite store (see taskrun.startup)
    from taskrun.stores.sqlite.submitter import SubmitClient

__all__ = ["DEV_MODE_WARNING", "HubDoor", "Mode", "SubmitOnlyMode", "ThreadedMode"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Logged once when a runner starts on its own thread.
DEV_MODE_WARNING = (
    "taskrun runs its jobs on a thread of its own because this process is not "
    "gevent-patched (e.g. `flask run`, app.run(), waitress, gunicorn -k gthread): a "
    "development mode, where every greenlet job shares that one thread and a blocking call "
    "in a job stalls the others; to serve in production run `taskrun serve module:app` or "
    "gunicorn -k taskrun.gunicorn.GeventWorker (executor='thread' tasks run in threads "
    "either way)"
)


class Mode(Protocol):
    """What the runner hands to its mode when the caller is not on the runner's hub."""

    def here(self) -> bool:
        """Return whether the caller may use the runner's parts directly."""
        ...

    def submit(self, job: Job[Any]) -> Job[Any]:
        """Accept a job made by :meth:`JobRouter.new_job`; never blocks for long."""
        ...

    def job(self, job_id: str) -> Job[Any] | None:
        """Look a job up by id."""
        ...

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job``; return whether it was unfinished."""
        ...

    def flush(self, timeout: float | None) -> bool:
        """Wait until the jobs accepted so far are durable; ``False`` on timeout."""
        ...

    def stats(self) -> dict[str, Any]:
        """Return the runner's counts."""
        ...


class HubDoor(Protocol):
    """The thread-safe ways into the runner's hub (see :mod:`taskrun.hub_inbox`)."""

    def is_current(self) -> bool:
        """Return whether the caller runs on the hub."""
        ...

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub soon; never blocks."""
        ...

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0) -> T:
        """Run ``fn(*args)`` on the hub; block for its result."""
        ...


class ThreadedMode:
    """A runner living on one hub, reached from any other thread.

    The runner's own hub thread in an unpatched process; under gevent, the
    main hub, as reached from the threads of ``executor="thread"`` jobs.

    :param thread: the way into the hub.
    :param router: the runner's router (used on the hub's thread only).
    :param accepting: whether the runner accepts jobs now.
    """

    def __init__(self, thread: HubDoor, router: JobRouter, accepting: Callable[[], bool]) -> None:
        self.thread = thread
        self._router = router
        self._accepting = accepting

    def here(self) -> bool:
        """Return whether the caller is on the runner's thread (a job, the timer)."""
        return self.thread.is_current()

    def submit(self, job: Job[Any]) -> Job[Any]:
        """Post ``job`` to the hub thread and return at once.

        A job due now is refused here when the pool and backlog look full,
        and one whose arguments the store cannot keep too; one refused later,
        on the hub thread (a race with other threads), ends FAILURE with that
        error, which ``job.get()`` raises, and is logged.

        A job with a ``unique_key`` is admitted on the hub thread while the
        caller waits (one short transaction with a shared store), so that
        the job already holding the key can be returned.

        :raises QueueFull: if the pool and its backlog are full.
        :raises NotSerializable: if a pickling store cannot keep the arguments.
        :raises RunnerNotRunning: if the runner's thread has stopped.
        """
        job._run_record()  # made here, before the hub thread can touch the job
        if job.unique_key is not None:
            return self.thread.call(self._router.admit, job)
        check = getattr(self._router.store, "check_arguments", None)
        if check is not None:
            check(job)  # arguments the store cannot keep fail here, as under gevent
        if job.state is JobState.PENDING and not self._router.has_room():
            raise QueueFull(
                f"cannot accept job {job.id} ({job.name}): the pool and its backlog are full; "
                "raise max_pending or concurrency, or shed load and retry later"
            )
        self.thread.post(self._admit, job)
        return job

    def _admit(self, job: Job[Any]) -> None:
        try:
            if not self._accepting():
                raise RunnerNotRunning(
                    f"cannot run {job.name}: the runner stopped right after job {job.id} was "
                    "submitted; submit jobs before runner.stop()"
                )
            self._router.admit(job)
        except (TaskrunError, Exception) as error:
            logger.error(
                "job %s (%s) was refused after delay() returned: %s", job.id, job.name, error
            )
            job._finish(JobState.FAILURE, error, self._router.clock.time())

    def job(self, job_id: str) -> Job[Any] | None:
        """Look ``job_id`` up on the hub thread (after the jobs posted before it)."""
        return self.thread.call(self._lookup, job_id)

    def _lookup(self, job_id: str) -> Job[Any] | None:
        job = self._router.get(job_id)
        if job is None:
            return None
        runs = job._run_record()  # so a waiting thread never races the runner making it
        # A job of another process (a shared store's snapshot) is polled and
        # cancelled through the store's connection, which lives on this thread.
        poll = runs.poll
        if poll is not None:
            runs.poll = lambda job, timeout: self.thread.call(
                poll, job, timeout, timeout=None if timeout is None else timeout + 30.0
            )
        if runs.control is not None:
            runs.control = _OnHubThread(self.thread, runs.control)
        return job

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job`` on the hub thread; wait for the answer."""
        return self.thread.call(self._router.cancel, job)

    def flush(self, timeout: float | None) -> bool:
        """Wait until the jobs posted so far are admitted and durable."""
        wait = None if timeout is None else timeout + 5.0
        return self.thread.call(self._router.store.flush, timeout, timeout=wait)

    def stats(self) -> dict[str, Any]:
        """Return the runner's counts, read on the hub thread."""
        return self.thread.call(self._router.stats)


class _OnHubThread:
    """Cancels a job of another process through a control that lives on the hub thread."""

    def __init__(self, thread: HubDoor, control: JobControl) -> None:
        self._thread = thread
        self._control = control

    def cancel_job(self, job: Job[Any]) -> bool:
        """Cancel ``job`` on the hub thread (any thread may call it)."""
        if self._thread.is_current():
            return self._control.cancel_job(job)
        return self._thread.call(self._control.cancel_job, job)


class SubmitOnlyMode:
    """A runner that runs no jobs: it submits into, and reads from, a shared store.

    :param client: the open client of the store.
    """

    def __init__(self, client: SubmitClient, router: JobRouter) -> None:
        self.client = client
        self._router = router

    def here(self) -> bool:
        """Always ``False``: nothing runs here."""
        return False

    def submit(self, job: Job[Any]) -> Job[Any]:
        """Insert ``job`` unowned, committed on return (see :meth:`SubmitClient.submit`)."""
        accepted = self.client.submit(job)  # or the job that holds its unique_key
        self._router.submitted += 1
        return accepted

    def job(self, job_id: str) -> Job[Any] | None:
        """Read the job's row."""
        return self.client.get(job_id)

    def cancel(self, job: Job[Any]) -> bool:
        """Cancel ``job`` in the file, or ask its owner to."""
        return self.client.cancel(job)

    def flush(self, timeout: float | None) -> bool:
        """Jobs are committed as they are submitted: nothing to wait for."""
        return True

    def stats(self) -> dict[str, Any]:
        """Return the counts of this process (it runs nothing)."""
        return self._router.stats()
