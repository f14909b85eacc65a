"""The blocking warning: gevent's monitor thread names the job that held the event loop.

A greenlet job that calls blocking code (an unpatched socket, a C
extension, ``time.sleep`` taken before patching, a long pure-Python loop)
stops every other greenlet of the process: requests, the timer, other
jobs.  With ``blocking_warning=<seconds>`` the runner turns on gevent's own
monitor thread (``gevent.config.monitor_thread``,
``gevent.config.max_blocking_time``), which notices a greenlet that has not
yielded for that long and emits :class:`gevent.events.EventLoopBlocked`.
:class:`LoopMonitor` receives it in the monitor thread, finds the job that
greenlet runs, and once the loop runs again (the stretch is over, so its
length is known) logs, once per job::

    job 3fa1... (shop.resize) blocked the event loop for 0.35 s; run it with
    executor='thread' or make it cooperative

adds the stretch to ``job.blocked_for`` and sends
:data:`taskrun.signals.loop_blocked` (the metrics count it).  A greenlet
that is not a job (a request, say) is named by its repr.

The length is an estimate: the monitor checks every ``threshold`` seconds,
so a stretch is seen one to two (if the monitor thread wakes late, three)
thresholds after it began; it is
counted from the job's start if that falls in between (a body that blocks
from its first line), else from halfway.  A
greenlet that never yields again is never reported by taskrun (gevent's
report, if printed, shows it).  gevent's own report on stderr (a stack
dump at every check) is turned off while the monitor runs, unless
``GEVENT_MONITOR_PRINT_BLOCKING_REPORTS`` is set.  ``max_blocking_time`` is
one setting per process: the last runner started sets it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import gevent
from gevent.events import EventLoopBlocked, subscribers
from gevent.hub import Hub, get_hub

from taskrun import signals
from taskrun.jobs import Job

__all__ = ["LoopMonitor"]

logger = logging.getLogger(__name__)

#: Set it to keep gevent's own blocking report (a stack dump on stderr) while taskrun's is on.
PRINT_REPORTS_ENV = "GEVENT_MONITOR_PRINT_BLOCKING_REPORTS"


class LoopMonitor:
    """Reports each stretch a greenlet held the event loop past ``threshold`` seconds.

    :meth:`start` and :meth:`stop` are called from the hub's thread (the
    runner's start and stop); the event handler runs in gevent's monitor
    thread and only looks things up and hands the rest to the loop.

    :param threshold: seconds without a switch before a greenlet counts as blocking.
    :param find_job: returns the job a greenlet runs, or ``None``; called
        from the monitor thread (see :meth:`~taskrun.dispatcher.Dispatcher.job_running_in`).
    :param sender: what :data:`~taskrun.signals.loop_blocked` names as its sender.
    :param now: the clock jobs' start times come from (POSIX seconds; any thread may call it).
    """

    def __init__(
        self,
        threshold: float,
        find_job: Callable[[object], Job[Any] | None],
        sender: object,
        now: Callable[[], float],
    ) -> None:
        self.threshold = threshold
        self._now = now
        self._find_job = find_job
        self._sender = sender
        self._hub: Hub | None = None
        self._started_thread = False
        self._printing: bool | None = None
        # Stretches seen and not yet over: greenlet -> (estimated start, its job).
        # The monitor thread adds, the loop removes; each a single dict operation.
        self._open: dict[object, tuple[float, Job[Any] | None]] = {}
        # When each greenlet's last stretch was seen to end (monotonic): gevent's
        # sampling may report the same greenlet once more right after it unblocked.
        self._ended_at: dict[object, float] = {}

    def start(self) -> None:
        """Start gevent's monitor thread for this hub if needed, and listen to it."""
        hub = self._hub = get_hub()
        config = gevent.config
        config.max_blocking_time = self.threshold
        if PRINT_REPORTS_ENV not in os.environ:
            self._printing = config.print_blocking_reports
            config.print_blocking_reports = False
        if hub.periodic_monitoring_thread is None:
            was_on = config.monitor_thread
            config.monitor_thread = True
            try:
                with warnings.catch_warnings():
                    # Memory monitoring needs psutil; taskrun uses only the blocking check.
                    warnings.filterwarnings("ignore", "Unable to monitor memory usage")
                    hub.start_periodic_monitoring_thread()
            finally:
                config.monitor_thread = was_on
            self._started_thread = True
        subscribers.append(self._on_event)

    def stop(self) -> None:
        """Stop listening; stop the monitor thread if :meth:`start` started it."""
        if self._on_event in subscribers:
            subscribers.remove(self._on_event)
        hub = self._hub
        if hub is not None and self._started_thread and hub.periodic_monitoring_thread:
            hub.periodic_monitoring_thread.kill()
            hub.periodic_monitoring_thread = None
        self._started_thread = False
        if self._printing is not None:
            gevent.config.print_blocking_reports = self._printing
            self._printing = None
        self._open.clear()
        self._ended_at.clear()

    def _on_event(self, event: object) -> None:
        # In gevent's monitor thread: no logging, no locks; look up and hand over.
        if not isinstance(event, EventLoopBlocked):
            return
        hub = self._hub
        if hub is None or getattr(event, "hub", hub) is not hub:
            return  # another hub's loop (a runner of another thread)
        greenlet = event.greenlet
        if greenlet in self._open:
            return  # the same stretch, seen again at the next check
        now = time.monotonic()
        threshold = self.threshold
        if now - self._ended_at.get(greenlet, -math.inf) < 2 * threshold:
            return  # the tail of a stretch that just ended, sampled late
        job = self._find_job(greenlet)
        # Unseen at the check before this one, so it began one to two thresholds ago
        # (three, if the monitor thread woke late): at the job's start if that falls
        # in between, else halfway.
        start = now - 1.5 * threshold
        started = job._runs.started if job is not None and job._runs is not None else None
        if started is not None:
            start = min(max(now - (self._now() - started), now - 3 * threshold), now - threshold)
        self._open[greenlet] = (start, job)
        hub.loop.run_callback_threadsafe(self._ended, greenlet)

    def _ended(self, greenlet: object) -> None:
        # In the loop, as soon as it runs again: the stretch is over.
        opened = self._open.pop(greenlet, None)
        if opened is None:
            return
        self._ended_at[greenlet] = time.monotonic()
        if len(self._ended_at) > 1024:  # bounded: keep the recent ones
            recent = sorted(self._ended_at.items(), key=lambda item: item[1])[-512:]
            self._ended_at = dict(recent)
        start, job = opened
        blocked = max(time.monotonic() - start, self.threshold)
        if job is not None:
            runs = job._run_record()
            first = runs.blocked is None
            runs.blocked = (runs.blocked or 0.0) + blocked
            if runs.sink is not None:  # a shared store: every process sees it
                runs.sink.save_meta(job)
            if first:
                logger.warning(
                    "job %s (%s) blocked the event loop for %.2f s; run it with "
                    "executor='thread' or make it cooperative",
                    job.id,
                    job.name,
                    blocked,
                )
        else:
            logger.warning(
                "%r (not a taskrun job) blocked the event loop for %.2f s; make it "
                "cooperative (gevent.monkey.patch_all() first) or move it to a thread",
                greenlet,
                blocked,
            )
        if signals.loop_blocked.receivers:
            signals.send(signals.loop_blocked, self._sender, job=job, seconds=blocked)
