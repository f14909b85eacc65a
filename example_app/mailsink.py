"""A development SMTP server that saves every message it accepts as a ``.eml`` file.

Run it as its own process (aiosmtpd runs on asyncio, which does not mix with
a gevent-patched process)::

    python -m example_app.mailsink --port 8025 --dir instance/mail

It prints one line, ``mailsink ready on HOST:PORT``, once it accepts
connections (``--port 0`` picks a free port: the line names it), and runs
until SIGTERM or SIGINT.  A message is written to a
temporary name and renamed, so a reader never sees half of one; the server
answers ``250`` only after the file is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

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
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port (%(default)s)")
    parser.add_argument("--dir", type=Path, default=Path("mail"), help="where messages go")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(SaveToFolder(args.dir), args.host, args.port))
    return 0


async def _serve(handler: SaveToFolder, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(lambda: SMTP(handler, loop=loop), host=host, port=port)
    bound = server.sockets[0].getsockname()[1]  # the real port when asked for port 0
    try:
        sys.stdout.write(f"{READY} {host}:{bound}, saving to {handler.folder}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


if __name__ == "__main__":
    sys.exit(main())
