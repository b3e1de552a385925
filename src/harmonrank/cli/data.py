"""Commands that make and describe data: simulate, describe, data kuairand, upstream."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import load_config, simulator_config, write_config
from ..io import write_json
from ..models.formula import parse_objective_values
from ..summary import summarize_file, summary_markdown
from ._common import DIR, FILE, Reporter, cli, config_option, console, err_console, rich_rows, threads_option

__all__ = ["describe_cmd", "kuairand_cmd", "simulate_cmd", "upstream_cmd"]


def _parse_rates(items: list[str], objectives: tuple[str, ...]) -> dict[str, float]:
    """``--rate buy=0.0003`` (repeatable); the simulator checks each rate's range."""
    return parse_objective_values(",".join(items), objectives, what="--rate") if items else {}


@cli.command("simulate")
@threads_option
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
@click.option("--segment-dependence", type=float, default=0.0,
              help="0..1: how much the label dependence (--correlation) differs between activity segments.")
@click.option("--extra-objectives", type=click.IntRange(0, 4), default=0,
              help="Objectives beyond the six: share, gift, add_cart, coupon (in that order); writes the dataset "
                   "config beside --out.")
@click.option("--chunk-rows", type=int, default=500_000, help="Rows per Parquet row group (bounds memory).")
@click.option("--summary/--no-summary", default=True, help="Print the dataset summary afterwards.")
@click.option("--json", "json_out", type=FILE, default=None, help="Also write the summary as JSON.")
def simulate_cmd(out: Path, rows: int, seed: int, users: int, streamers: int, min_candidates: int,
                 max_candidates: int, days: int, rate: tuple[str, ...], correlation: float, noise: float,
                 shared_noise: float, heterogeneity: float, segment_dependence: float, extra_objectives: int,
                 chunk_rows: int, summary: bool, json_out: Path | None) -> None:
    """Generate a simulated live-streaming e-commerce log in the data contract (Parquet)."""
    from ..study.simulate import EXTRA_OBJECTIVES, OBJECTIVES, SimulatorConfig, simulate

    names = OBJECTIVES + EXTRA_OBJECTIVES[:extra_objectives]
    cfg = SimulatorConfig(
        rows=rows, users=users, streamers=streamers, min_candidates=min_candidates,
        max_candidates=max_candidates, days=days, rates=_parse_rates(list(rate), names),
        correlation=correlation, noise=noise, shared_noise=shared_noise, heterogeneity=heterogeneity,
        segment_dependence=segment_dependence, extra_objectives=extra_objectives, seed=seed, chunk_rows=chunk_rows,
    )
    with Reporter("simulate", "rows", total=rows) as rep:
        info = simulate(out, cfg, progress=lambda done, total: rep.update(done))
    err_console.print(f"wrote {info['rows']:,} rows to {out} in {info['seconds']:.1f}s")
    dataset = simulator_config(cfg.objectives)
    if extra_objectives:  # the packaged config fuses the six: write one with every objective beside the data
        write_config(dataset, out.with_suffix(".toml"))
        err_console.print(f"wrote its dataset config to {out.with_suffix('.toml')} (pass it as --config)")
    if summary or json_out:
        s = summarize_file(out, dataset)
        s["simulator"] = cfg.to_dict()
        if summary:
            console.print(summary_markdown(s))
        if json_out:
            write_json(s, json_out)


@cli.command("describe")
@threads_option
@click.option("--data", "-d", type=FILE, required=True, help="Parquet or CSV file in the data contract.")
@config_option
@click.option("--max-rows", type=int, default=1_000_000, help="Summarise at most this many rows.")
def describe_cmd(data: Path, config: Path | None, max_rows: int) -> None:
    """Print a dataset's label rates, label correlations and the AUC of each p_* (and true_*)."""
    console.print(summary_markdown(summarize_file(data, load_config(config), max_rows=max_rows)))


@cli.group("data")
def data_group() -> None:
    """Turn public datasets into the data contract."""


@data_group.command("kuairand")
@threads_option
@click.option("--src", type=DIR, required=True,
              help="KuaiRand folder (Pure, 1K or 27K layout): log_*.csv, user_features_*.csv, "
                   "video_features_basic_*.csv.")
@click.option("--out", "-o", type=DIR, required=True,
              help="Folder for kuairand.parquet and kuairand.toml (the ensemble's dataset config).")
@click.option("--log", "log_kind", type=click.Choice(["random", "standard"]), default="random",
              help="Which log: random exposures or the recommender's.")
@click.option("--requests", "grouping", type=click.Choice(["session", "user", "user-day"]), default="session",
              help="What a request is: a session (split at --gap-minutes of inactivity), all of a user's "
                   "impressions, or a user's impressions of one day (docs/kuairand.md).")
@click.option("--gap-minutes", type=float, default=360.0, help="Sessions: a request ends after this much inactivity.")
def kuairand_cmd(src: Path, out: Path, log_kind: str, grouping: str, gap_minutes: float) -> None:
    """Join a KuaiRand log with user and video features, derive requests, write the data contract."""
    from ..study.kuairand import write_kuairand

    info = write_kuairand(src, out, log_kind=log_kind, gap_minutes=gap_minutes, grouping=grouping)
    console.print(f"{info['rows']:,} impressions, {info['users']:,} users, {info['requests']:,} requests "
                  f"(median {info['median_request_size']:g} impressions); positives: "
                  + ", ".join(f"{k} {v:,}" for k, v in info["positives"].items()))
    console.print(f"wrote {out / 'kuairand.parquet'} and {out / 'kuairand.toml'}")


@cli.command("upstream")
@threads_option
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
    from ..study.upstream import UpstreamConfig, cross_fit_file

    cfg = UpstreamConfig(folds=folds, fold_by=fold_by, experts=experts, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    report = cross_fit_file(str(data), str(out), cfg)
    rows = [{"objective": o, "positives": report["positives"][o], "out-of-fold AUC": a}
            for o, a in report["auc"].items()]
    console.print(rich_rows(f"upstream MMoE, {folds} folds by {fold_by}", rows))
    if report_out:
        write_json(report, report_out)
