"""Metrics under gunicorn: a scrape of any one worker returns the whole machine's totals.

A real gunicorn with three ``taskrun.gunicorn.GeventWorker`` workers serves
``tests/apps/metrics_app.py`` on 127.0.0.1, the workers sharing one SQLite
store; jobs are enqueued over HTTP until several workers have run some, and
one worker's ``/taskrun/metrics`` must count them all.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import (
    app_env,
    gunicorn_command,
    gunicorn_url,
    http_get,
    run_process,
    wait_for,
    wait_workers_ready,
)

BOOT = 40.0  # seconds a gunicorn gets to start its workers
WORKERS = 3
BATCH = 5  # jobs per request


def succeeded(text: str) -> float:
    """The sum of ``taskrun_jobs_total{state="SUCCESS"}`` over tasks in a Prometheus page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "taskrun_jobs_total" and sample.labels.get("state") == "SUCCESS"
    )


def gauge(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_workers_scrape_counts_the_jobs_of_every_worker(tmp_path: Path) -> None:
    env = app_env(tmp_path / "out.txt", TASKRUN_TEST_STORE=str(tmp_path / "jobs.db"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = gunicorn_command("metrics_app:create_app()", "-w", str(WORKERS))
    with run_process(command, env, tmp_path / "gunicorn.log") as served:
        url = gunicorn_url(served, BOOT)
        wait_workers_ready(served, WORKERS, BOOT)
        directory = Path(http_get(f"{url}/dir")[1].split()[0])
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700

        # Requests land on whichever worker accepts first: send batches until
        # at least two workers have enqueued (and so run) jobs.
        enqueued_by: list[int] = []
        for _ in range(200):
            enqueued_by.append(int(http_get(f"{url}/enqueue?n={BATCH}")[1]))
            if len(enqueued_by) >= 10 and len(set(enqueued_by)) >= 2:
                break
        total = BATCH * len(enqueued_by)
        assert len(set(enqueued_by)) >= 2, served.log_text()

        # Each worker flushes its tallies every second: wait for all of them.
        def scraped_all() -> tuple[str, str] | None:
            status, text, headers = http_get(f"{url}/taskrun/metrics")
            assert status == 200, text
            return (text, headers["x-worker"]) if succeeded(text) >= total else None

        text, _worker = wait_for(scraped_all, 20, f"a scrape counting all {total} jobs")
        assert succeeded(text) == total
        assert gauge(text, "taskrun_jobs_running") == 0
        assert 'taskrun_job_duration_seconds_count{task="metrics_app.noop"}' in text

        # The blocking warning is on by default in the gunicorn worker (0.5 s).
        job_id = http_get(f"{url}/block")[1].split()[0]
        served.wait_log(rf"job {job_id} \(metrics_app.stuck\) blocked the event loop for", 20)

        served.signal(signal.SIGTERM)
        assert served.wait_exit(timeout=30) == 0, served.log_text()
    assert not directory.exists(), os.listdir(directory)
