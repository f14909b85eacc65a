"""Where a job's body runs, per its task's ``executor``, and how its ``timeout`` is kept.

``executor="greenlet"`` (the default): the body runs in the calling worker
greenlet, under a :class:`gevent.Timeout`.  A body that blocks the loop
cannot be interrupted; if it returns past its ``timeout`` it still ends in
:class:`~taskrun.errors.JobTimeout`, its value dropped.

``executor="thread"``: the body runs in a dedicated
:class:`gevent.threadpool.ThreadPool`, not the hub's shared one (whose
saturation would stall DNS lookups); the worker greenlet waits without
blocking the loop.  A thread job may wait for a free thread: its ``timeout``
counts from when its body starts in a thread, and a job cancelled (or its
worker killed) before then never runs its body.  A thread cannot be killed:
once its body has started, a timeout or a cancel only stops the worker from
waiting, and the thread runs on; its late result is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import gevent
from gevent.event import AsyncResult
from gevent.hub import get_hub
from gevent.threadpool import ThreadPool

from taskrun.current import running
from taskrun.errors import JobTimeout
from taskrun.jobs import Job
from taskrun.options import TaskOptions

ContextFactory = Callable[[], AbstractContextManager[Any]]


class JobExecutor:
    """Calls job bodies in the calling greenlet or in a thread pool made on first use.

    The dispatcher's workers call it, from greenlets of the hub's thread.

    :param threads: size of the thread pool for ``executor="thread"`` jobs.
    """

    def __init__(self, threads: int) -> None:
        self._threads_size = threads
        self._threadpool: ThreadPool | None = None
        # Jobs whose body runs in a pool thread now, keyed by run: the pool
        # threads write it (dict set and pop are atomic under the GIL).
        self._in_threads: dict[object, Job[Any]] = {}

    @property
    def threads(self) -> int:
        """The size of the thread pool; set before the first thread job, which makes the pool."""
        return self._threads_size

    @threads.setter
    def threads(self, value: int) -> None:
        self._threads_size = value

    def call(self, job: Job[Any], options: TaskOptions, context: ContextFactory) -> Any:
        """Run ``job``'s body inside ``context()`` and return its value.

        :param options: the options of ``job``'s task (its timeout and executor).

        Blocks the calling greenlet (never the loop) until the body returns.

        :raises JobTimeout: if the body runs past the task's ``timeout``.
        :raises BaseException: whatever the body raised, or what is thrown
            into the calling greenlet meanwhile.
        """
        if options.executor == "thread":
            return self._call_in_thread(job, options.timeout, context)
        if options.timeout is None:
            if context is nullcontext:  # no integration: one context manager less per job
                with running(job):
                    return job.task.fn(*job.args, **(job.kwargs or {}))
            with context(), running(job):
                return job.task.fn(*job.args, **(job.kwargs or {}))
        timer = gevent.Timeout(options.timeout)
        started = time.monotonic()
        timer.start()
        try:
            with context(), running(job):
                value = job.task.fn(*job.args, **(job.kwargs or {}))
        except gevent.Timeout as fired:
            if fired is not timer:
                raise
            raise JobTimeout(_timeout_message(job, options.timeout)) from None
        finally:
            timer.close()
        # A body that blocks the loop returns before the timer can fire: it
        # still ran past its time limit.
        elapsed = time.monotonic() - started
        if elapsed > options.timeout:
            raise JobTimeout(
                f"{_timeout_message(job, options.timeout)} (it ran {elapsed:.2f} s without "
                "yielding to the event loop, so it could not be stopped in time; run it with "
                "executor='thread' or make it cooperative)"
            )
        return value

    def _call_in_thread(self, job: Job[Any], timeout: float | None, context: ContextFactory) -> Any:
        if self._threadpool is None:
            self._threadpool = ThreadPool(self._threads_size)
        in_threads = self._in_threads
        loop = get_hub().loop
        # The body runs only if its thread takes the ticket before the worker
        # gives up on the job (cancelled or killed while the job waits for a
        # thread).  list.pop and list.clear are atomic: one side wins.
        ticket = [True]
        # Set, through the loop, with the moment the body starts.
        started: AsyncResult[float] = AsyncResult()

        def in_thread() -> tuple[bool, Any] | None:
            try:
                ticket.pop()
            except IndexError:
                return None  # given up on while it waited: the body never runs
            in_threads[started] = job
            # Only thread-safe calls from here: run_callback_threadsafe wakes the loop.
            loop.run_callback_threadsafe(started.set, time.monotonic())
            # Hand any exception back as a value: one raised out of a pool
            # thread goes to the hub, which prints it and throws SystemExit
            # or KeyboardInterrupt into the main greenlet.
            try:
                with context(), running(job):
                    return True, job.task.fn(*job.args, **(job.kwargs or {}))
            except BaseException as error:  # noqa: B036 - re-raised in the worker below
                return False, error
            finally:
                in_threads.pop(started, None)

        pending = self._threadpool.spawn(in_thread)
        try:
            if timeout is None:
                outcome = pending.get()
            else:
                # The time limit counts from the start of the body, not from
                # the wait for a free thread.
                deadline = cast(float, started.get()) + timeout  # blocks: never None
                outcome = pending.get(timeout=max(deadline - time.monotonic(), 0.0))
        except gevent.Timeout:
            # A thread cannot be killed: it runs on, and its late result is dropped.
            raise JobTimeout(_timeout_message(job, timeout) + " (the thread runs on)") from None
        finally:
            ticket.clear()  # if the body has not started (cancelled, killed), it never will
        # The body ran (a thread returns None only for a job the worker gave up on).
        ok, value = cast(tuple[bool, Any], outcome)
        if not ok:
            raise value
        return value

    def runs_in_thread(self, job: Job[Any]) -> bool:
        """Return whether a body of ``job`` runs in a pool thread now."""
        return any(running is job for running in list(self._in_threads.values()))

    def close(self) -> None:
        """Let the pool's threads exit once idle; never waits for a busy one.

        The next thread job makes a new pool.
        """
        if self._threadpool is not None:
            # ThreadPool.kill() called from a greenlet waits for every busy
            # thread to return, which may be never; called from the hub it
            # only tells the threads to exit once idle.
            pool, self._threadpool = self._threadpool, None
            get_hub().loop.run_callback(pool.kill)


def _timeout_message(job: Job[Any], timeout: float | None) -> str:
    return (
        f"job {job.id} ({job.name}) ran past its timeout of {timeout!r} s; "
        "raise the task's timeout= or make the work smaller"
    )
