"""Serve a WSGI app on gevent's pywsgi server next to its runner, and stop both in order.

This module does not monkey-patch: the caller must have called
``gevent.monkey.patch_all()`` before importing the app (``taskrun serve``
does).  Shutdown has one order, whatever asks for it:

1. stop accepting connections; responses sent meanwhile say ``Connection: close``;
2. let in-flight requests finish (they may still enqueue jobs), then close
   idle keep-alive connections;
3. ``runner.stop()`` with what is left of the grace period: the timer
   stops, running and waiting jobs finish, the rest are killed and logged.

A second signal (or :meth:`Server.stop_now`) during that sequence cuts it
short: requests and jobs still running are killed at once.

Example::

    from gevent import monkey; monkey.patch_all()   # first, before other imports
    from myapp import create_app
    from taskrun.wsgi import serve

    serve(create_app(), bind="127.0.0.1:8000", grace=30)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import time
from datetime import timedelta
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from taskrun.checks import warn_about_patching
from taskrun.errors import ConfigError
from taskrun.loading import find_runner, no_runner_message
from taskrun.runner import TaskRunner
from taskrun.validation import positive_int, seconds

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(__name__ + ".access")

DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_GRACE = 30.0
#: The most connections served at once (gunicorn's ``worker_connections`` default).
DEFAULT_CONNECTIONS = 1000
#: Signals that stop :meth:`Server.serve_forever`; a second one stops at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def parse_bind(bind: str) -> tuple[str, int]:
    """Return ``(host, port)`` from ``"HOST:PORT"`` (``"[::1]:8000"`` for IPv6, ``":8000"``).

    An empty host means ``127.0.0.1``; port 0 picks a free port.

    :raises ConfigError: if the port is missing or out of range.
    """
    host, _, port_text = bind.rpartition(":")
    host = host.strip().removeprefix("[").removesuffix("]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"bind must be HOST:PORT with a port from 0 to 65535, got {bind!r}; "
            "e.g. 127.0.0.1:8000 (or port 0 for any free port)"
        )
    return host, port


class _Handler(WSGIHandler):
    """Counts requests in flight and asks clients to close while the server drains."""

    server: _DrainingServer

    def handle(self) -> None:
        # pywsgi sends a response's headers and body in two writes: with
        # Nagle's algorithm on, a keep-alive client's delayed ACK then holds
        # every response back ~40 ms.
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def handle_one_response(self) -> None:
        server = self.server
        server.in_flight += 1
        try:
            super().handle_one_response()
        finally:
            server.in_flight -= 1
            if not server.in_flight and server.draining:
                server.idle.set()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if self.server.draining and not any(k.lower() == "connection" for k, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)


class _DrainingServer(WSGIServer):
    """gevent's WSGI server, knowing how many requests are in flight."""

    handler_class = _Handler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.draining = False
        self.idle = Event()


class Server:
    """Serves one WSGI app with gevent's pywsgi server and runs its :class:`TaskRunner`.

    Construction binds nothing; :meth:`start` starts the runner, then listens.
    Call it in the process that serves (after any fork), on a patched stdlib.

    :param app: the WSGI application.
    :param runner: the runner whose jobs the app enqueues; default: found
        from the app (see :func:`taskrun.loading.find_runner`).  Without one
        the app is served alone, with a warning.
    :param bind: ``"HOST:PORT"`` to listen on; port 0 picks a free port.
    :param grace: seconds (or a ``timedelta``) :meth:`stop` waits for requests and jobs.
    :param connections: the most connections served at once.
    :param access_log: log one line per request to the ``taskrun.wsgi.access`` logger.
    :raises ConfigError: for a bad ``bind``, ``grace`` or ``connections``.
    """

    def __init__(
        self,
        app: Any,
        runner: TaskRunner | None = None,
        *,
        bind: str = DEFAULT_BIND,
        grace: float | timedelta = DEFAULT_GRACE,
        connections: int = DEFAULT_CONNECTIONS,
        access_log: bool = True,
    ) -> None:
        positive_int("connections", connections, f"e.g. connections={DEFAULT_CONNECTIONS}")
        self.app = app
        self.runner = runner if runner is not None else find_runner(app)
        self.grace = seconds("grace", grace)
        self._listener = parse_bind(bind)
        self._server = _DrainingServer(
            self._listener,
            app,
            spawn=Pool(connections),
            log=access_logger if access_log else None,
            error_log=logger,
        )
        self._stop_wanted = Event()
        self._hurry = Event()
        self._stopping = False
        self._signals = 0

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` listened on (the real port once started)."""
        address = self._server.address
        if isinstance(address, tuple):
            return address[0], address[1]
        return self._listener

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> Server:
        """Start the runner, then listen; return at once.

        :raises OSError: if the address cannot be bound (the runner is stopped again).
        """
        if self.runner is None:
            logger.warning("%s", no_runner_message(repr(self.app)))
            warn_about_patching()
        else:
            self.runner.serve_defaults()
            self.runner.start()
        try:
            self._server.start()
        except BaseException:
            if self.runner is not None:
                self.runner.stop(timeout=0)
            raise
        logger.info("serving on %s (grace %s s)", self.url, self.grace)
        return self

    def stop(self, grace: float | timedelta | None = None) -> None:
        """Stop in order: accepting, in-flight requests, then the runner's jobs.

        Blocks the calling greenlet up to about ``grace`` seconds (default:
        the server's); requests and jobs still running then are killed.
        Idempotent: a call while another stop runs returns at once.

        :param grace: seconds (or a ``timedelta``) for requests and jobs together.
        :raises ConfigError: for a negative or non-numeric ``grace``.
        """
        budget = self.grace if grace is None else seconds("grace", grace)
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + budget
        server = self._server
        server.draining = True
        server.close()
        if server.in_flight and not self._hurry.is_set():
            logger.info("waiting for %d request(s) in flight", server.in_flight)
            gevent.wait([server.idle, self._hurry], timeout=_left(deadline), count=1)
        if server.in_flight:
            logger.warning("killing %d request(s) still in flight", server.in_flight)
        server.stop(timeout=0)  # closes idle keep-alive connections too
        if self.runner is not None:
            self.runner.stop(timeout=0.0 if self._hurry.is_set() else round(_left(deadline), 2))
        logger.info("server stopped")

    def stop_now(self) -> None:
        """Cut a :meth:`stop` in progress short: kill requests and jobs still running.

        Never blocks; any greenlet may call it.  Before :meth:`stop` it makes
        the coming stop kill at once.
        """
        self._hurry.set()
        if self.runner is not None and self._stopping:
            self.runner.stop_now()

    def serve_forever(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then :meth:`stop`; return when stopped.

        The first signal starts the ordered stop; a second one cuts it
        short (:meth:`stop_now`).  Watches both signals while it runs (main
        thread only) and puts the previous handlers back after.
        """
        self.start()
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        # The event loop's own signal watchers wake the loop whichever thread
        # the kernel delivers a signal to (a Python-level handler would wait
        # for the main thread's next wake-up, e.g. while a resolver thread
        # took the signal).
        watchers = [
            gevent.signal_handler(sig, self._signalled, signal.Signals(sig).name)
            for sig in STOP_SIGNALS
        ]
        try:
            self._stop_wanted.wait()
        finally:
            try:
                self.stop()
            finally:
                for watcher in watchers:
                    watcher.cancel()
                for sig, handler in previous.items():
                    if handler is not None:  # None: not set from Python; leave it
                        signal.signal(sig, handler)

    def _signalled(self, name: str) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s received: stopping within %s s (send it again to stop now)", name, self.grace
            )
            self._stop_wanted.set()
        else:
            logger.warning("%s received again: killing requests and jobs now", name)
            self.stop_now()


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def serve(
    app: Any,
    runner: TaskRunner | None = None,
    *,
    bind: str = DEFAULT_BIND,
    grace: float | timedelta = DEFAULT_GRACE,
    connections: int = DEFAULT_CONNECTIONS,
    access_log: bool = True,
) -> None:
    """Serve ``app`` and its runner until SIGTERM or SIGINT, then stop in order.

    Blocks until stopped.  Does not monkey-patch: call
    ``gevent.monkey.patch_all()`` first thing in your entry point, or use
    ``taskrun serve module:app``, which does.  Parameters are those of
    :class:`Server`.

    :raises ConfigError: for a bad option.
    :raises OSError: if the address cannot be bound.
    """
    Server(
        app, runner, bind=bind, grace=grace, connections=connections, access_log=access_log
    ).serve_forever()
