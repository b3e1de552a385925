"""Commands that produce evidence: benchmark and demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ._common import DIR, FILE, cli, console, err_console, rich_rows, threads_option

__all__ = ["benchmark_cmd", "demo_cmd"]


@cli.command("demo")
@threads_option
@click.option("--out", "-o", type=DIR, default=Path("demo_out"),
              help="Results folder (report.md, results.json, plots).")
def demo_cmd(out: Path) -> None:
    """The main job, small: simulate a log, train HarmonRank and every baseline over 3 seeds, print the table.

    Runs the packaged config resources/demo.toml (a reduced benchmarks/configs/default.toml).
    """
    from importlib import resources

    from ..study.benchmark import load_benchmark_config, run_benchmark
    from ..study.report import verdict

    with resources.as_file(resources.files("harmonrank").joinpath("resources/demo.toml")) as path:
        cfg = load_benchmark_config(path)
    results = run_benchmark(cfg, out, on_event=lambda msg: err_console.print(msg, highlight=False))
    _print_summary(results)
    console.print("\n".join(verdict(results)), highlight=False)
    console.print(f"full report: {out / 'report.md'}")


@cli.command("benchmark")
@threads_option
@click.option("--config", "-c", "bench_config", type=FILE, default=None,
              help="Benchmark TOML ([data], [train], [benchmark]); see benchmarks/configs/.")
@click.option("--out", "-o", type=DIR, required=True, help="Results folder (report.md, results.json, plots).")
@click.option("--rows", type=int, default=None, help="Override: simulated rows.")
@click.option("--seeds", default=None, help="Override: comma-separated seeds, e.g. 0,1,2.")
@click.option("--rankers", default=None, help="Override: comma-separated ranker names.")
@click.option("--data", "-d", type=FILE, default=None, help="Override: benchmark on this file instead.")
@click.option("--dataset-config", "config", type=FILE, default=None, help="Dataset config (TOML) of --data.")
def benchmark_cmd(bench_config: Path | None, out: Path, rows: int | None, seeds: str | None,
                  rankers: str | None, data: Path | None, config: Path | None) -> None:
    """Compare every ranker on one time-split dataset, over several seeds, and write a report."""
    from ..study.benchmark import load_benchmark_config, run_benchmark

    overrides: dict[str, Any] = {"rows": rows, "path": str(data) if data else None,
                                 "dataset_config": str(config) if config else None}
    if seeds:
        try:
            overrides["seeds"] = tuple(int(x) for x in seeds.split(","))
        except ValueError as err:
            raise ConfigError(f"--seeds must be comma-separated integers like 0,1,2. Got {seeds!r} instead.") from err
    if rankers:
        overrides["rankers"] = tuple(x.strip() for x in rankers.split(","))
    cfg = load_benchmark_config(bench_config, **overrides)
    results = run_benchmark(cfg, out, on_event=lambda msg: err_console.print(msg, highlight=False))
    _print_summary(results)


def _print_summary(results: dict[str, Any]) -> None:
    objs = results["objectives"]
    rows = []
    boot = results["bootstrap_vs_baseline"]
    for r in results["summary"]:
        row: dict[str, Any] = {"ranker": r["ranker"], **{o: r[f"auc_{o}"] for o in objs},
                               "AUC-sum": r["auc_sum"], "±": r["auc_sum_std"]}
        b = boot.get(r["ranker"])
        row["Δ vs baseline [95% CI]"] = f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]" if b else "—"
        rows.append(row)
    console.print(rich_rows("test AUC (mean over seeds)", rows))
