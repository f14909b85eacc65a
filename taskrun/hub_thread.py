"""A gevent hub on a daemon thread of its own: where a runner lives in an unpatched process.

Under ``flask run``, ``app.run()``, waitress or gunicorn ``-k gthread`` the
process is not monkey-patched and serves each request on a plain thread.
Greenlets started there would wait on a hub that no thread drives, so a
runner started in such a process (see :meth:`TaskRunner.start`) puts its
timer, workers and store writer on a :class:`HubThread` instead.

Other threads talk to it in two ways, both thread-safe:

* :meth:`HubThread.post` queues a call that must not block (admitting a job)
  and wakes the hub with one ``async`` watcher; it never waits, so a
  request thread's ``delay()`` costs a few microseconds.
* :meth:`HubThread.call` runs a function in a fresh greenlet of the hub and
  waits for its result on a :class:`concurrent.futures.Future` (a lookup, a
  cancel, the runner's stop).

Calls run in the order they were queued, so a job posted before a lookup
is admitted before the lookup runs.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import gevent
from gevent.event import Event

from taskrun.errors import RunnerNotRunning

__all__ = ["HubThread"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: How long :meth:`HubThread.start` waits for the thread's set-up.
START_TIMEOUT = 60.0


class HubThread:
    """A daemon thread running a gevent hub, and the thread-safe ways in.

    :param name: the thread's name (seen in tracebacks and thread dumps).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._inbox: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._watcher: Any = None
        self._quit: Event | None = None
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._closed = False
        # Whether a wake-up is on its way: a burst of posts costs one write to
        # the loop's wake-up pipe, not one each (see post and _drain).
        self._wake_sent = False

    def __repr__(self) -> str:
        return f"<HubThread {self._name!r} alive={self.is_alive}>"

    @property
    def is_alive(self) -> bool:
        """Whether the thread runs and takes calls."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def is_current(self) -> bool:
        """Return whether the caller runs on this hub's thread (a job, the timer)."""
        return threading.get_ident() == self._ident

    def start(self, setup: Callable[[], None]) -> None:
        """Start the thread and run ``setup()`` in it (in a greenlet of its hub).

        Blocks the caller until ``setup`` returned, at most :data:`START_TIMEOUT` s.

        :raises BaseException: what ``setup`` raised; the thread has then ended.
        :raises RunnerNotRunning: if the set-up did not finish in time.
        """
        ready: Future[None] = Future()
        thread = threading.Thread(target=self._main, args=(setup, ready), name=self._name)
        thread.daemon = True  # the interpreter must not wait for it at exit
        self._thread = thread
        thread.start()
        try:
            ready.result(timeout=START_TIMEOUT)
        except TimeoutError:
            raise RunnerNotRunning(
                f"the runner's thread {self._name!r} did not start within {START_TIMEOUT} s; "
                "a job or the store's set-up blocks it (see the log)"
            ) from None

    def _main(self, setup: Callable[[], None], ready: Future[None]) -> None:
        hub = gevent.get_hub()  # this thread's own hub
        self._quit = Event()
        watcher = hub.loop.async_()
        watcher.start(self._drain)
        self._watcher = watcher
        self._ident = threading.get_ident()
        try:
            setup()
        except BaseException as error:
            self._closed = True
            watcher.close()
            ready.set_exception(error)
            return
        ready.set_result(None)
        try:
            self._quit.wait()
        finally:
            self._closed = True
            watcher.close()
            self._drain()  # what was posted while closing fails loudly in its caller
            hub.destroy(destroy_loop=True)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub's thread soon; never blocks.

        ``fn`` runs in the hub itself, so it must not block or wait; an
        exception it raises is logged.

        :raises RunnerNotRunning: if the thread has stopped.
        """
        if self._closed or self._watcher is None:
            raise RunnerNotRunning(
                f"the runner's thread {self._name!r} has stopped; start the runner again"
            )
        self._inbox.append((fn, args))
        if not self._wake_sent:
            # If _drain reset the flag after we read it as set, it drains
            # after the reset and so sees this call: no wake-up is lost.
            self._wake_sent = True
            self._watcher.send()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0) -> T:
        """Run ``fn(*args)`` in a new greenlet of the hub; block the caller for its result.

        :raises BaseException: what ``fn`` raised.
        :raises RunnerNotRunning: if the thread has stopped, or ``fn`` took
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
                f"the runner's thread {self._name!r} did not answer {fn.__name__} within "
                f"{timeout} s"
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
                logger.exception("taskrun hub thread %s: %r failed", self._name, fn)

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread once what was posted before has run; wait up to ``timeout`` s.

        Idempotent; call it from another thread after the runner stopped.
        """
        if self._closed or self._quit is None:
            return
        quit_event = self._quit
        self.post(quit_event.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "taskrun hub thread %s still runs %s s after stop(); a job blocks it",
                    self._name,
                    timeout,
                )
