"""Commands that train and use rankers: train, predict, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..config import load_config
from ..data import read_table
from ..distributed import DistInfo, init_from_env
from ..errors import ConfigError
from ..io import write_json
from ..models import LOSSES
from ..models.formula import parse_objective_values
from ..rankers import RANKERS, AutoRanker, load_ranker, make_ranker, ranker_names, ranker_table
from ..ranking import METHODS
from ..scoring import evaluate_file, score_file
from ..summary import markdown_table
from ..train import Device, TrainConfig, resolve_device
from ._common import DIR, FILE, Reporter, cli, config_option, console, err_console, rich_rows, threads_option

__all__ = ["evaluate_cmd", "export_cmd", "predict_cmd", "rankers_cmd", "train_cmd"]

DEVICES = ("auto", "cpu", "cuda", "mps")


class _RankerOption(click.Option):
    """``--ranker``: its help lists the registry at the moment help is shown, so registered rankers appear."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = "Ranker name: " + ", ".join(ranker_names()) + "."
        return super().get_help_record(ctx)


device_option = click.option("--device", type=click.Choice(DEVICES), default="auto",
                             help="Torch device for neural rankers (auto: cuda if present, else cpu).")


@cli.command("rankers")
@threads_option
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in docs/models.md).")
def rankers_cmd(markdown: bool) -> None:
    """List every registered ranker: name, estimator, network, loss, description."""
    rows = ranker_table()
    if markdown:
        click.echo(markdown_table(rows))
    else:
        console.print(rich_rows("registered rankers", rows))


@cli.command("evaluate")
@threads_option
@click.option("--data", "-d", type=FILE, required=True, help="Parquet or CSV file in the data contract.")
@config_option
@click.option("--score-column", default=None, help="Rank by this column (higher = better).")
@click.option("--formula", default=None,
              help="Rank by the weighted product prod p_m^e_m, exponents e.g. 'click=1,buy=2'. Default: all 1.")
@click.option("--model", "-m", "model_dir", type=DIR, default=None,
              help="Rank by a trained model (run folder of `harmonrank train`).")
@click.option("--group", type=click.Choice(["user", "request"]), default="user", help="GAUC groups.")
@click.option("--json", "json_out", type=FILE, default=None, help="Write the results as JSON.")
@click.option("--weights", default=None,
              help="Objective weights of the AUC-sum, e.g. 'buy=2,comment=1' (others keep the config's); a "
                   "preference-conditioned --model also ranks for them.")
@device_option
def evaluate_cmd(data: Path, config: Path | None, score_column: str | None, formula: str | None,
                 model_dir: Path | None, group: str, json_out: Path | None, weights: str | None,
                 device: Device) -> None:
    """Per-objective AUC / GAUC and AUC-sum of one ranking: a trained model, a score column, or a
    weighted-product formula (default: all exponents 1)."""
    if sum(x is not None for x in (score_column, formula, model_dir)) > 1:
        raise ConfigError("give one of --model, --score-column or --formula")
    model = load_ranker(model_dir, device=device) if model_dir is not None else None
    cfg = load_config(config) if config or model is None else model.config_
    preference = parse_objective_values(weights, cfg.names, what="--weights") if weights else None
    if preference is not None:
        cfg = cfg.with_objective_weights(preference)
    exponents = parse_objective_values(formula, cfg.names) if formula else None
    steps = {"read": 0, "rank": 1, "metrics": 2}
    with Reporter("evaluate", "steps", total=3) as rep:
        res = evaluate_file(data, ranker=model, score_column=score_column, exponents=exponents, config=cfg,
                            group=group, preference=preference,  # type: ignore[arg-type]
                            on_step=lambda name: rep.update(steps[name], description=f"evaluate: {name}"))
        rep.update(3, description="evaluate: done")
    described = f"model {model_dir} ({model.name})" if model is not None else res["ranking"]
    console.print(rich_rows(f"{described} on {data.name} ({res['rows']:,} rows)", res["objectives"]))
    console.print(f"AUC-sum (weights {', '.join(f'{w:g}' for w in res['objective_weights'])}): {res['auc_sum']:.4f}")
    if json_out:
        write_json({"ranking": described, "rows": res["rows"], "group": group, "objectives": res["objectives"],
                    "auc_sum": res["auc_sum"]}, json_out)


@cli.command("train")
@threads_option
@click.option("--data", "-d", type=click.Path(path_type=Path), required=True,
              help="Training data (data contract): a Parquet/CSV file read into memory, or a directory or glob of "
                   "Parquet files streamed row group by row group (docs/scale.md).")
@click.option("--valid", type=click.Path(path_type=Path), default=None,
              help="Validation data for early stopping (file, directory or glob). Default: the last 20% of --data "
                   "by time (in-memory data only).")
@click.option("--stream", is_flag=True,
              help="Stream --data from disk even when it is one file (automatic for a directory or glob).")
@click.option("--buffer-rows", type=click.IntRange(min=1), default=262_144,
              help="Streaming: rows held in the shuffle buffer.")
@click.option("--max-vocab", type=click.IntRange(min=1), default=None,
              help="Neural rankers: keep at most this many most frequent values per categorical feature "
                   "[10,000]; the rest share the unseen id.")
@click.option("--min-count", type=click.IntRange(min=1), default=None,
              help="Neural rankers: keep a categorical value only if seen at least this often [1].")
@click.option("--read-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Streaming: threads reading row groups ahead of training, each its share (same batches as 0).")
@config_option
@click.option("--ranker", "-r", cls=_RankerOption, default="harmonrank", show_default=True, help="Ranker name.")
@click.option("--auto-rule", type=click.Choice(["gain", "ci"]), default=None,
              help="--ranker auto: keep HarmonRank if its validation AUC-sum is higher [gain], or only if the 95% "
                   "interval of that gain is above zero [ci] (docs/models.md).")
@click.option("--out", "-o", type=DIR, required=True,
              help="Run folder: model.safetensors/model.txt + model.json, and per-epoch checkpoints (auto: both "
                   "candidates' models and checkpoints under candidates/<name>/).")
@click.option("--epochs", type=int, default=10, help="Most epochs (neural rankers).")
@click.option("--batch-size", type=int, default=4096, help="Impressions per batch (whole requests).")
@click.option("--lr", type=float, default=3e-3, help="AdamW learning rate.")
@click.option("--patience", type=int, default=3,
              help="Stop after this many epochs without the smoothed valid AUC-sum rising by --min-delta.")
@click.option("--smoothing", type=click.FloatRange(0, 1, min_open=True), default=0.5,
              help="EMA weight of the newest epoch in the smoothed valid AUC-sum (1: no smoothing).")
@click.option("--min-delta", type=click.FloatRange(min=0), default=1e-4, help="Smallest rise that counts.")
@click.option("--seed", type=int, default=0, help="Seed: fixes initialisation and batch order.")
@click.option("--weights", default=None,
              help="Objective weights in the AUC-sum (and the losses), e.g. 'buy=2,follow=1'; others keep theirs.")
@click.option("--loss-method", type=click.Choice(METHODS), default="pl",
              help="Soft-AUC operator of the rank losses (docs/soft_auc.md).")
@click.option("--temperature", type=float, default=None,
              help="Relative temperature of the soft-AUC operator. Default: the operator's own.")
@device_option
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the training step (inductor): faster per step after a 10-60 s first step; "
                   "eager if compilation fails (docs/performance.md).")
@click.option("--resume", is_flag=True, help="Continue a killed run from the last checkpoint in --out.")
def train_cmd(data: Path, valid: Path | None, stream: bool, buffer_rows: int, max_vocab: int | None,
              min_count: int | None, read_workers: int, config: Path | None, ranker: str, auto_rule: str | None,
              out: Path, epochs: int,
              batch_size: int, lr: float, patience: int, smoothing: float, min_delta: float, seed: int,
              weights: str | None, loss_method: Any,
              temperature: float | None, device: Device, compile_: bool, resume: bool) -> None:
    """Train a ranker on a dataset and save it to a run folder.

    Under torchrun (`torchrun --nproc-per-node N -m harmonrank train ...`) the processes train one model
    with DistributedDataParallel and one global rank loss; --batch-size is per process (docs/scale.md)."""
    info = init_from_env(resolve_device(device))
    ok = False
    try:
        _train(info, data, valid, stream, (buffer_rows, max_vocab, min_count, read_workers), config, ranker,
               auto_rule, out,
               epochs,
               batch_size, lr, patience,
               smoothing, min_delta, seed, weights, loss_method, temperature, device, compile_, resume)
        ok = True
    finally:
        if info.size > 1:
            import torch.distributed as dist

            if ok:
                dist.barrier()  # rank 0 has written the model; leave together (gloo aborts on a lone exit)
            dist.destroy_process_group()


def _train(info: DistInfo, data: Path, valid: Path | None, stream: bool,
           streaming: tuple[int, int | None, int | None, int],
           config: Path | None,
           ranker: str, auto_rule: str | None, out: Path, epochs: int,
           batch_size: int, lr: float, patience: int, smoothing: float, min_delta: float, seed: int,
           weights: str | None, loss_method: Any, temperature: float | None, device: Device, compile_: bool,
           resume: bool) -> None:
    cfg = load_config(config)
    if weights:
        cfg = cfg.with_objective_weights(parse_objective_values(weights, cfg.names, what="--weights"))
    tcfg = TrainConfig(max_epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, smoothing=smoothing,
                       min_delta=min_delta, seed=seed,
                       loss_method=loss_method, temperature=temperature, device=device, compile=compile_)
    vocab_opts: dict[str, Any] = {k: v for k, v in (("max_vocab", streaming[1]), ("min_count", streaming[2]))
                                  if v is not None}
    if vocab_opts and not (RANKERS[ranker].net or RANKERS[ranker].estimator is AutoRanker):
        raise ConfigError(f"--max-vocab and --min-count apply to neural rankers; {ranker!r} has no embeddings")
    if auto_rule is not None:
        if RANKERS[ranker].estimator is not AutoRanker:
            raise ConfigError(f"--auto-rule applies to --ranker auto, not {ranker!r}")
        vocab_opts["rule"] = auto_rule
    model = make_ranker(ranker, tcfg, **vocab_opts)
    if isinstance(model, AutoRanker) and info.main:
        model.on_candidate = lambda name: err_console.print(f"auto: training candidate {name}")
    if stream or data.is_dir() or any(ch in str(data) for ch in "*?["):
        _train_streamed(info, model, data, valid, cfg, out, resume, *streaming)
        return
    if streaming[3]:
        raise ConfigError("--read-workers applies to streamed training (a directory, a glob or --stream)")
    table = read_table(data, cfg)
    if valid is not None:
        train_t, valid_t = table, read_table(valid, cfg)
    else:
        train_t, valid_t = table.split_by_time((0.8, 0.2))
    if info.main:
        err_console.print(f"training {ranker} on {len(train_t):,} rows, validating on {len(valid_t):,}"
                          + (f" ({info.size} processes, global batch {info.size * batch_size:,} rows)"
                             if info.size > 1 else ""))

    spec = RANKERS[ranker]
    meaning = f" (= {LOSSES[spec.loss].meaning})" if spec.loss in LOSSES else ""

    def show(r: dict[str, float]) -> None:
        err_console.print(f"epoch {int(r['epoch'])}: train loss {r['train_loss']:.4f}{meaning}  valid AUC-sum "
                          f"{r.get('valid_auc_sum', float('nan')):.4f}  {r['samples_per_s']:,.0f} samples/s",
                          highlight=False)

    if not info.main:  # the other ranks train silently; rank 0 reports and writes
        model.fit(train_t, valid=valid_t, run_dir=out, resume=resume)
        return
    with Reporter("train", "batches") as rep:
        model.fit(train_t, valid=valid_t, run_dir=out, resume=resume, on_epoch=show,
                  on_batch=lambda epoch, done, total: rep.update(done, total, f"epoch {epoch}"))
    model.save(out)
    _say_selection(model)
    console.print(f"{model.name}: valid AUC-sum {model.score(valid_t):.4f}; saved to {out}")


def _say_selection(model: Any) -> None:
    if isinstance(model, AutoRanker):
        console.print(model.selection_.text(), highlight=False)


def _train_streamed(info: DistInfo, model: Any, data: Path, valid: Path | None, cfg: Any, out: Path, resume: bool,
                    buffer_rows: int, _max_vocab: int | None, _min_count: int | None, read_workers: int) -> None:
    from ..rankers import NeuralRanker
    from ..stream import ParquetSource

    if valid is None:
        raise ConfigError("--valid is needed when --data is streamed (a directory, a glob or --stream): a split by "
                          "time needs the whole table in memory")
    if not isinstance(model, NeuralRanker | AutoRanker):
        raise ConfigError(f"ranker {model.name!r} trains in memory only; streamed data trains neural rankers")
    source, valid_source = ParquetSource(data), ParquetSource(valid)
    if info.main:
        err_console.print(f"training {model.name} streamed from {source} ({source.rows:,} rows), validating on "
                          f"{valid_source.rows:,} rows" + (f"; {info.size} processes" if info.size > 1 else ""))

    def show(r: dict[str, float]) -> None:
        err_console.print(f"epoch {int(r['epoch'])}: train loss {r['train_loss']:.4f}  valid AUC-sum "
                          f"{r.get('valid_auc_sum', float('nan')):.4f}  {r['samples_per_s']:,.0f} samples/s",
                          highlight=False)

    if not info.main:  # the vocabulary limits are the ranker's own (make_ranker above)
        model.fit_stream(source, valid_source, cfg, run_dir=out, resume=resume, buffer_rows=buffer_rows,
                         read_workers=read_workers)
        return
    with Reporter("train", "batches") as rep:
        model.fit_stream(source, valid_source, cfg, run_dir=out, resume=resume, buffer_rows=buffer_rows,
                         read_workers=read_workers, on_epoch=show,
                         on_batch=lambda epoch, done, total: rep.update(done, total, f"epoch {epoch}"))
    model.save(out)
    _say_selection(model)
    best = max((h.get("valid_auc_sum", float("-inf")) for h in model.history_), default=float("nan"))
    console.print(f"{model.name}: valid AUC-sum {best:.4f} (best epoch); saved to {out}")


@cli.command("predict")
@threads_option
@click.option("--model", "-m", "model_dir", type=DIR, required=True, help="Run folder written by `harmonrank train`.")
@click.option("--data", "-d", type=FILE, required=True, help="Data to score (labels not needed).")
@config_option
@click.option("--out", "-o", type=FILE, required=True,
              help="Output .parquet or .csv: request, user, item (the config's item_column), --keep columns, score.")
@click.option("--keep", multiple=True, metavar="COL", help="Also copy this input column to the output (repeatable).")
@click.option("--batch-rows", type=click.IntRange(min=1), default=262_144, help="Rows read and scored per batch.")
@click.option("--engine", type=click.Choice(["torch", "onnx"]), default="torch",
              help="torch: the run folder's model; onnx: ONNX Runtime on an artifact folder (`harmonrank export`).")
@click.option("--weights", default=None,
              help="Preference-conditioned rankers (harmonrank_pref): objective weights to rank for, e.g. "
                   "'buy=2,comment=1'; others keep their training weights.")
@device_option
def predict_cmd(model_dir: Path, data: Path, config: Path | None, out: Path, keep: tuple[str, ...], batch_rows: int,
                engine: str, weights: str | None, device: Device) -> None:
    """Score every row of a file with a trained ranker; streams batches, writes atomically.

    Labels and the time column are not needed; the output keeps the input's row order."""
    if engine == "onnx":
        from ..export import load_artifact

        model: Any = load_artifact(model_dir)
    else:
        model = load_ranker(model_dir, device=device)
    cfg = load_config(config) if config else model.config_
    with Reporter("predict", "rows", total=_file_rows(data)) as rep:
        w = parse_objective_values(weights, cfg.names, what="--weights") if weights else None
        n = score_file(model, data, out, config=cfg, batch_rows=batch_rows, keep=keep, progress=rep.update,
                       weights=w)
    err_console.print(f"scored {n:,} rows -> {out}")


@cli.command("export")
@threads_option
@click.option("--model", "-m", "model_dir", type=DIR, required=True, help="Run folder written by `harmonrank train`.")
@click.option("--out", "-o", type=DIR, required=True, help="Artifact folder: model.onnx + manifest.json.")
@click.option("--opset", type=click.IntRange(min=18), default=18, help="ONNX opset.")
def export_cmd(model_dir: Path, out: Path, opset: int) -> None:
    """Export a trained ranker as a serving artifact (ONNX + manifest.json); needs the `export` extra."""
    from ..export import export_ranker, load_artifact

    path = export_ranker(load_ranker(model_dir, device="cpu"), out, opset=opset)
    art = load_artifact(path)  # the artifact loads and verifies before we say it is there
    console.print(f"exported {art.manifest['ranker']} to {path} (model.onnx sha256 {art.manifest['onnx_sha256'][:12]})")


def _file_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (None for CSV or an unreadable file: the scorer reports it)."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, pa.ArrowInvalid):  # the scorer raises the proper DataError for this file
        return None
