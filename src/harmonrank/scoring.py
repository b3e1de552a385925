"""Batch scoring: a fitted ranker over a whole file, streamed in row groups, written atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from .config import DatasetConfig
from .data import Table, iter_tables
from .errors import ConfigError, DataError
from .io import AtomicTableWriter
from .rankers import Ranker

__all__ = ["score_file", "score_table"]

log = logging.getLogger(__name__)


def score_table(ranker: Ranker, table: Table) -> np.ndarray:
    """One score per row of an in-memory table (``ranker.predict``), shape (n,)."""
    return ranker.predict(table)


def score_file(
    ranker: Ranker,
    data: str | Path,
    out: str | Path,
    *,
    config: DatasetConfig | None = None,
    batch_rows: int = 262_144,
    keep: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> int:
    """Score every row of ``data`` (Parquet/CSV) and write ``out`` (.parquet or .csv).

    Output columns: request, user, the config's ``item_column`` (when set), the ``keep`` columns, and
    ``score``, in the input's row order, so scores join back to candidates by id. Reads ``batch_rows`` rows
    at a time, so memory is bounded by the batch, not the file; labels and the time column are not needed.
    ``config`` defaults to the dataset config the ranker was trained with. ``progress`` is called with the
    number of rows scored so far. Nothing is left at ``out`` unless every row was scored. Returns the
    number of rows.
    """
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"--out must end in .parquet or .csv. Got {out.name!r} instead.")
    cfg = config if config is not None else ranker.config_
    passed = [c for c in dict.fromkeys([*([cfg.item_column] if cfg.item_column else []), *keep])
              if c not in (cfg.request_column, cfg.user_column, "score")]
    with AtomicTableWriter(out) as writer:
        for part in iter_tables(data, cfg, labels=False, batch_rows=batch_rows, keep=passed):
            cols = {cfg.request_column: part.request, cfg.user_column: part.user}
            cols.update({c: part.extra[c] for c in passed})
            cols["score"] = score_table(ranker, part)
            writer.write(pa.table(cols))
            if progress is not None:
                progress(writer.rows)
        if writer.rows == 0:
            raise DataError(f"{data}: the file has 0 rows; nothing to score")
    log.info("scored %d rows of %s -> %s", writer.rows, data, out)
    return writer.rows
