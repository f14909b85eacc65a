"""The thread-safe ways into a gevent hub from other threads.

A runner's timer, workers and store writer live on one hub: the main
thread's under gevent, a :class:`~taskrun.hub_thread.HubThread`'s in an
unpatched process.  Code on another thread (a request thread of ``flask
run``, the body of an ``executor="thread"`` job) must not touch them
directly: a greenlet woken or started from the wrong thread runs on that
thread's hub, or never.  It goes through the hub's :class:`HubInbox`:

* :meth:`HubInbox.post` queues a call that must not block (admitting a
  job) and wakes the hub with one ``async`` watcher; it never waits, so a
  ``delay()`` from another thread costs a few microseconds.
* :meth:`HubInbox.call` runs a function in a fresh greenlet of the hub and
  waits for its result on a :class:`concurrent.futures.Future` (a lookup,
  a cancel, the runner's stop).

Calls run in the order they were queued, so a job posted before a lookup
is admitted before the lookup runs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import gevent
from gevent._hub_local import get_hub_if_exists

from taskrun.errors import RunnerNotRunning

__all__ = ["HubInbox"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class HubInbox:
    """Calls queued by other threads for the hub of the thread that made the inbox.

    Make it on the hub's own thread.

    :param name: what errors and log lines call the hub.
    :param keep_alive: whether the inbox alone keeps the hub's loop running
        (a hub thread waits on nothing else); ``False`` on a hub that runs
        for other reasons, so ``gevent.wait()`` there still returns.
    """

    def __init__(self, name: str, *, keep_alive: bool) -> None:
        self.name = name
        self._hub = gevent.get_hub()
        self._inbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        watcher: Any = self._hub.loop.async_()
        watcher.ref = keep_alive
        watcher.start(self._drain)
        self._watcher = watcher
        self._closed = False
        # Whether a wake-up is on its way: a burst of posts costs one write to
        # the loop's wake-up pipe, not one each (see post and _drain).
        self._wake_sent = False

    def __repr__(self) -> str:
        return f"<HubInbox {self.name!r} closed={self._closed}>"

    @property
    def is_open(self) -> bool:
        """Whether the inbox takes calls."""
        return not self._closed

    def is_current(self) -> bool:
        """Return whether the caller runs on the inbox's hub (a job, the timer)."""
        return get_hub_if_exists() is self._hub

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub's thread soon; never blocks.

        ``fn`` runs in the hub itself, so it must not block or wait; an
        exception it raises is logged.

        :raises RunnerNotRunning: if the inbox is closed.
        """
        if self._closed:
            raise RunnerNotRunning(f"the runner's hub {self.name!r} has stopped; start it again")
        self._inbox.append((fn, args))
        if not self._wake_sent:
            # If _drain reset the flag after we read it as set, it drains
            # after the reset and so sees this call: no wake-up is lost.
            self._wake_sent = True
            self._watcher.send()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0) -> T:
        """Run ``fn(*args)`` in a new greenlet of the hub; block the caller for its result.

        :raises BaseException: what ``fn`` raised.
        :raises RunnerNotRunning: if the inbox is closed, or ``fn`` took
            longer than ``timeout`` seconds.
        """
        future: Future[T] = Future()
        self.post(self._spawn_call, future, fn, args)
        try:
            return future.result(timeout=timeout)
        except TimeoutError as error:
            if future.done():
                raise  # fn itself raised a TimeoutError
            raise RunnerNotRunning(
                f"the runner's hub {self.name!r} did not answer {fn.__name__} within {timeout} s"
            ) from error

    @staticmethod
    def _spawn_call(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # noqa: B036 - handed to the waiting thread
                future.set_exception(error)

        gevent.spawn(run)

    def _drain(self) -> None:
        self._wake_sent = False
        inbox = self._inbox
        while inbox:
            fn, args = inbox.popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("taskrun hub %s: %r failed", self.name, fn)

    def close(self) -> None:
        """Take no more calls; run what was queued (so its callers fail loudly). Idempotent.

        Call it on the hub's thread.
        """
        if self._closed:
            return
        self._closed = True
        self._watcher.close()
        self._drain()
