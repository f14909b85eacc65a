"""Try the example app: ``python -m example_app`` serves it with an SMTP server that saves emails.

Starts ``example_app.mailsink`` as a child process on ``--smtp-port``, serves
the app with gevent's WSGI server on ``--host``/``--port`` (default
``127.0.0.1:8000``) and runs the app's taskrun runner in this process. Stop
it with Ctrl-C: requests and jobs in flight get ``--grace`` seconds to
finish, then the SMTP server stops too.  Port 0 picks a free port.
"""

from gevent import monkey

# First, before anything else is imported: sockets, ssl and time.sleep must be
# gevent's in every module, or a blocking call stalls every request and job.
monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import gevent  # noqa: E402

from example_app import create_app  # noqa: E402
from example_app.mailsink import READY  # noqa: E402
from taskrun.wsgi import serve  # noqa: E402

logger = logging.getLogger("example_app")

#: Seconds the SMTP server may take to come up, and to go down.
SINK_TIMEOUT = 15.0


def free_port(host: str) -> int:
    """Return a port on ``host`` that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def start_mailsink(host: str, port: int, folder: str) -> subprocess.Popen[str]:
    """Start the SMTP server that saves emails to ``folder``; return once it accepts mail.

    :raises SystemExit: if it does not come up within :data:`SINK_TIMEOUT` seconds.
    """
    command = [sys.executable, "-m", "example_app.mailsink", "--host", host]
    command += ["--port", str(port), "--dir", folder]
    sink = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = ""
    try:
        with gevent.Timeout(SINK_TIMEOUT):
            line = sink.stdout.readline() if sink.stdout is not None else ""
    except gevent.Timeout:
        pass
    if not line.startswith(READY):
        stop_mailsink(sink)
        raise SystemExit(
            f"the SMTP server did not start on {host}:{port} within {SINK_TIMEOUT} s; "
            "is the port taken? pick another with --smtp-port"
        )
    return sink


def stop_mailsink(sink: subprocess.Popen[str]) -> None:
    """Stop the SMTP server: SIGTERM, then SIGKILL if it lingers."""
    sink.terminate()
    try:
        sink.wait(timeout=SINK_TIMEOUT)
    except subprocess.TimeoutExpired:
        sink.kill()
        sink.wait(timeout=SINK_TIMEOUT)
    if sink.stdout is not None:
        sink.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the SMTP server and serve the app until Ctrl-C or SIGTERM; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--data-dir", help="database, uploads and emails (default: instance/)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to finish on stop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    port = args.port or free_port(args.host)
    smtp_port = args.smtp_port or free_port(args.host)
    config = {"SMTP_HOST": args.host, "SMTP_PORT": smtp_port}
    config["BASE_URL"] = f"http://{args.host}:{port}"
    if args.data_dir:
        config["DATA_DIR"] = args.data_dir
    app = create_app(config)
    sink = start_mailsink(args.host, smtp_port, app.config["MAIL_DIR"])
    try:
        sys.stdout.write(
            f"\n  taskrun example app: open {config['BASE_URL']}/\n"
            f"  welcome emails are saved in {app.config['MAIL_DIR']}\n\n"
        )
        sys.stdout.flush()
        serve(app, bind=f"{args.host}:{port}", grace=args.grace)
    finally:
        stop_mailsink(sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
