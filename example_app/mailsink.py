"""A development SMTP server that saves every message it accepts as a ``.eml`` file.

Run it as its own process (aiosmtpd runs asyncio on a thread, which does not
mix with a gevent-patched process)::

    python -m example_app.mailsink --port 8025 --dir instance/mail

It prints one line, ``mailsink ready on HOST:PORT``, once it accepts
connections, and runs until SIGTERM or SIGINT.  A message is written to a
temporary name and renamed, so a reader never sees half of one; the server
answers ``250`` only after the file is in place.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

READY = "mailsink ready on"


class SaveToFolder:
    """An aiosmtpd handler that writes each message to ``folder/<n>.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Save the message; aiosmtpd calls this once per message."""
        name = f"{os.getpid()}-{next(self._numbers):06d}.eml"
        temporary = self.folder / f".{name}.tmp"
        temporary.write_bytes(envelope.original_content or envelope.content)
        os.replace(temporary, self.folder / name)
        return "250 Message accepted for delivery"


def main(argv: Sequence[str] | None = None) -> int:
    """Serve SMTP on ``--host``/``--port`` until SIGTERM or SIGINT; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m example_app.mailsink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("mail"), help="where messages go")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller = Controller(SaveToFolder(args.dir), hostname=args.host, port=args.port)
    controller.start()
    try:
        sys.stdout.write(f"{READY} {args.host}:{args.port}, saving to {args.dir}\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
