"""Signals a runner sends as its jobs change state: hooks for metrics, tracing, error reporting.

Each is a :class:`blinker.Signal`; connect a function of the sender and keyword
arguments.  The sender is the :class:`~taskrun.runner.TaskRunner` (for
:data:`store_committed`, the store file's path), so a receiver may listen to
one runner or, connected without a sender, to all::

    from taskrun import signals

    @signals.job_failed.connect_via(runner)
    def report(sender, job, exc, **extra):
        sentry_sdk.capture_exception(exc)

====================  ====================================================  =====================
signal                sent when                                             keyword arguments
====================  ====================================================  =====================
``job_enqueued``      a job is accepted (``delay``, periodic run, retry())  ``job``
``job_started``       an attempt starts running                             ``job``
``job_succeeded``     a job ends SUCCESS                                    ``job``
``job_failed``        a job ends FAILURE (no retry left)                    ``job``, ``exc``
``job_retrying``      an attempt failed and the job will run again          ``job``, ``exc``
``job_cancelled``     a job ends CANCELLED (by ``cancel()`` or a stop)      ``job``
``periodic_skipped``  a periodic slot did not run (pool full, overlap)      ``task``, ``reason``
``runner_started``    ``start()`` finished: the runner accepts jobs         (none)
``runner_stopping``   ``stop()`` began: no more jobs are accepted           (none)
``runner_stopped``    ``stop()`` finished: jobs drained, the store closed   (none)
``loop_blocked``      a greenlet held the event loop (the monitor is on)    ``job``, ``seconds``
``store_committed``   the SQLite store's writer committed a batch           ``seconds``, ``rows``
====================  ====================================================  =====================

Receivers run in the greenlet where the change happens (a worker, the timer,
the caller of ``delay()``), synchronously: keep them short and never block.
A receiver that raises is logged, with its name, and never affects the job
or the runner; the same receiver failing again is logged at most once a
minute, with the count.  With no receiver connected a signal costs one
check: the senders look at ``signal.receivers`` before building anything.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from blinker import ANY, Signal

__all__ = [
    "job_cancelled",
    "job_enqueued",
    "job_failed",
    "job_retrying",
    "job_started",
    "job_succeeded",
    "loop_blocked",
    "periodic_skipped",
    "runner_started",
    "runner_stopped",
    "runner_stopping",
    "send",
    "store_committed",
    "ANY",
    "TaskrunSignal",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class TaskrunSignal(Signal):
    """A :class:`blinker.Signal` that remembers, per sender, which receivers to call.

    blinker works the receivers of a sender out on every send (about a
    microsecond); a job sends several signals, so the list is kept until a
    receiver connects or disconnects, or one of those kept is collected.
    Receivers are kept by weak reference (as blinker does), so keeping them
    here never keeps one alive.
    """

    def __init__(self, name: str, doc: str) -> None:
        super().__init__(doc)
        self.name = name
        self._kept: dict[int, tuple[Callable[[], Any], tuple[_Kept, ...]]] = {}

    def connect(self, receiver: F, sender: Any = ANY, weak: bool = True) -> F:
        """Connect ``receiver`` (see :meth:`blinker.Signal.connect`)."""
        self._kept.clear()
        try:
            return super().connect(receiver, sender, weak)
        finally:
            self._kept.clear()

    def disconnect(self, receiver: Callable[..., Any], sender: Any = ANY) -> None:
        """Disconnect ``receiver`` (see :meth:`blinker.Signal.disconnect`)."""
        self._kept.clear()
        super().disconnect(receiver, sender)

    def receivers_kept(self, sender: Any) -> tuple[_Kept, ...]:
        """Return the receivers for ``sender`` (and for any sender), as weak references.

        Each is ``(ref, None)`` for a function, ``(ref to the object, function)``
        for a bound method (cheaper to call than a ``WeakMethod``).  Kept by
        the sender's id along with a reference to the sender itself, so a new
        sender that reuses a collected one's id never gets its receivers.
        """
        entry = self._kept.get(id(sender))
        if entry is not None and entry[0]() is sender:
            return entry[1]
        try:
            same: Callable[[], Any] = weakref.ref(sender)
        except TypeError:  # a str (a store's path): keeping it costs nothing

            def same() -> Any:
                return sender

        kept = tuple(_weak(receiver) for receiver in self.receivers_for(sender))
        self._kept[id(sender)] = (same, kept)
        return kept


#: A receiver kept weakly: (reference, None) or (reference to its object, its function).
_Kept = tuple[Callable[[], Any], Callable[..., Any] | None]


def _weak(receiver: Callable[..., Any]) -> _Kept:
    if inspect.ismethod(receiver):
        return weakref.ref(receiver.__self__), receiver.__func__
    try:
        return weakref.ref(receiver), None
    except TypeError:  # e.g. a builtin: blinker holds it strongly too
        return (lambda: receiver), None


job_enqueued = TaskrunSignal("job_enqueued", "A job was accepted; ``job=``.")
job_started = TaskrunSignal("job_started", "An attempt of a job starts; ``job=``.")
job_succeeded = TaskrunSignal("job_succeeded", "A job ended SUCCESS; ``job=``.")
job_failed = TaskrunSignal("job_failed", "A job ended FAILURE; ``job=``, ``exc=``.")
job_retrying = TaskrunSignal(
    "job_retrying", "An attempt failed and the job will run again; ``job=``, ``exc=``."
)
job_cancelled = TaskrunSignal("job_cancelled", "A job ended CANCELLED; ``job=``.")
periodic_skipped = TaskrunSignal(
    "periodic_skipped",
    "A periodic slot did not run; ``task=`` (the Task), ``reason=`` ('full' or 'overlap').",
)
runner_started = TaskrunSignal("runner_started", "The runner started accepting jobs.")
runner_stopping = TaskrunSignal("runner_stopping", "The runner began to stop.")
runner_stopped = TaskrunSignal("runner_stopped", "The runner stopped: jobs drained, store closed.")
loop_blocked = TaskrunSignal(
    "loop_blocked",
    "A greenlet held the event loop for ``seconds=``; ``job=`` the job it ran, or None.",
)
store_committed = TaskrunSignal(
    "store_committed",
    "The SQLite writer committed ``rows=`` rows in ``seconds=``; sender: the file's path.",
)

#: Seconds between two log records of the same failing receiver.
REPORT_EVERY = 60.0

# (signal name, receiver id) -> [when last logged (monotonic), failures not logged since]
_failures: dict[tuple[str, int], list[float]] = {}


def send(signal: TaskrunSignal, sender: Any, **kwargs: Any) -> None:
    """Call each receiver of ``signal`` for ``sender`` with ``kwargs``; never raises.

    Callers check ``signal.receivers`` first, so that a signal nobody listens
    to costs nothing.  A receiver that raises is logged (see the module doc)
    and the others still run.  Nothing is called while the signal is
    muted (``signal.muted()``).
    """
    if signal.is_muted:
        return
    entry = signal._kept.get(id(sender))
    kept = entry[1] if entry is not None and entry[0]() is sender else signal.receivers_kept(sender)
    for ref, function in kept:
        target = ref()
        if target is None:  # collected: work the list out again next time
            signal._kept.clear()
            continue
        try:
            if function is None:
                target(sender, **kwargs)
            else:
                function(target, sender, **kwargs)
        except Exception as error:  # a receiver never takes a job or the runner down
            _report(signal, target if function is None else function, error)


def _report(signal: TaskrunSignal, receiver: Any, error: Exception) -> None:
    name = getattr(receiver, "__qualname__", None) or repr(receiver)
    module = getattr(receiver, "__module__", None)
    where = f"{module}.{name}" if module else name
    key = (signal.name or "", id(receiver))
    now = time.monotonic()
    record = _failures.get(key)
    if record is not None and now - record[0] < REPORT_EVERY:
        record[1] += 1
        return
    repeats = int(record[1]) if record is not None else 0
    _failures[key] = [now, 0]
    logger.error(
        "receiver %s of taskrun signal %r raised %r%s; the job and the runner go on "
        "(fix the receiver, or disconnect it)",
        where,
        signal.name,
        error,
        f" ({repeats} more failure(s) since its last report)" if repeats else "",
        exc_info=error,
    )
