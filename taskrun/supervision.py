"""Supervised loops: a long-lived greenlet of taskrun never dies quietly.

Every long-lived greenlet or thread taskrun runs (the timer, the store's
writer, housekeeping, leader election) goes through :func:`supervised`: one
round of its work that raises is logged, with what the loop was doing and
the traceback, and the loop goes on after a short pause that grows while
the rounds keep failing (so a persistent fault costs one line a pause, not
a busy loop), and shrinks back once a round succeeds.  The same error is
logged in full once; repeats of it are counted in a shorter line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["Supervisor", "guarded"]

#: Pause after the first failed round, and the longest pause between failing rounds.
FIRST_PAUSE = 0.05
MAX_PAUSE = 5.0


class Supervisor:
    """Keeps one loop alive: call :meth:`failed` when a round raised, :meth:`ok` when one did not.

    Pure bookkeeping: it never sleeps itself, it says how long to pause,
    so the loop sleeps in its own way (``gevent.sleep``, an ``Event.wait``
    that a stop can cut short, a manual clock).

    :param what: what the loop does, for the log line, e.g. ``"the timer"``.
    :param logger: where failures are logged (the loop's own module logger).
    """

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self._logger = logger
        self._pause = 0.0
        self._last_kind: tuple[type[BaseException], str] | None = None
        self._repeats = 0
        #: How many rounds failed since the loop started.
        self.failures = 0

    def ok(self) -> None:
        """Record a round that succeeded: the next failure pauses briefly again."""
        if self._last_kind is not None and self._repeats:
            self._logger.info(
                "%s works again after %d more failure(s) of the same kind", self.what, self._repeats
            )
        self._pause = 0.0
        self._last_kind = None
        self._repeats = 0

    def failed(self, error: BaseException, doing: str) -> float:
        """Log a failed round (in full the first time this kind of error is seen) and go on.

        :param error: what the round raised.
        :param doing: what the round was doing, e.g. ``"firing job 3fa1 (shop.send)"``.
        :returns: how many seconds the loop should pause before its next round.
        """
        self.failures += 1
        kind = (type(error), str(error))
        if kind == self._last_kind:
            self._repeats += 1
            self._logger.error(
                "%s failed again while %s (%s: %s; %d time(s) in a row); it goes on in %.2f s",
                self.what,
                doing,
                type(error).__name__,
                error,
                self._repeats + 1,
                self._next_pause(),
            )
        else:
            self._last_kind = kind
            self._repeats = 0
            self._logger.error(
                "%s failed while %s; it goes on in %.2f s",
                self.what,
                doing,
                self._next_pause(),
                exc_info=error,
            )
        return self._pause

    def _next_pause(self) -> float:
        self._pause = min(max(self._pause * 2, FIRST_PAUSE), MAX_PAUSE)
        return self._pause


def guarded(supervisor: Supervisor, doing: str, step: Callable[[], None]) -> float:
    """Run ``step()``; return 0 if it returned, else the pause :meth:`Supervisor.failed` gives.

    ``BaseException`` subclasses that are not ``Exception`` (``GreenletExit``
    when the loop is killed, ``KeyboardInterrupt``) propagate: they stop the
    loop on purpose.
    """
    try:
        step()
    except Exception as error:
        return supervisor.failed(error, doing)
    supervisor.ok()
    return 0.0
