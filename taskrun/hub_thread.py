"""A gevent hub on a daemon thread of its own: where a runner lives in an unpatched process.

Under ``flask run``, ``app.run()``, waitress or gunicorn ``-k gthread`` the
process is not monkey-patched and serves each request on a plain thread.
Greenlets started there would wait on a hub that no thread drives, so a
runner started in such a process (see :meth:`TaskRunner.start`) puts its
timer, workers and store writer on a :class:`HubThread` instead.  Other
threads reach it through its :class:`~taskrun.hub_inbox.HubInbox`
(:meth:`HubThread.post` and :meth:`HubThread.call`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import gevent
from gevent.event import Event

from taskrun.errors import RunnerNotRunning
from taskrun.hub_inbox import HubInbox

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
        self._inbox: HubInbox | None = None
        self._quit: Event | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<HubThread {self._name!r} alive={self.is_alive}>"

    @property
    def is_alive(self) -> bool:
        """Whether the thread runs and takes calls."""
        inbox = self._inbox
        thread = self._thread
        return thread is not None and thread.is_alive() and inbox is not None and inbox.is_open

    def is_current(self) -> bool:
        """Return whether the caller runs on this hub's thread (a job, the timer)."""
        inbox = self._inbox
        return inbox is not None and inbox.is_current()

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
        # The inbox keeps the loop alive: the thread waits on nothing else.
        inbox = self._inbox = HubInbox(self._name, keep_alive=True)
        try:
            setup()
        except BaseException as error:
            inbox.close()
            ready.set_exception(error)
            return
        ready.set_result(None)
        try:
            self._quit.wait()
        finally:
            inbox.close()  # what was posted while closing fails loudly in its caller
            hub.destroy(destroy_loop=True)

    def _open_inbox(self) -> HubInbox:
        inbox = self._inbox
        if inbox is None:
            raise RunnerNotRunning(
                f"the runner's thread {self._name!r} has stopped; start the runner again"
            )
        return inbox

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the hub's thread soon; never blocks (see :meth:`HubInbox.post`).

        :raises RunnerNotRunning: if the thread has stopped.
        """
        self._open_inbox().post(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 30.0) -> T:
        """Run ``fn(*args)`` in a new greenlet of the hub; block the caller for its result.

        :raises BaseException: what ``fn`` raised.
        :raises RunnerNotRunning: if the thread has stopped, or ``fn`` took
            longer than ``timeout`` seconds.
        """
        return self._open_inbox().call(fn, *args, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread once what was posted before has run; wait up to ``timeout`` s.

        Idempotent; call it from another thread after the runner stopped.
        """
        inbox = self._inbox
        if inbox is None or not inbox.is_open or self._quit is None:
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
