"""The ``harmonrank`` command line. It parses arguments and prints; all ML logic lives in the library."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from .benchmark import compare_rankings, reference_rankings
from .config import load_config
from .data import atomic_path, read_table
from .errors import ConfigError, DataError, HarmonRankError
from .metrics import auc_sum, objective_table
from .models.formula import parse_weights, weighted_product, weights_vector
from .report import markdown_table, summarize_file, summary_markdown
from .simulate import OBJECTIVES, SimulatorConfig, simulate

__all__ = ["cli", "main"]

# wide tables when output is piped (CI logs, files); a terminal keeps its own width
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
console = Console(width=_WIDTH)
err_console = Console(stderr=True)

FILE = click.Path(path_type=Path, dir_okay=False)
config_option = click.option(
    "--config", "-c", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Dataset config (TOML). Default: the simulator's config.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="harmonrank")
def cli() -> None:
    """harmonrank: learned multi-objective ensemble ranking (HarmonRank) for recommender systems."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        disable=not err_console.is_terminal and os.environ.get("HARMONRANK_PROGRESS") != "1",
    )


def write_json(obj: Any, path: Path) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp, final = atomic_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _rich_rows(title: str, rows: list[dict[str, Any]]) -> RichTable:
    t = RichTable(title=title)
    for c in rows[0]:
        t.add_column(c, justify="left" if c in ("objective", "ranker") else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                    for v in r.values()])
    return t


def _parse_rates(items: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--rate must be 'objective=rate' (e.g. buy=0.0003). Got {item!r} instead.")
        if name not in OBJECTIVES:
            raise ConfigError(f"--rate names unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
        try:
            rates[name] = float(value)
        except ValueError as err:
            raise ConfigError(f"--rate {name}: {value!r} is not a number") from err
    return rates


@cli.command("simulate")
@click.option("--out", "-o", type=FILE, required=True, help="Parquet file to write.")
@click.option("--rows", type=int, default=200_000, help="Impressions to generate.")
@click.option("--seed", type=int, default=0, help="Seed: fixes the whole dataset.")
@click.option("--users", type=int, default=0, help="Number of users (0: rows // 150, at least 500).")
@click.option("--streamers", type=int, default=2_000, help="Number of streamers (live rooms).")
@click.option("--min-candidates", type=int, default=20, help="Fewest candidates per request.")
@click.option("--max-candidates", type=int, default=100, help="Most candidates per request.")
@click.option("--days", type=int, default=14, help="Days spanned by the log (requests in time order).")
@click.option("--rate", multiple=True, metavar="NAME=RATE",
              help="Base rate of an objective, e.g. --rate buy=0.0003 (repeatable).")
@click.option("--correlation", type=float, default=0.7, help="0..1: strength of shared latent factors.")
@click.option("--noise", type=float, default=1.0, help="Upstream prediction noise multiplier (1 = realistic).")
@click.option("--shared-noise", type=float, default=0.4, help="0..1: share of prediction noise common to all.")
@click.option("--heterogeneity", type=float, default=1.0, help="Segment differences in prediction quality.")
@click.option("--chunk-rows", type=int, default=500_000, help="Rows per Parquet row group (bounds memory).")
@click.option("--summary/--no-summary", default=True, help="Print the dataset summary afterwards.")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the summary as JSON.")
def simulate_cmd(out: Path, rows: int, seed: int, users: int, streamers: int, min_candidates: int,
                 max_candidates: int, days: int, rate: tuple[str, ...], correlation: float, noise: float,
                 shared_noise: float, heterogeneity: float, chunk_rows: int, summary: bool,
                 json_out: Path | None) -> None:
    """Generate a simulated live-streaming e-commerce log in the data contract (Parquet)."""
    cfg = SimulatorConfig(
        rows=rows, users=users, streamers=streamers, min_candidates=min_candidates,
        max_candidates=max_candidates, days=days, rates=_parse_rates(list(rate)), correlation=correlation,
        noise=noise, shared_noise=shared_noise, heterogeneity=heterogeneity, seed=seed, chunk_rows=chunk_rows,
    )
    with _progress() as progress:
        task = progress.add_task("simulate", total=rows)
        info = simulate(out, cfg, progress=lambda done, total: progress.update(task, completed=done))
    err_console.print(f"wrote {info['rows']:,} rows to {out} in {info['seconds']:.1f}s")
    if summary or json_out:
        s = summarize_file(out, load_config(None))
        s["simulator"] = cfg.to_dict()
        if summary:
            console.print(summary_markdown(s))
        if json_out:
            write_json(s, json_out)


@cli.command("describe")
@click.option("--data", "-d", type=FILE, required=True, help="Parquet or CSV file in the data contract.")
@config_option
@click.option("--max-rows", type=int, default=1_000_000, help="Summarise at most this many rows.")
def describe_cmd(data: Path, config: Path | None, max_rows: int) -> None:
    """Print a dataset's label rates, label correlations and the AUC of each p_* (and true_*)."""
    console.print(summary_markdown(summarize_file(data, load_config(config), max_rows=max_rows)))


@cli.command("evaluate")
@click.option("--data", "-d", type=FILE, required=True, help="Parquet or CSV file in the data contract.")
@config_option
@click.option("--score-column", default=None, help="Rank by this column (higher = better).")
@click.option("--formula", default=None,
              help="Rank by the weighted product prod p_m^w_m, e.g. 'click=1,buy=2'. Default: all weights 1.")
@click.option("--group", type=click.Choice(["user", "request"]), default="user", help="GAUC groups.")
@click.option("--json", "json_out", type=FILE, default=None, help="Write the results as JSON.")
def evaluate_cmd(data: Path, config: Path | None, score_column: str | None, formula: str | None, group: str,
                 json_out: Path | None) -> None:
    """Per-objective AUC / GAUC and AUC-sum of one ranking (a score column or a weighted-product formula)."""
    cfg = load_config(config)
    if score_column and formula:
        raise ConfigError("give --score-column or --formula, not both")
    table = read_table(data, cfg)
    if table.labels is None:
        raise DataError(f"{data}: no labels to evaluate against")
    if score_column:
        ranking, described = _score_column(data, score_column), f"column {score_column!r}"
    else:
        w = parse_weights(formula, cfg.names) if formula else dict.fromkeys(cfg.names, 1.0)
        ranking = weighted_product(table.scores, weights_vector(w, cfg.names))
        described = "prod " + " * ".join(f"p_{m}^{v:g}" for m, v in w.items() if v)
    groups = table.user if group == "user" else table.request
    rows = objective_table(ranking, table.labels, cfg.names, group=groups)
    total = auc_sum(ranking, table.labels, cfg.weights)
    console.print(_rich_rows(f"{described} on {data.name} ({len(table):,} rows)", rows))
    console.print(f"AUC-sum (weights {', '.join(f'{w:g}' for w in cfg.weights)}): {total:.4f}")
    if json_out:
        write_json({"ranking": described, "rows": len(table), "group": group, "objectives": rows,
                    "auc_sum": total}, json_out)


@cli.command("demo")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), default=Path("demo_out"),
              help="Folder for the simulated data and the report.")
@click.option("--rows", type=int, default=300_000, help="Impressions to simulate.")
@click.option("--seed", type=int, default=0, help="Seed of the simulation.")
def demo_cmd(out: Path, rows: int, seed: int) -> None:
    """Simulate a log, split it by time and compare rankings on the test slice (AUC / GAUC / AUC-sum)."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "sim.parquet"
    cfg = SimulatorConfig(rows=rows, seed=seed)
    with _progress() as progress:
        task = progress.add_task("simulate", total=rows)
        simulate(data, cfg, progress=lambda done, total: progress.update(task, completed=done))
    table = read_table(data, load_config(None))
    _, _, test = table.split_by_time((0.6, 0.2, 0.2))
    rows_out = compare_rankings(test, reference_rankings(test))
    cols = ["ranker"] + [f"auc_{m}" for m in test.objectives] + ["auc_sum", "gauc_sum"]
    console.print(_rich_rows(f"test slice: {len(test):,} impressions (last 20% by time)",
                             [{c: r[c] for c in cols} for r in rows_out]))
    md = ["# harmonrank demo", "", f"`harmonrank demo --rows {rows} --seed {seed}`: simulated {rows:,} "
          f"impressions, evaluated on the last 20% by time ({len(test):,} rows).", "",
          markdown_table(rows_out, cols), ""]
    tmp, final = atomic_path(out / "report.md")
    tmp.write_text("\n".join(md), encoding="utf-8")
    os.replace(tmp, final)
    write_json({"rows": rows, "seed": seed, "test_rows": len(test), "rankings": rows_out}, out / "results.json")
    err_console.print(f"report: {final}")


def _score_column(path: Path, column: str) -> np.ndarray:
    from .data import _batches, _schema_names

    if column not in _schema_names(path):
        raise DataError(f"--score-column {column!r} is not a column of {path}")
    vals = np.concatenate([np.asarray(b.column(0).to_numpy(zero_copy_only=False), dtype=np.float64)
                           for b in _batches(path, [column], 262_144)])
    bad = ~np.isfinite(vals)
    if bad.any():
        raise DataError(f"column {column!r} has {int(bad.sum())} NaN/inf values; a ranking must be finite")
    return vals


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input prints one line naming the cause and exits 2."""
    logging.basicConfig(level=os.environ.get("HARMONRANK_LOG", "WARNING"), format="%(levelname)s %(message)s")
    try:
        cli.main(args=argv, prog_name="harmonrank", standalone_mode=False)
    except HarmonRankError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
