"""Prometheus metrics of a runner, fed by :mod:`taskrun.signals`.

Needs the ``metrics`` extra (``pip install 'taskrun-gevent[metrics]'``).

Importing this module imports ``prometheus_client``; taskrun imports it only
when metrics are on (``TASKRUN_METRICS = True``, or a call of
:func:`runner_metrics`).  Series:

======================================  =========  ==========================================
name                                    type       what
======================================  =========  ==========================================
``taskrun_jobs_total{task,state}``      counter    jobs finished: SUCCESS, FAILURE, CANCELLED
``taskrun_job_retries_total{task}``     counter    attempts that failed and will run again
``taskrun_job_duration_seconds{task}``  histogram  how long each attempt ran
``taskrun_job_wait_seconds{task}``      histogram  from due (accepted, eta or retry) to start
``taskrun_jobs_running``                gauge      jobs running now
``taskrun_jobs_waiting``                gauge      due jobs waiting for a free worker
``taskrun_jobs_scheduled``              gauge      jobs waiting for their eta or a retry
``taskrun_periodic_skipped_total``      counter    periodic slots not run, ``{task,reason}``
``taskrun_loop_blocked_seconds``        histogram  stretches a greenlet held the event loop
``taskrun_store_commit_seconds``        histogram  the SQLite store writer's commits
======================================  =========  ==========================================

**Cost.**  A job costs a counter and two histograms; updating
``prometheus_client`` objects takes microseconds, as long as the job itself.
So each finished job only adds to plain per-task tallies, and the tallies go
into the Prometheus objects in bulk every :data:`FLUSH_EVERY` seconds and
before each scrape.

**Several processes.**  Under gunicorn each worker has its own runner; with
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
:class:`taskrun.gunicorn.GeventWorker` sets up) every worker writes its
values to files in that directory and a scrape of any worker sums them
all: counters and histograms over every worker that ever ran, gauges over
the live ones (``livesum``).  Another worker's latest second may be missing
from a scrape (it has not flushed yet).
"""

from __future__ import annotations

import logging
import weakref
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

import gevent
from gevent.greenlet import Greenlet
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from taskrun import signals
from taskrun.jobs import Job, JobState
from taskrun.supervision import Supervisor, guarded

if TYPE_CHECKING:
    from taskrun.runner import TaskRunner

__all__ = ["CONTENT_TYPE", "RunnerMetrics", "runner_metrics"]

logger = logging.getLogger(__name__)

#: The ``Content-Type`` of :meth:`RunnerMetrics.render`'s text.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds between two flushes of the tallies (and samples of the gauges).
FLUSH_EVERY = 1.0
INF = float("inf")
JOB_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, INF)
BLOCKED_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, INF)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, INF)

_by_runner: weakref.WeakKeyDictionary[Any, RunnerMetrics] = weakref.WeakKeyDictionary()


def runner_metrics(runner: TaskRunner) -> RunnerMetrics:
    """Return the metrics of ``runner``, connecting them on the first call; no side effect else.

    One :class:`RunnerMetrics` per runner, however often it is called (an
    app factory calling ``init_app`` per test), so nothing is counted twice.
    """
    found = _by_runner.get(runner)
    if found is None:
        found = _by_runner[runner] = RunnerMetrics(runner)
    return found


class _Buckets:
    """A histogram's counts per bucket and sum, kept in plain numbers until flushed."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0

    def add(self, bounds: tuple[float, ...], value: float) -> None:
        # Prometheus counts a value in the first bucket whose bound is >= it.
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value


class _Tally:
    """What one task's jobs did since the last flush."""

    __slots__ = ("finished", "retries", "run", "wait")

    def __init__(self) -> None:
        self.finished: dict[JobState, int] = {}
        self.retries = 0
        self.run = _Buckets(len(JOB_BUCKETS))
        self.wait = _Buckets(len(JOB_BUCKETS))


class RunnerMetrics:
    """The Prometheus series of one runner; made by :func:`runner_metrics`.

    Its receivers are connected to the runner's signals for as long as the
    runner lives.  While the runner runs, a greenlet flushes the tallies
    every :data:`FLUSH_EVERY` seconds; :meth:`render` flushes first too.
    """

    def __init__(self, runner: TaskRunner) -> None:
        self._runner = weakref.ref(runner)
        #: Whether values go to ``PROMETHEUS_MULTIPROC_DIR`` (read when prometheus_client loaded).
        self.multiprocess = bool(getattr(values.ValueClass, "_multiprocess", False))
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.jobs = Counter(
            "taskrun_jobs", "Jobs finished, by outcome.", ["task", "state"], registry=registry
        )
        self.retries = Counter(
            "taskrun_job_retries",
            "Failed attempts that will run again.",
            ["task"],
            registry=registry,
        )
        self.duration = Histogram(
            "taskrun_job_duration_seconds",
            "How long each attempt of a job ran.",
            ["task"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "taskrun_job_wait_seconds",
            "From when a job was due (accepted, or its eta or retry time) to its start.",
            ["task"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        # Summed over the live processes (multiprocess mode).
        self.running = Gauge(
            "taskrun_jobs_running",
            "Jobs running now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "taskrun_jobs_waiting",
            "Due jobs waiting for a free worker.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.scheduled = Gauge(
            "taskrun_jobs_scheduled",
            "Jobs waiting for their eta or a retry.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.periodic_skipped = Counter(
            "taskrun_periodic_skipped",
            "Periodic slots that did not run, by reason (full: no room; overlap: still running).",
            ["task", "reason"],
            registry=registry,
        )
        self.loop_blocked = Histogram(
            "taskrun_loop_blocked_seconds",
            "Stretches a greenlet held the event loop (with blocking_warning on).",
            buckets=BLOCKED_BUCKETS,
            registry=registry,
        )
        self.store_commit = Histogram(
            "taskrun_store_commit_seconds",
            "Commits of the SQLite store's writer.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        # Bulk updates go through a histogram's buckets; if a future
        # prometheus_client hides them, each value is observed as it comes.
        self._bulk = hasattr(self.loop_blocked, "_buckets") and hasattr(self.loop_blocked, "_sum")
        self._tallies: dict[str, _Tally] = {}
        self._flusher: Greenlet[..., None] | None = None
        self._supervisor = Supervisor("the metrics flusher", logger)
        for signal, receiver in (
            (signals.job_succeeded, self._finished),
            (signals.job_failed, self._finished),
            (signals.job_cancelled, self._finished),
            (signals.job_retrying, self._retrying),
            (signals.periodic_skipped, self._skipped),
            (signals.loop_blocked, self._blocked),
            (signals.runner_started, self._started),
            (signals.runner_stopped, self._stopped),
        ):
            signal.connect(receiver, sender=runner)
        signals.store_committed.connect(self._committed)
        if runner.is_running:
            self._started(runner)

    # -- receivers (in the greenlet where the job changed) ---------------------------

    def _tally(self, job: Job[Any]) -> _Tally:
        tally = self._tallies.get(job.task.name)
        if tally is None:
            tally = self._tallies[job.task.name] = _Tally()
        return tally

    def _finished(self, sender: object, job: Job[Any], exc: BaseException | None = None) -> None:
        # Once per job: plain arithmetic only, written out (no helper calls).
        tally = self._tallies.get(job.task.name)
        if tally is None:
            tally = self._tally(job)
        finished = tally.finished
        finished[job.state] = finished.get(job.state, 0) + 1
        runs = job._runs
        if runs is None or runs.started is None or runs.finished is None:
            return  # never started: nothing to time
        if not self._bulk:
            self._observe(job, runs.finished)
            return
        ran = runs.finished - runs.started
        buckets = tally.run
        buckets.counts[bisect_left(JOB_BUCKETS, ran)] += 1
        buckets.total += ran
        wait = runs.started - (runs.due_at or job._enqueued)
        wait = wait if wait > 0.0 else 0.0
        buckets = tally.wait
        buckets.counts[bisect_left(JOB_BUCKETS, wait)] += 1
        buckets.total += wait

    def _retrying(self, sender: object, job: Job[Any], exc: BaseException) -> None:
        tally = self._tally(job)
        tally.retries += 1
        runner = self._runner()
        end = runner.clock.time() if runner is not None else 0.0
        if not self._bulk:
            self._observe(job, end)
            return
        runs = job._runs
        if runs is not None and runs.started is not None:
            tally.run.add(JOB_BUCKETS, max(end - runs.started, 0.0))
        wait = job.wait_time
        if wait is not None:
            tally.wait.add(JOB_BUCKETS, wait)

    def _observe(self, job: Job[Any], end: float) -> None:
        runs = job._runs
        if runs is not None and runs.started is not None:
            self.duration.labels(job.task.name).observe(max(end - runs.started, 0.0))
        wait = job.wait_time
        if wait is not None:
            self.wait.labels(job.task.name).observe(wait)

    def _skipped(self, sender: object, task: Any, reason: str, **_: Any) -> None:
        self.periodic_skipped.labels(task.name, reason).inc()

    def _blocked(self, sender: object, seconds: float, **_: Any) -> None:
        self.loop_blocked.observe(seconds)

    def _committed(self, sender: object, seconds: float, **_: Any) -> None:
        runner = self._runner()
        if runner is not None and sender == getattr(runner.store, "path", None):
            self.store_commit.observe(seconds)

    def _started(self, sender: object, **_: Any) -> None:
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_loop)

    def _stopped(self, sender: object, **_: Any) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.kill(block=True, timeout=1)
        self.flush()  # what the drain finished, before the process exits

    # -- flushing ------------------------------------------------------------------

    def _flush_loop(self) -> None:
        while True:
            pause = guarded(self._supervisor, "flushing the tallies", self.flush)
            gevent.sleep(max(pause, FLUSH_EVERY))

    def flush(self) -> None:
        """Put the tallies into the Prometheus objects and sample the gauges; never blocks."""
        tallies, self._tallies = self._tallies, {}
        for task, tally in tallies.items():
            for state, count in tally.finished.items():
                self.jobs.labels(task, state.value).inc(count)
            if tally.retries:
                self.retries.labels(task).inc(tally.retries)
            self._add(self.duration.labels(task), tally.run)
            self._add(self.wait.labels(task), tally.wait)
        runner = self._runner()
        if runner is not None:
            dispatcher = runner._dispatcher
            self.running.set(dispatcher.running)
            self.waiting.set(dispatcher.backlog + dispatcher.overdue)
            self.scheduled.set(len(runner._scheduler))

    @staticmethod
    def _add(child: Histogram, buckets: _Buckets) -> None:
        if not any(buckets.counts):
            return
        for index, count in enumerate(buckets.counts):
            if count:
                child._buckets[index].inc(count)
        child._sum.inc(buckets.total)

    def render(self) -> bytes:
        """Flush, then return the Prometheus text of this process (multiprocess: the machine's)."""
        self.flush()
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
