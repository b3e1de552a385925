"""Shared helpers for the CLI tests: run the CLI in-process, and the installed executable's path."""

from __future__ import annotations

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
