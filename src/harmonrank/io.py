"""Atomic file output: every file harmonrank writes appears whole or not at all.

One idiom, used everywhere: write under a temporary name in the destination folder, then ``os.replace`` it
onto the final name (atomic on POSIX and Windows within one file system). A crash or an exception leaves
the previous file (or nothing) in place and removes the temporary file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["AtomicTableWriter", "atomic_write", "write_json", "write_parquet", "write_text"]


def _umask() -> int:
    umask = os.umask(0)  # the only portable way to read it; done once, at import
    os.umask(umask)
    return umask


_FILE_MODE = 0o666 & ~_umask()
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only (POSIX)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # alive under another user, or not a pid we can judge
        return True
    return True


def _remove_stale(final: Path) -> None:
    """Delete temporaries of ``final`` left on this host by processes that died (killed runs).

    Only names this module makes (``.<name>.<host>-<pid>.<random>.tmp``) with this host's name count, so a
    writer on another machine sharing the folder, or a temporary of another file, is never touched.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.{re.escape(_HOST)}-(\d{{1,10}})\.[A-Za-z0-9_]+\.tmp$")
    for old in final.parent.iterdir():
        m = pattern.match(old.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            old.unlink(missing_ok=True)


def _temporary(path: str | Path) -> tuple[Path, Path]:
    """A temporary path ``.<name>.<host>-<pid>.<random>.tmp`` in the folder of ``path`` (created if needed).

    The writer's host and pid in the name let a later run remove what a killed run left behind.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; the renamed file should get the usual mode
    return Path(tmp), final


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto ``path``, on error removed.

    Examples
    --------
    >>> with atomic_write("model.json") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    tmp, final = _temporary(path)
    try:
        yield tmp
        if tmp.exists():  # some writers (safetensors) replace the file and its mode: give it the usual one
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | Path, *, indent: int = 2) -> None:
    """Write JSON atomically (numpy scalars as floats), with a trailing newline."""
    write_text(path, json.dumps(obj, indent=indent, default=float) + "\n")


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Write a pyarrow Table to Parquet atomically."""
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


class AtomicTableWriter:
    """Stream Arrow tables into a Parquet or CSV file under a temporary name; renamed only on success.

    >>> with AtomicTableWriter("out.parquet") as w:  # doctest: +SKIP
    ...     for batch in batches:
    ...         w.write(batch)
    """

    def __init__(self, path: str | Path, **parquet_options: Any) -> None:
        self.tmp, self.final = _temporary(path)
        self.csv = self.final.suffix.lower() == ".csv"
        self.options = parquet_options
        self.rows = 0
        self._writer: Any = None

    def write(self, table: pa.Table, **write_options: Any) -> None:
        if self._writer is None:
            self._writer = (pacsv.CSVWriter(self.tmp, table.schema) if self.csv
                            else pq.ParquetWriter(self.tmp, table.schema, **self.options))
        self._writer.write_table(table, **write_options)
        self.rows += table.num_rows

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
                if exc_type is None:
                    os.replace(self.tmp, self.final)
        finally:
            self.tmp.unlink(missing_ok=True)
