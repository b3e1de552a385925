"""What every command shares: the click group, consoles, progress bars, table printing, common options."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from ..errors import ConfigError
from ..threads import set_threads

__all__ = ["DIR", "FILE", "Reporter", "cli", "config_option", "console", "err_console", "rich_rows", "threads_option"]

# wide tables when output is piped (CI logs, files); a terminal keeps its own width
_COLUMNS = os.environ.get("COLUMNS", "200")
_WIDTH = None if sys.stdout.isatty() else int(_COLUMNS) if _COLUMNS.isdigit() else 200
console = Console(width=_WIDTH)
err_console = Console(stderr=True)

FILE = click.Path(path_type=Path, dir_okay=False)
DIR = click.Path(path_type=Path, file_okay=False)
config_option = click.option(
    "--config", "-c", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Dataset config (TOML). Default: the simulator's config.",
)


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    set_threads(value)


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, expose_value=False, is_eager=True, callback=_apply_threads,
    help="Threads for torch, BLAS and LightGBM. Default: $HARMONRANK_THREADS, else 1 (docs/performance.md).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="harmonrank")
def cli() -> None:
    """harmonrank: learned multi-objective ensemble ranking (HarmonRank) for recommender systems."""


class _RateColumn(ProgressColumn):
    """Units per second of a task (blank until rich has a speed estimate)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:,.0f} {self.unit}/s")


class Reporter:
    """Progress of one long task on stderr: a rich bar (counts, rate, ETA) on a terminal (or with
    HARMONRANK_PROGRESS=1), otherwise a plain line at most every ``every`` seconds (HARMONRANK_PROGRESS_EVERY,
    default 10) and one at the end, so logs show progress without control characters.

    >>> with Reporter("predict", "rows", total=1000) as rep:  # doctest: +SKIP
    ...     rep.update(500)
    """

    def __init__(self, description: str, unit: str, total: int | None = None, every: float | None = None) -> None:
        self.description, self.unit, self.total = description, unit, total
        if every is None:
            env = os.environ.get("HARMONRANK_PROGRESS_EVERY", "10")
            try:
                every = float(env)
            except ValueError as err:
                raise ConfigError(f"HARMONRANK_PROGRESS_EVERY must be seconds. Got {env!r} instead.") from err
        self.every = every
        self.rich = err_console.is_terminal or os.environ.get("HARMONRANK_PROGRESS") == "1"
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._done = 0
        self._t0 = self._last = time.monotonic()

    def __enter__(self) -> Reporter:
        if self.rich:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(self.unit), TaskProgressColumn(), _RateColumn(self.unit),
                TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def update(self, done: int, total: int | None = None, description: str | None = None) -> None:
        """``done`` units so far (of ``total``, if it changed); ``description`` renames the task."""
        self._done = done
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=self.total, description=self.description)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self._done / max(now - self._t0, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({self._done / self.total:.0%})" if self.total else ""
        err_console.print(f"{self.description}: {self._done:,}{of} {self.unit}{pct}, {rate:,.0f} {self.unit}/s",
                          highlight=False)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif exc_type is None and self._done:
            self._line(time.monotonic())


def rich_rows(title: str, rows: list[dict[str, Any]]) -> RichTable:
    """Dict rows as a terminal table (floats with 4 decimals, ints with separators)."""
    t = RichTable(title=title)
    for c in rows[0]:
        t.add_column(c, justify="left" if c in ("objective", "ranker") else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                    for v in r.values()])
    return t
