"""Shared test helpers: run the CLI in-process, the installed executable's path, a free loopback port."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from harmonrank.cli import main

EXE = str(Path(sys.executable).parent / "harmonrank")


def run(args: list[str]) -> int:
    """Run ``harmonrank ARGS`` in-process; return its exit status."""
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
