"""The Celery app a runner with a broker publishes to and ``taskrun worker`` consumes.

Tuned for taskrun's use of Celery as a carrier only:

* taskrun keeps each job's state in its own record (:mod:`.records`), so
  Celery stores no results (``task_ignore_result``) and tracks no STARTED:
  no result-backend round trip and no per-job subscription.  The result
  backend (needed for nothing but revokes' bookkeeping) shares one
  connection pool (``result_backend_thread_safe``).
* At least once: ``task_acks_late`` with ``task_reject_on_worker_lost``, so a
  job whose worker is killed runs again on another worker; Redis hands an
  unacknowledged message on after ``visibility_timeout`` seconds, which is
  why longer waits are refused (:mod:`.limits`).
* JSON only, both ways.
"""

from __future__ import annotations

from celery import Celery

__all__ = ["RUN_TASK", "make_app", "queue_name"]

#: The one Celery task every taskrun job is carried by.
RUN_TASK = "taskrun.run"


def queue_name(name: str) -> str:
    """Return the Celery queue of the runner named ``name``."""
    return f"taskrun.{name}"


def make_app(url: str, name: str, visibility_timeout: float) -> Celery:
    """Return a Celery app on the Redis at ``url`` for the runner named ``name``.

    Opens no connection until the first publish or the worker's start.
    """
    app = Celery(f"taskrun-{name}", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_name(name),
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_track_started=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        result_backend_thread_safe=True,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            # Look for messages of dead workers every few seconds (one ZRANGE), not every
            # 100 s (kombu's default interval times its throttle).
            "unacked_restore_interval": max(1, min(10, int(visibility_timeout / 3))),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # A publish to a Redis that is down fails at once, with taskrun's message.
        task_publish_retry=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app
