"""The ``harmonrank`` command line: thin commands over public library functions.

Each command parses its options, calls the library and prints; no ML logic lives here. Commands are
grouped by what they serve: ``data`` (simulate, describe, data kuairand, upstream), ``models`` (train,
predict, evaluate) and ``study`` (benchmark, demo).
"""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.markup import escape

from ..errors import HarmonRankError
from . import data, models, serve, study  # noqa: F401  (registers the commands on the group)
from ._common import cli, err_console

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input prints one line naming the cause and exits 2."""
    logging.basicConfig(level=os.environ.get("HARMONRANK_LOG", "WARNING"), format="%(levelname)s %(message)s")
    try:
        cli.main(args=argv, prog_name="harmonrank", standalone_mode=False)
    except HarmonRankError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
