"""Training data larger than memory: Parquet files read one row group at a time.

``ParquetSource(path)`` is a file, a directory (every ``*.parquet`` under it) or a glob, as a list of row
groups ("fragments"). What the data must satisfy: **every request's rows lie in one row group** (in any
order inside it) — batches hold whole requests, and a request cut across row groups or files would be
trained on in pieces. :func:`scan` checks it and names the first split request.

* :func:`scan` — one streaming pass: category counts (vocabulary = the ``max_vocab`` most frequent values
  seen at least ``min_count`` times), numeric and logit moments (Chan's parallel mean/variance), row,
  request and positive counts. Memory: the distinct categories and one entry per request id.
* :class:`StreamLoader` — an epoch's batches: the row groups in a seeded order, the ``r``-th of every
  ``N`` for rank ``r`` of a torchrun job (disjoint and complete: every row once per epoch), read into a
  shuffle buffer of about ``buffer_rows`` rows, cut into batches of whole requests; optionally
  ``read_workers`` threads read ahead, each its share of the rank's row groups. Memory: the buffer plus one
  row group (plus ``read_workers`` read ahead).
"""

from __future__ import annotations

import glob
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DatasetConfig
from .data import Table, concat_tables, read_row_group
from .distributed import DistInfo
from .errors import DataError
from .features import EncodedBatch, FeatureEncoder, logit
from .train import request_batches

__all__ = ["Fragment", "ParquetSource", "StreamLoader", "StreamStats", "scan"]


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each batch allocates and frees arrays of varying sizes; glibc keeps the freed pages, so without this a
    streamed epoch's memory grew with every shuffle buffer before anything was returned
    (benchmarks/results/scale.md). Called once per buffer and every 8 batches."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


@dataclass(frozen=True)
class Fragment:
    """One row group of one file."""

    path: str
    group: int
    rows: int
    offset: int  # row number of its first row in the file


class ParquetSource:
    """The row groups of a Parquet file, a directory of Parquet files, or a glob, in a fixed order."""

    def __init__(self, path: str | Path) -> None:
        import pyarrow.parquet as pq

        text = str(path)
        p = Path(text)
        if p.is_dir():
            files = sorted(str(f) for f in p.rglob("*.parquet"))
        elif any(ch in text for ch in "*?["):
            files = sorted(glob.glob(text, recursive=True))
        elif p.is_file():
            files = [text]
        else:
            raise DataError(f"data path {text!r} is not a file, a directory or a glob that matches files")
        if not files:
            raise DataError(f"data path {text!r} holds no .parquet files")
        self.path = text
        self.files = files
        self.fragments: list[Fragment] = []
        for f in files:
            try:
                meta = pq.ParquetFile(f).metadata
            except Exception as err:  # pyarrow raises several types for a non-Parquet file
                raise DataError(f"cannot read {f!r} as parquet: {err}") from err
            offset = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    self.fragments.append(Fragment(f, g, n, offset))
                offset += n

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.fragments)

    def read(self, fragment: Fragment, config: DatasetConfig, *, labels: bool = True) -> Table:
        return read_row_group(fragment.path, fragment.group, config, labels=labels, offset=fragment.offset)

    def __repr__(self) -> str:
        return f"ParquetSource({self.path!r}: {len(self.files)} files, {len(self.fragments)} row groups)"


class _Moments:
    """Running count, mean and sum of squared deviations per column (merged with Chan's formula)."""

    def __init__(self, k: int) -> None:
        self.n = np.zeros(k)
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)

    def add(self, x: np.ndarray) -> None:  # x: (rows, k) with NaN = absent
        ok = np.isfinite(x)
        n_b = ok.sum(0).astype(np.float64)
        safe = np.where(ok, x, 0.0)
        mean_b = np.divide(safe.sum(0), n_b, out=np.zeros_like(n_b), where=n_b > 0)
        m2_b = np.where(ok, (x - mean_b) ** 2, 0.0).sum(0)
        n = self.n + n_b
        delta = mean_b - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean = np.where(n > 0, self.mean + delta * np.divide(n_b, n, out=np.zeros_like(n), where=n > 0), 0.0)
            self.m2 = self.m2 + m2_b + delta**2 * np.divide(self.n * n_b, n, out=np.zeros_like(n), where=n > 0)
        self.n = n

    def std(self) -> np.ndarray:
        return np.sqrt(np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0))


@dataclass
class StreamStats:
    """What one pass over a source learned: the encoder, the logit moments and counts."""

    encoder: FeatureEncoder
    logit_mean: list[float]
    logit_std: list[float]
    rows: int
    requests: int
    positives: list[int] = field(default_factory=list)


def scan(source: ParquetSource, config: DatasetConfig, *, max_vocab: int = 10_000, min_count: int = 1,
         labels: bool = True) -> StreamStats:
    """One streaming pass over ``source``: fit the feature encoder and logit moments, count rows, requests
    and positives, and check that no request spans two row groups."""
    counts: dict[str, dict[str, int]] = {c: {} for c in config.categorical}
    num = _Moments(len(config.numeric))
    lg = _Moments(len(config.names))
    request_ids: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    positives = np.zeros(len(config.names), dtype=np.int64)
    rows = 0
    for k, frag in enumerate(source.fragments):
        t = source.read(frag, config, labels=labels)
        rows += len(t)
        for c in config.categorical:
            values, cnt = np.unique(t.features[c].astype(str), return_counts=True)
            d = counts[c]
            for v, n in zip(values.tolist(), cnt.tolist(), strict=True):
                d[v] = d.get(v, 0) + n
        if config.numeric:
            num.add(np.stack([t.features[c] for c in config.numeric], axis=1))
        lg.add(logit(t.scores))
        if t.labels is not None:
            positives += t.labels.sum(0)
        ids = np.unique(t.request.astype(str))
        request_ids.append(ids)
        owners.append(np.full(len(ids), k, dtype=np.int64))
    if rows == 0:
        raise DataError(f"{source.path}: 0 rows")
    all_ids, all_owner = np.concatenate(request_ids), np.concatenate(owners)
    order = np.argsort(all_ids, kind="stable")
    sorted_ids = all_ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        a, b = source.fragments[all_owner[order][dup[0]]], source.fragments[all_owner[order][dup[0] + 1]]
        first = str(sorted_ids[dup[0]])
        raise DataError(f"{source.path}: request {first!r} has rows in {a.path} (row group {a.group}) "
                        f"and {b.path} (row group {b.group}); {dup.size} request(s) are split like this. Every "
                        "request's rows must lie in one row group (docs/scale.md)")
    if labels:
        empty = [m for m, p in zip(config.names, positives.tolist(), strict=True) if p == 0 or p == rows]
        if empty:
            raise DataError(f"{source.path}: objective(s) {', '.join(empty)} have no positive or no negative label")
    vocab = {}
    for c, d in counts.items():
        kept = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent first, ties by value
        vocab[c] = sorted(v for v, n in kept[:max_vocab] if n >= min_count)
    enc = FeatureEncoder(objectives=tuple(config.names), vocab=vocab,
                         numeric_mean={c: float(m) for c, m in zip(config.numeric, num.mean, strict=True)},
                         numeric_std={c: float(s) if s > 0 and n > 1 else 1.0
                                      for c, s, n in zip(config.numeric, num.std(), num.n, strict=True)})
    return StreamStats(enc, lg.mean.tolist(), np.maximum(lg.std(), 1e-6).tolist(), rows, len(all_ids),
                       positives.tolist())


@dataclass
class StreamLoader:
    """Batches of whole requests from a source, streamed with a bounded shuffle buffer (see module doc)."""

    source: ParquetSource
    config: DatasetConfig
    encoder: FeatureEncoder
    batch_size: int
    seed: int = 0
    info: DistInfo = field(default_factory=DistInfo)
    buffer_rows: int = 262_144
    read_workers: int = 0  # threads reading this rank's row groups ahead of training (0: read in the loop)

    def fragments(self, epoch: int | None) -> list[Fragment]:
        """This rank's row groups for ``epoch`` (None: in file order, e.g. for validation)."""
        frags = self.source.fragments
        order = (np.arange(len(frags)) if epoch is None
                 else np.random.default_rng([self.seed, epoch, 1]).permutation(len(frags)))
        return [frags[i] for i in order[self.info.rank::self.info.size]]

    def tables(self, epoch: int | None, *, labels: bool = True) -> Iterator[Table]:
        """This rank's row groups, read and validated, in order.

        With ``read_workers`` = W > 0, W threads read the next row groups while the caller trains (Parquet
        decoding releases the GIL): worker w takes every W-th of this rank's row groups, at most W + 1 are
        read ahead (memory: the shuffle buffer plus W + 1 row groups), and they are handed over in the
        same order as without workers, so batches, and the model, are the same.
        """
        frags = self.fragments(epoch)
        if self.read_workers < 1:
            for frag in frags:
                yield self.source.read(frag, self.config, labels=labels)
            return
        pools = [ThreadPoolExecutor(1, thread_name_prefix=f"harmonrank-read-{w}") for w in range(self.read_workers)]
        pending: deque[Future[Table]] = deque()
        try:
            for k, frag in enumerate(frags):
                pending.append(pools[k % self.read_workers].submit(self.source.read, frag, self.config,
                                                                   labels=labels))
                if len(pending) > self.read_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)

    def epoch(self, epoch: int) -> Iterator[tuple[EncodedBatch, torch.Tensor, torch.Tensor]]:
        """(batch, labels (n, M) float32, request ids (n,) int64 unique across ranks) of this rank."""
        rng = np.random.default_rng([self.seed, epoch, 2])
        buffer: list[Table] = []
        held = 0
        first_id = [self.info.rank << 48]  # request ids: unique within the epoch, and across ranks
        for t in self.tables(epoch):
            buffer.append(t)
            held += len(t)
            if held >= self.buffer_rows:
                yield from self._drain(buffer, rng, first_id)
                buffer, held = [], 0
        if buffer:
            yield from self._drain(buffer, rng, first_id)

    def _drain(self, buffer: list[Table], rng: np.random.Generator,
               first_id: list[int]) -> Iterator[tuple[EncodedBatch, torch.Tensor, torch.Tensor]]:
        _trim_heap()
        t = concat_tables(buffer) if len(buffer) > 1 else buffer[0]
        uniq, gid = np.unique(t.request, return_inverse=True)
        gid = gid.astype(np.int64) + first_id[0]
        first_id[0] += len(uniq)
        for k, rows in enumerate(request_batches(t.request, self.batch_size, rng)):
            if k % 8 == 7:
                _trim_heap()
            part = t.take(rows)
            if part.labels is None:
                raise DataError(f"{self.source.path}: training needs labels")
            yield (self.encoder.transform(part), torch.from_numpy(part.labels.astype(np.float32)),
                   torch.from_numpy(gid[rows]))
