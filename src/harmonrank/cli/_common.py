"""What every command shares: the click group, consoles, progress bars, table printing, common options."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table as RichTable

__all__ = ["DIR", "FILE", "cli", "config_option", "console", "err_console", "progress", "rich_rows"]

# wide tables when output is piped (CI logs, files); a terminal keeps its own width
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
console = Console(width=_WIDTH)
err_console = Console(stderr=True)

FILE = click.Path(path_type=Path, dir_okay=False)
DIR = click.Path(path_type=Path, file_okay=False)
config_option = click.option(
    "--config", "-c", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Dataset config (TOML). Default: the simulator's config.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="harmonrank")
def cli() -> None:
    """harmonrank: learned multi-objective ensemble ranking (HarmonRank) for recommender systems."""


def progress() -> Progress:
    """A progress bar on stderr (shown on a terminal, or when HARMONRANK_PROGRESS=1)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        disable=not err_console.is_terminal and os.environ.get("HARMONRANK_PROGRESS") != "1",
    )


def rich_rows(title: str, rows: list[dict[str, Any]]) -> RichTable:
    """Dict rows as a terminal table (floats with 4 decimals, ints with separators)."""
    t = RichTable(title=title)
    for c in rows[0]:
        t.add_column(c, justify="left" if c in ("objective", "ranker") else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                    for v in r.values()])
    return t
