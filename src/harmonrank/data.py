"""Data contract: Parquet/CSV files -> validated, column-named numpy tables.

One row per impression. Columns (names from a :class:`~harmonrank.config.DatasetConfig`):
``request_id`` and ``user_id``; per objective a score ``p_<name>`` in [0, 1] and a label ``y_<name>`` in
{0, 1}; ``true_<name>`` on simulated data only (oracle and replay, never a model input); personalised
feature columns, categorical or numeric. Files are read batch by batch (Parquet row groups, CSV blocks),
only the columns needed, and every batch is checked so an error counts the bad values over the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import DatasetConfig
from .errors import DataError

__all__ = [
    "Table",
    "check_both_classes",
    "column_names",
    "concat_tables",
    "iter_tables",
    "read_column",
    "read_table",
]

_MAX_SHOWN = 5


@dataclass
class Table:
    """A validated dataset in memory, columns as numpy arrays.

    Attributes
    ----------
    config : DatasetConfig
    scores : ndarray of shape (n, M), float64 — upstream predicted probabilities ``p_*``.
    labels : ndarray of shape (n, M), int8, or None when the file has no labels (prediction).
    request, user : ndarray of shape (n,) — request and user keys.
    time : ndarray of shape (n,) or None.
    truth : ndarray of shape (n, M) or None — ``true_*`` (simulated data only).
    features : dict name -> ndarray of shape (n,); categorical ones as str, numeric as float64.
    extra : dict name -> pyarrow Array of length n — columns read only to be passed through (``keep=``),
        kept as Arrow so ids keep their exact type (an int64 id with nulls does not become float).
    """

    config: DatasetConfig
    scores: np.ndarray
    labels: np.ndarray | None
    request: np.ndarray
    user: np.ndarray
    time: np.ndarray | None = None
    truth: np.ndarray | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.config.names)

    def take(self, index: np.ndarray) -> Table:
        """Rows ``index`` (integer positions or a boolean mask) as a new Table."""

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self,
            scores=self.scores[index],
            labels=sub(self.labels),
            request=self.request[index],
            user=self.user[index],
            time=sub(self.time),
            truth=sub(self.truth),
            features={k: v[index] for k, v in self.features.items()},
            extra={k: v.take(pa.array(np.arange(len(self))[index])) for k, v in self.extra.items()},
        )

    def split_by_time(self, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> list[Table]:
        """Split whole requests into consecutive time slices (train/valid/test).

        Requests are ordered by their first impression time (file order when there is no time column),
        so no request is cut in two and later slices never precede earlier ones.
        """
        if abs(sum(fractions) - 1.0) > 1e-9 or any(f <= 0 for f in fractions):
            raise DataError(f"split fractions must be positive and sum to 1. Got {tuple(fractions)} instead.")
        req_codes, first, inverse = np.unique(self.request, return_index=True, return_inverse=True)
        if self.time is not None:
            t = np.asarray(self.time)
            if t.dtype.kind == "f" and np.isnan(t).any():
                raise DataError(f"time column has {int(np.isnan(t).sum())} missing values; cannot split by time")
            key = np.full(len(req_codes), np.iinfo(np.int64).max if t.dtype.kind in "iu" else np.inf, dtype=t.dtype)
            np.minimum.at(key, inverse, t)  # each request at its earliest impression
        else:
            key = first
        order = np.lexsort((first, key))  # requests in time order, file order breaks ties
        rank = np.empty(len(req_codes), dtype=np.int64)
        rank[order] = np.arange(len(req_codes))
        # cut on cumulative impressions so slices have the requested share of rows
        sizes = np.bincount(inverse, minlength=len(req_codes))[order]
        cum = np.cumsum(sizes) / len(self)
        bounds = np.searchsorted(cum, np.cumsum(fractions)[:-1], side="left") + 1
        slice_of_rank = np.searchsorted(bounds, np.arange(len(req_codes)), side="right")
        slice_of_row = slice_of_rank[rank[inverse]]
        parts = [self.take(np.flatnonzero(slice_of_row == k)) for k in range(len(fractions))]
        for k, part in enumerate(parts):
            if len(part) == 0:
                raise DataError(f"time split gives an empty slice #{k}: too few requests ({len(req_codes)})")
        return parts


class _Problems:
    """Counts each problem over all batches; the first rows of each are shown in the error."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.rows: dict[str, list[int]] = {}

    def add(self, key: str, mask: np.ndarray, offset: int) -> None:
        n = int(mask.sum())
        if n == 0:
            return
        self.count[key] = self.count.get(key, 0) + n
        seen = self.rows.setdefault(key, [])
        if len(seen) < _MAX_SHOWN:
            seen.extend(int(r) + offset for r in np.flatnonzero(mask)[: _MAX_SHOWN - len(seen)])

    def raise_if_any(self, source: str) -> None:
        if not self.count:
            return
        lines = []
        for key, n in self.count.items():
            rows = ", ".join(map(str, self.rows[key])) + (", ..." if n > len(self.rows[key]) else "")
            lines.append(key.format(n=n, rows=rows))
        head = lines[0] if len(lines) == 1 else f"{len(lines)} problems: " + "; ".join(lines)
        raise DataError(f"{source}: {head}")


def _schema_names(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with pacsv.open_csv(path) as reader:
            return list(reader.schema.names)
    return list(pq.ParquetFile(path).schema_arrow.names)


def _batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    if path.suffix.lower() == ".csv":
        # strings for categorical-looking columns are decided later; pyarrow infers per block otherwise
        opts = pacsv.ConvertOptions(include_columns=columns)
        read = pacsv.ReadOptions(block_size=1 << 24)
        with pacsv.open_csv(path, read_options=read, convert_options=opts) as reader:
            yield from reader
        return
    pf = pq.ParquetFile(path)
    # one iterator per row group: a single iter_batches over the whole file grew the process with every
    # batch, so peak memory depended on the file's size (benchmarks/results/serving.md)
    for group in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group])


def _to_float(col: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        raise DataError(f"column {name!r} must be numeric. Got type {col.type} instead.")
    if pa.types.is_boolean(col.type):
        col = col.cast(pa.int8())
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _needed_columns(config: DatasetConfig, names: list[str], *, labels: bool,
                    keep: Sequence[str]) -> dict[str, list[str]]:
    """Columns by role; the time column is required only with labels (training and evaluation split by time)."""
    need: dict[str, list[str]] = {
        "request": [config.request_column],
        "user": [config.user_column],
        "score": [o.score for o in config.objectives],
        "feature": list(config.categorical) + list(config.numeric),
    }
    if labels:
        need["label"] = [o.label for o in config.objectives]
        if config.time_column:
            need["time"] = [config.time_column]
    if keep:
        need["kept"] = list(keep)
    missing = [(role, c) for role, cols in need.items() for c in cols if c not in names]
    if missing:
        listed = ", ".join(f"{c!r} ({role})" for role, c in missing)
        raise DataError(f"{len(missing)} required column(s) missing: {listed}; the file has: {', '.join(names)}")
    return need


def _scan(
    path: Path, config: DatasetConfig, labels: bool, batch_rows: int, problems: _Problems, keep: Sequence[str] = ()
) -> Iterator[Table]:
    """Read ``path`` batch by batch; bad values are counted in ``problems``, not raised."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    if path.suffix.lower() not in {".parquet", ".pq", ".csv"}:
        raise DataError(f"data file {str(path)!r}: expected a .parquet or .csv file")
    try:
        names = _schema_names(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {str(path)!r} as {path.suffix[1:]}: {err}") from err
    _needed_columns(config, names, labels=labels, keep=keep)
    with_time = bool(config.time_column) and config.time_column in names
    truth_cols = [o.truth for o in config.objectives]
    has_truth = labels and all(c in names for c in truth_cols)  # scoring never needs them
    columns = [config.request_column, config.user_column]
    columns += [o.score for o in config.objectives]
    if labels:
        columns += [o.label for o in config.objectives]
    if with_time and config.time_column:
        columns.append(config.time_column)
    if has_truth:
        columns += truth_cols
    columns += list(config.categorical) + list(config.numeric) + list(keep)
    columns = list(dict.fromkeys(columns))
    offset = 0
    try:
        for batch in _batches(path, columns, batch_rows):
            if batch.num_rows == 0:
                continue
            yield _batch_to_table(batch, config, labels, has_truth, problems, offset, with_time, keep)
            offset += batch.num_rows
    except pa.ArrowInvalid as err:
        raise DataError(f"cannot read {str(path)!r}: {err}") from err


def iter_tables(
    path: str | Path,
    config: DatasetConfig,
    *,
    labels: bool = True,
    batch_rows: int = 262_144,
    keep: Sequence[str] = (),
) -> Iterator[Table]:
    """Yield validated :class:`Table` chunks of a Parquet or CSV file, one per read batch.

    Memory stays bounded by ``batch_rows``; a batch with bad values raises :class:`DataError` before it
    is yielded. Per-objective class balance is not checked here (it needs the whole file). ``keep`` names
    columns read as they are into ``Table.extra`` (e.g. an item id to pass through to the output).
    """
    if batch_rows < 1:
        raise DataError(f"batch_rows must be >= 1. Got {batch_rows!r} instead.")
    problems = _Problems()
    for part in _scan(Path(path), config, labels, batch_rows, problems, keep):
        problems.raise_if_any(str(path))
        yield part


def _batch_to_table(
    batch: pa.RecordBatch,
    config: DatasetConfig,
    labels: bool,
    has_truth: bool,
    problems: _Problems,
    offset: int,
    with_time: bool,
    keep: Sequence[str],
) -> Table:
    col = {name: batch.column(name) for name in batch.schema.names}
    n = batch.num_rows
    for key in (config.request_column, config.user_column):
        nulls = np.asarray(col[key].is_null().to_numpy(zero_copy_only=False))
        problems.add(f"column {key!r} has {{n}} missing values (rows {{rows}})", nulls, offset)
    scores = np.empty((n, len(config.objectives)))
    lab = np.empty((n, len(config.objectives)), dtype=np.int8) if labels else None
    truth = np.empty((n, len(config.objectives))) if has_truth else None
    for m, o in enumerate(config.objectives):
        s = _to_float(col[o.score], o.score)
        bad = ~np.isfinite(s)
        problems.add(f"column {o.score!r} has {{n}} NaN/inf values (rows {{rows}}); scores must be finite",
                     bad, offset)
        problems.add(f"column {o.score!r} has {{n}} values outside [0, 1] (rows {{rows}})",
                     ~bad & ((s < 0) | (s > 1)), offset)
        scores[:, m] = s
        if lab is not None:
            y = _to_float(col[o.label], o.label)
            problems.add(f"column {o.label!r} has {{n}} values not in {{{{0, 1}}}} (rows {{rows}})",
                         ~np.isin(y, (0.0, 1.0)), offset)
            lab[:, m] = np.where(y == 1.0, 1, 0)
        if truth is not None:
            truth[:, m] = _to_float(col[o.truth], o.truth)
    features: dict[str, np.ndarray] = {}
    for c in config.categorical:
        arr = col[c]
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = arr.cast(pa.string())
        features[c] = np.asarray(arr.fill_null("__missing__").to_numpy(zero_copy_only=False), dtype=object)
    for c in config.numeric:
        v = _to_float(col[c], c)
        problems.add(f"numeric feature {c!r} has {{n}} inf values (rows {{rows}})", np.isinf(v), offset)
        features[c] = v  # NaN = missing; models impute
    time = None
    if with_time and config.time_column:
        t = col[config.time_column]
        if pa.types.is_timestamp(t.type) or pa.types.is_date(t.type):
            t = t.cast(pa.int64())
        time = np.asarray(t.to_numpy(zero_copy_only=False))
    return Table(
        config=config,
        scores=scores,
        labels=lab,
        request=np.asarray(col[config.request_column].to_numpy(zero_copy_only=False)),
        user=np.asarray(col[config.user_column].to_numpy(zero_copy_only=False)),
        time=time,
        truth=truth,
        features=features,
        extra={c: col[c] for c in keep},
    )


def concat_tables(parts: list[Table]) -> Table:
    first = parts[0]

    def cat(get: Any) -> Any:
        vals = [get(p) for p in parts]
        return None if vals[0] is None else np.concatenate(vals)

    return Table(
        config=first.config,
        scores=cat(lambda p: p.scores),
        labels=cat(lambda p: p.labels),
        request=cat(lambda p: p.request),
        user=cat(lambda p: p.user),
        time=cat(lambda p: p.time),
        truth=cat(lambda p: p.truth),
        features={k: np.concatenate([p.features[k] for p in parts]) for k in first.features},
        extra={k: pa.concat_arrays([p.extra[k] for p in parts]) for k in first.extra},
    )


def read_row_group(path: str | Path, group: int, config: DatasetConfig, *, labels: bool = True,
                   offset: int = 0) -> Table:
    """One row group of a Parquet file, validated like :func:`read_table` (``offset``: the row number of its
    first row in the file, for error messages). Streaming readers (:mod:`harmonrank.stream`) use it."""
    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {str(path)!r} as parquet: {err}") from err
    _needed_columns(config, names, labels=labels, keep=())
    columns = [config.request_column, config.user_column, *(o.score for o in config.objectives)]
    if labels:
        columns += [o.label for o in config.objectives]
    columns = list(dict.fromkeys(columns + list(config.categorical) + list(config.numeric)))
    problems = _Problems()
    try:
        tbl = pf.read_row_group(group, columns=columns).combine_chunks()
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read row group {group} of {str(path)!r}: {err}") from err
    batches = tbl.to_batches()
    rb = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=tbl.schema)
    table = _batch_to_table(rb, config, labels, False, problems, offset, False, ())
    problems.raise_if_any(f"{path} (row group {group})")
    return table


def read_table(
    path: str | Path,
    config: DatasetConfig,
    *,
    labels: bool = True,
    batch_rows: int = 262_144,
) -> Table:
    """Read and validate a whole Parquet/CSV file in the data contract.

    Raises :class:`DataError` naming every broken column with a count and the first bad rows: missing
    columns, NaN/inf or out-of-range scores, labels outside {0, 1}, missing request/user keys, an empty
    file, and (when ``labels``) an objective with no positive or no negative.

    Examples
    --------
    >>> from harmonrank import read_table, simulator_config
    >>> table = read_table("sim.parquet", simulator_config())  # doctest: +SKIP
    >>> table.scores.shape  # doctest: +SKIP
    (100000, 6)
    """
    path = Path(path)
    parts: list[Table] = []
    problems = _Problems()
    offset = 0
    for part in _scan(path, config, labels, batch_rows, problems):
        parts.append(part)
        offset += len(part)
    problems.raise_if_any(str(path))
    if offset == 0:
        raise DataError(f"{path}: the file has 0 rows; nothing to read")
    table = concat_tables(parts)
    if labels and table.labels is not None:
        check_both_classes(table, source=str(path))
    return table


def check_both_classes(table: Table, source: str = "data") -> None:
    """Raise DataError if an objective has no positive or no negative label."""
    if table.labels is None:
        raise DataError(f"{source}: the table has no labels")
    pos = table.labels.sum(axis=0)
    n = len(table)
    bad = [
        f"{o.label!r} has {int(p)} positives and {int(n - p)} negatives"
        for o, p in zip(table.config.objectives, pos, strict=True)
        if p == 0 or p == n
    ]
    if bad:
        raise DataError(
            f"{source}: {len(bad)} objective(s) need both classes to be ranked: " + "; ".join(bad)
        )


def column_names(path: str | Path) -> list[str]:
    """The column names of a Parquet/CSV file (read from its footer / header only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        return _schema_names(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {str(path)!r} as {path.suffix[1:]}: {err}") from err


def read_column(path: str | Path, column: str, *, batch_rows: int = 262_144) -> np.ndarray:
    """One numeric column of a Parquet/CSV file as float64, checked finite (e.g. an existing ranking score).

    Raises :class:`DataError` if the file or the column does not exist, or the column has NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        names = _schema_names(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {str(path)!r} as {path.suffix[1:]}: {err}") from err
    if column not in names:
        raise DataError(f"score column {column!r} is not a column of {path}")
    vals = np.concatenate([_to_float(b.column(0), column) for b in _batches(path, [column], batch_rows)])
    bad = ~np.isfinite(vals)
    if bad.any():
        raise DataError(f"column {column!r} has {int(bad.sum())} NaN/inf values; a ranking must be finite")
    return vals
