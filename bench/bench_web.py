"""Web benchmark: requests per second of a Flask view that enqueues a job, against one that doesn't.

Run through ``python bench/run.py web``.  Each measurement starts a fresh
server process (``taskrun.wsgi.Server``: gevent's pywsgi, Flask 3, a
started ``TaskRunner``, access log off) and a separate load-generator
process (gevent, ``CONNECTIONS`` concurrent HTTP/1.1 keep-alive connections
over raw sockets on 127.0.0.1), which warms up, then counts responses for
``SECONDS`` (at most ``MAX_REQUESTS``).  The view variants:

* ``nothing``: answers ``ok`` (the baseline);
* ``taskrun``: ``record.delay(n)`` of a trivial task, then ``ok``;
* ``gevent.spawn``: a bare ``gevent.spawn`` of the same function, for reference.

Variants alternate within each repeat; the ratio reported is the median of
the per-repeat ratios to ``nothing`` (pairs run seconds apart, so drift on a
shared machine cancels out).  Target: taskrun >= 0.85x.

The same file is the server and the load generator (``python bench/bench_web.py
serve VARIANT PORT`` / ``load PORT``); those roles are internal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
VARIANTS = ("nothing", "taskrun", "gevent.spawn")
CONNECTIONS = 32
WARMUP = 0.5
SECONDS = 2.5
MAX_REQUESTS = 200_000
TARGET = 0.85
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


# -- the server role -----------------------------------------------------------


def serve(variant: str, port: int) -> None:
    """Serve the Flask view of ``variant`` on 127.0.0.1:``port`` until SIGTERM."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from flask import Flask

    from taskrun import TaskRunner
    from taskrun.wsgi import Server

    app = Flask("bench_web")
    runner = TaskRunner(lock_path=None)
    runner.init_app(app)

    @runner.task
    def record(n: int) -> int:
        return n

    counter = iter(range(10**12))
    if variant == "taskrun":

        @app.get("/")
        def enqueue() -> str:
            record.delay(next(counter))
            return "ok"
    elif variant == "gevent.spawn":

        @app.get("/")
        def spawn() -> str:
            gevent.spawn(record.fn, next(counter))
            return "ok"
    else:

        @app.get("/")
        def nothing() -> str:
            next(counter)
            return "ok"

    Server(app, runner, bind=f"127.0.0.1:{port}", access_log=False, grace=5).serve_forever()


# -- the load-generator role -----------------------------------------------------


def load(port: int) -> None:
    """Drive 127.0.0.1:``port`` with keep-alive connections; print the JSON result."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    done = [0]
    counting = [False]
    stop_at = [time.monotonic() + WARMUP + SECONDS + 60]

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            buffer = b""
            while time.monotonic() < stop_at[0] and done[0] < MAX_REQUESTS:
                conn.sendall(REQUEST)
                while b"\r\n\r\n" not in buffer:
                    buffer += _recv(conn)
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = _content_length(head)
                while len(buffer) < length:
                    buffer += _recv(conn)
                buffer = buffer[length:]
                if counting[0]:
                    done[0] += 1

    clients = [gevent.spawn(client) for _ in range(CONNECTIONS)]
    gevent.sleep(WARMUP)
    counting[0] = True
    started = time.monotonic()
    stop_at[0] = started + SECONDS
    gevent.joinall(clients, timeout=SECONDS + 10, raise_error=True)
    elapsed = time.monotonic() - started
    sys.stdout.write(json.dumps({"requests": done[0], "seconds": elapsed}) + "\n")


def _recv(conn: socket.socket) -> bytes:
    data = conn.recv(65536)
    if not data:
        raise ConnectionError("the server closed the connection")
    return data


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError(f"response without Content-Length: {head!r}")


# -- the driver (run.py) ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the bench server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the bench server did not listen on port {port} within {timeout} s")


def measure(variant: str) -> float:
    """Run one server of ``variant`` under load; return its requests per second."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    server = subprocess.Popen(
        [sys.executable, str(HERE), "serve", variant, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, server)
        done = subprocess.run(
            [sys.executable, str(HERE), "load", str(port)],
            env=env,
            capture_output=True,
            timeout=WARMUP + SECONDS + 60,
            check=True,
        )
        result = json.loads(done.stdout)
        return float(result["requests"]) / float(result["seconds"])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def main(repeats: int = 5) -> dict[str, float]:
    """Measure every variant ``repeats`` times, print a Markdown table, return the ratios."""
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            rates[variant].append(measure(variant))
    baseline = rates["nothing"]
    ratios = {
        variant: statistics.median(r / b for r, b in zip(rates[variant], baseline, strict=True))
        for variant in VARIANTS
    }
    lines = [
        f"Flask view on taskrun.wsgi.Server, {CONNECTIONS} keep-alive connections, "
        f"{SECONDS} s per run, median of {repeats} runs",
        "",
        "| view enqueues | req/s (median) | ratio to nothing | target | met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for variant in VARIANTS:
        target, met = "", ""
        if variant == "taskrun":
            target = f">= {TARGET:.2f}x"
            met = "yes" if ratios[variant] >= TARGET else "NO"
        lines.append(
            f"| {variant} | {statistics.median(rates[variant]):,.0f} "
            f"| {ratios[variant]:.2f}x | {target} | {met} |"
        )
    print("\n".join(lines))  # noqa: T201
    return ratios


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif role == "load":
        load(int(sys.argv[2]))
    else:
        sys.exit("run the benchmarks with: python bench/run.py web")
