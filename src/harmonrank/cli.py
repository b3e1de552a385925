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

from .config import load_config
from .data import atomic_path, read_table
from .errors import ConfigError, DataError, HarmonRankError
from .metrics import auc_sum, objective_table
from .models.formula import parse_weights, weighted_product, weights_vector
from .report import summarize_file, summary_markdown
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
@click.option("--model", "-m", "model_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Rank by a trained model (run folder of `harmonrank train`).")
@click.option("--group", type=click.Choice(["user", "request"]), default="user", help="GAUC groups.")
@click.option("--json", "json_out", type=FILE, default=None, help="Write the results as JSON.")
def evaluate_cmd(data: Path, config: Path | None, score_column: str | None, formula: str | None,
                 model_dir: Path | None, group: str, json_out: Path | None) -> None:
    """Per-objective AUC / GAUC and AUC-sum of one ranking: a trained model, a score column, or a
    weighted-product formula (default: all weights 1)."""
    if sum(x is not None for x in (score_column, formula, model_dir)) > 1:
        raise ConfigError("give one of --model, --score-column or --formula")
    model = None
    if model_dir is not None:
        from .estimator import load_ranker

        model = load_ranker(model_dir)
    cfg = load_config(config) if config or model is None else model.config_
    table = read_table(data, cfg)
    if table.labels is None:
        raise DataError(f"{data}: no labels to evaluate against")
    if model is not None:
        ranking, described = model.predict(table), f"model {model_dir} ({model.name})"
    elif score_column:
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
              help="Results folder (report.md, results.json, plots).")
def demo_cmd(out: Path) -> None:
    """The main job, small: simulate a log, train HarmonRank and every baseline over 3 seeds, print the table.

    Runs the packaged config resources/demo.toml (a reduced benchmarks/configs/default.toml).
    """
    from importlib import resources

    from .benchmark import load_benchmark_config, run_benchmark

    with resources.as_file(resources.files("harmonrank").joinpath("resources/demo.toml")) as path:
        cfg = load_benchmark_config(path)
    results = run_benchmark(cfg, out, on_event=lambda msg: err_console.print(msg, highlight=False))
    _print_summary(results)
    from .report import _verdict

    console.print("\n".join(_verdict(results)), highlight=False)
    console.print(f"full report: {out / 'report.md'}")


@cli.command("train")
@click.option("--data", "-d", type=FILE, required=True, help="Training data (Parquet/CSV, data contract).")
@click.option("--valid", type=FILE, default=None,
              help="Validation data for early stopping. Default: the last 20% of --data by time.")
@config_option
@click.option("--ranker", "-r", default="harmonrank", show_default=True,
              help="Ranker name: " + ", ".join(["harmonrank", "harmonrank_bce", "harmonrank_no_user",
                                               "harmonrank_group", "one_step_rank", "one_step_bce",
                                               "pairwise", "formula", "lambdamart"]) + ".")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Run folder: model.safetensors/model.txt + model.json, and per-epoch checkpoints.")
@click.option("--epochs", type=int, default=10, help="Most epochs (neural rankers).")
@click.option("--batch-size", type=int, default=4096, help="Impressions per batch (whole requests).")
@click.option("--lr", type=float, default=3e-3, help="AdamW learning rate.")
@click.option("--patience", type=int, default=3, help="Epochs without a better valid AUC-sum before stopping.")
@click.option("--seed", type=int, default=0, help="Seed: fixes initialisation and batch order.")
@click.option("--weights", default=None, help="Objective weights in the AUC-sum, e.g. 'buy=2,follow=1'.")
@click.option("--resume", is_flag=True, help="Continue a killed run from the last checkpoint in --out.")
def train_cmd(data: Path, valid: Path | None, config: Path | None, ranker: str, out: Path, epochs: int,
              batch_size: int, lr: float, patience: int, seed: int, weights: str | None, resume: bool) -> None:
    """Train a ranker on a dataset and save it to a run folder."""
    from .estimator import NeuralRanker, make_ranker
    from .train import TrainConfig

    cfg = load_config(config)
    if weights:
        cfg = cfg.with_weights(_named_weights(weights, cfg.names))
    table = read_table(data, cfg)
    if valid is not None:
        train_t, valid_t = table, read_table(valid, cfg)
    else:
        train_t, valid_t = table.split_by_time((0.8, 0.2))
    tcfg = TrainConfig(max_epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed)
    model = make_ranker(ranker, tcfg)
    err_console.print(f"training {ranker} on {len(train_t):,} rows, validating on {len(valid_t):,}")
    if isinstance(model, NeuralRanker):
        def show(r: dict[str, float]) -> None:
            err_console.print(f"epoch {int(r['epoch'])}: loss {r['train_loss']:.4f}  valid AUC-sum "
                              f"{r.get('valid_auc_sum', float('nan')):.4f}  {r['samples_per_s']:,.0f} samples/s",
                              highlight=False)

        model.fit(train_t, valid=valid_t, run_dir=out, resume=resume, on_epoch=show)
    else:
        model.fit(train_t, valid=valid_t)
    model.save(out)
    console.print(f"{ranker}: valid AUC-sum {model.score(valid_t):.4f}; saved to {out}")


def _named_weights(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Only the objectives named in ``text`` change weight (others keep theirs)."""
    parsed = parse_weights(text, names)
    named = {t.split("=")[0].strip() for t in text.split(",") if "=" in t}
    return {k: v for k, v in parsed.items() if k in named}


@cli.command("predict")
@click.option("--model", "-m", "model_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Run folder written by `harmonrank train`.")
@click.option("--data", "-d", type=FILE, required=True, help="Data to score (labels not needed).")
@config_option
@click.option("--out", "-o", type=FILE, required=True, help="Output .parquet or .csv: request, user, score.")
@click.option("--batch-rows", type=int, default=262_144, help="Rows read and scored per batch.")
def predict_cmd(model_dir: Path, data: Path, config: Path | None, out: Path, batch_rows: int) -> None:
    """Score every row of a file with a trained ranker; streams batches, writes atomically."""
    import pyarrow as pa

    from .data import AtomicTableWriter, iter_tables
    from .estimator import load_ranker

    model = load_ranker(model_dir)
    cfg = load_config(config) if config else model.config_
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"--out must end in .parquet or .csv. Got {out.name!r} instead.")
    with AtomicTableWriter(out) as writer:
        for part in iter_tables(data, cfg, labels=False, batch_rows=batch_rows):
            writer.write(pa.table({cfg.request_column: part.request, cfg.user_column: part.user,
                                   "score": model.predict(part)}))
        if writer.rows == 0:
            raise DataError(f"{data}: the file has 0 rows; nothing to score")
    n = writer.rows
    err_console.print(f"scored {n:,} rows -> {out}")


@cli.group("data")
def data_group() -> None:
    """Turn public datasets into the data contract."""


@data_group.command("kuairand")
@click.option("--src", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="KuaiRand folder (Pure, 1K or 27K layout): log_*.csv, user_features_*.csv, "
                   "video_features_basic_*.csv.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for kuairand.parquet and kuairand.toml (the ensemble's dataset config).")
@click.option("--log", "log_kind", type=click.Choice(["random", "standard"]), default="random",
              help="Which log: random exposures or the recommender's.")
@click.option("--gap-minutes", type=float, default=360.0, help="A request ends after this much inactivity.")
def kuairand_cmd(src: Path, out: Path, log_kind: str, gap_minutes: float) -> None:
    """Join a KuaiRand log with user and video features, derive requests, write the data contract."""
    from .kuairand import write_kuairand

    info = write_kuairand(src, out, log_kind=log_kind, gap_minutes=gap_minutes)
    console.print(f"{info['rows']:,} impressions, {info['users']:,} users, {info['requests']:,} requests "
                  f"(median {info['median_request_size']:g} impressions); positives: "
                  + ", ".join(f"{k} {v:,}" for k, v in info["positives"].items()))
    console.print(f"wrote {out / 'kuairand.parquet'} and {out / 'kuairand.toml'}")


@cli.command("upstream")
@click.option("--data", "-d", type=FILE, required=True, help="Labelled Parquet (e.g. from `data kuairand`).")
@click.option("--out", "-o", type=FILE, required=True, help="Parquet to write: the input plus p_* columns.")
@click.option("--folds", type=int, default=5, help="Cross-fitting folds.")
@click.option("--by", "fold_by", type=click.Choice(["time", "user"]), default="time", help="Fold rows by.")
@click.option("--experts", type=int, default=4, help="MMoE experts (1 = shared bottom).")
@click.option("--epochs", type=int, default=10, help="Most epochs per fold.")
@click.option("--seed", type=int, default=0)
@click.option("--report", "report_out", type=FILE, default=None, help="Write the per-head AUC report as JSON.")
def upstream_cmd(data: Path, out: Path, folds: int, fold_by: str, experts: int, epochs: int, seed: int,
                 report_out: Path | None) -> None:
    """Cross-fit a multi-task (MMoE) model and add out-of-fold p_* scores for every y_* label."""
    from .upstream import UpstreamConfig, score_file

    cfg = UpstreamConfig(folds=folds, fold_by=fold_by, experts=experts, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    report = score_file(str(data), str(out), cfg)
    rows = [{"objective": o, "positives": report["positives"][o], "out-of-fold AUC": a}
            for o, a in report["auc"].items()]
    console.print(_rich_rows(f"upstream MMoE, {folds} folds by {fold_by}", rows))
    if report_out:
        write_json(report, report_out)


@cli.command("benchmark")
@click.option("--config", "-c", "bench_config", type=FILE, default=None,
              help="Benchmark TOML ([data], [train], [benchmark]); see benchmarks/configs/.")
@click.option("--out", "-o", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Results folder (report.md, results.json, plots).")
@click.option("--rows", type=int, default=None, help="Override: simulated rows.")
@click.option("--seeds", default=None, help="Override: comma-separated seeds, e.g. 0,1,2.")
@click.option("--rankers", default=None, help="Override: comma-separated ranker names.")
@click.option("--data", "-d", type=FILE, default=None, help="Override: benchmark on this file instead.")
@click.option("--dataset-config", "config", type=FILE, default=None, help="Dataset config (TOML) of --data.")
def benchmark_cmd(bench_config: Path | None, out: Path, rows: int | None, seeds: str | None,
                  rankers: str | None, data: Path | None, config: Path | None) -> None:
    """Compare every ranker on one time-split dataset, over several seeds, and write a report."""
    from .benchmark import load_benchmark_config, run_benchmark

    overrides: dict[str, Any] = {"rows": rows, "path": str(data) if data else None,
                                 "dataset_config": str(config) if config else None}
    if seeds:
        overrides["seeds"] = tuple(int(x) for x in seeds.split(","))
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
    console.print(_rich_rows("test AUC (mean over seeds)", rows))


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
