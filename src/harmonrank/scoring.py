"""Batch scoring and evaluation of files: a fitted ranker over a whole file, streamed in row groups and
written atomically; and the per-objective AUC / GAUC of one ranking of a labelled file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from .config import DatasetConfig
from .data import Table, column_names, iter_tables, read_column, read_table
from .errors import ConfigError, DataError
from .io import AtomicTableWriter
from .metrics import auc_sum, objective_table
from .rankers import FormulaRanker, NeuralRanker, Ranker

__all__ = ["Scorer", "evaluate_file", "score_file", "score_table"]

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """Anything that scores tables: a fitted :class:`Ranker`, or a loaded ONNX artifact."""

    name: str
    config_: DatasetConfig

    def predict(self, table: Table) -> np.ndarray: ...


def score_table(ranker: Scorer, table: Table) -> np.ndarray:
    """One score per row of an in-memory table (``ranker.predict``), shape (n,)."""
    return ranker.predict(table)


def score_file(
    ranker: Scorer,
    data: str | Path,
    out: str | Path,
    *,
    config: DatasetConfig | None = None,
    batch_rows: int = 262_144,
    keep: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    weights: Mapping[str, float] | None = None,
) -> int:
    """Score every row of ``data`` (Parquet/CSV) and write ``out`` (.parquet or .csv).

    Output columns: request, user, the config's ``item_column`` (when set), the ``keep`` columns, and
    ``score``, in the input's row order, so scores join back to candidates by id. Reads ``batch_rows`` rows
    at a time, so memory is bounded by the batch, not the file; labels and the time column are not needed.
    ``config`` defaults to the dataset config the ranker was trained with. ``progress`` is called with the
    number of rows scored so far. Nothing is left at ``out`` unless every row was scored. Returns the
    number of rows. ``weights``: objective weights for a preference-conditioned ranker
    (:meth:`NeuralRanker.predict <harmonrank.rankers.NeuralRanker.predict>`).
    """
    if weights is not None and not isinstance(ranker, NeuralRanker):
        raise ConfigError(f"{ranker.name}: objective weights at prediction need a preference-conditioned ranker")
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"--out must end in .parquet or .csv. Got {out.name!r} instead.")
    cfg = config if config is not None else ranker.config_
    names = column_names(data)
    item = [cfg.item_column] if cfg.item_column and cfg.item_column in names else []  # optional: passed if present
    passed = [c for c in dict.fromkeys([*item, *keep]) if c not in (cfg.request_column, cfg.user_column, "score")]
    with AtomicTableWriter(out) as writer:
        for part in iter_tables(data, cfg, labels=False, batch_rows=batch_rows, keep=passed):
            cols = {cfg.request_column: part.request, cfg.user_column: part.user}
            cols.update({c: part.extra[c] for c in passed})
            cols["score"] = (score_table(ranker, part) if weights is None
                             else ranker.predict(part, weights=weights))  # type: ignore[call-arg]
            writer.write(pa.table(cols))
            if progress is not None:
                progress(writer.rows)
        if writer.rows == 0:
            raise DataError(f"{data}: the file has 0 rows; nothing to score")
    log.info("scored %d rows of %s -> %s", writer.rows, data, out)
    return writer.rows


def evaluate_file(
    data: str | Path,
    *,
    ranker: Ranker | None = None,
    score_column: str | None = None,
    exponents: Mapping[str, float] | None = None,
    config: DatasetConfig | None = None,
    group: Literal["user", "request"] = "user",
    on_step: Callable[[str], None] | None = None,
    preference: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """AUC and GAUC per objective and the AUC-sum of ONE ranking of a labelled file.

    The ranking is a fitted ``ranker``, an existing ``score_column`` of the file, or the weighted product with
    ``exponents`` (default: all 1). ``config`` defaults to the ranker's dataset config, else the simulator's.
    Returns ``{"ranking", "rows", "group", "objectives": [per-objective rows], "auc_sum",
    "objective_weights"}``. ``on_step`` hears "read", "rank" and "metrics" as each step starts.
    ``preference``: objective weights a preference-conditioned ``ranker`` ranks for (pass the same weights in
    ``config`` to judge the AUC-sum by them).
    """
    if sum(x is not None for x in (ranker, score_column, exponents)) > 1:
        raise ConfigError("give one of --model, --score-column or --formula")
    if group not in ("user", "request"):
        raise ConfigError(f"group must be 'user' or 'request'. Got {group!r} instead.")
    step = on_step or (lambda name: None)
    if config is None:
        from .config import simulator_config

        config = ranker.config_ if ranker is not None else simulator_config()
    step("read")
    table = read_table(data, config)
    if table.labels is None:
        raise DataError(f"{data}: no labels to evaluate against")
    step("rank")
    if ranker is not None:
        conditioned = preference is not None and isinstance(ranker, NeuralRanker) and ranker.conditioned
        ranking = ranker.predict(table, weights=preference) if conditioned else score_table(ranker, table)  # type: ignore[call-arg]
        described = f"model ({ranker.name})"
    elif score_column is not None:
        ranking, described = read_column(data, score_column), f"column {score_column!r}"
    else:
        fixed = FormulaRanker.fixed(table, exponents if exponents is not None else dict.fromkeys(config.names, 1.0))
        ranking = fixed.predict(table)
        described = "prod " + " * ".join(f"p_{m}^{v:g}" for m, v in fixed.exponents_.items() if v)
    step("metrics")
    groups = table.user if group == "user" else table.request
    return {"ranking": described, "rows": len(table), "group": group,
            "objectives": objective_table(ranking, table.labels, config.names, group=groups),
            "auc_sum": auc_sum(ranking, table.labels, config.objective_weights),
            "objective_weights": list(config.objective_weights)}
