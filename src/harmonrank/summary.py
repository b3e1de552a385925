"""Dataset summaries (label rates, label correlations, AUC of each score) and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from .config import DatasetConfig
from .data import Table, concat_tables, iter_tables
from .errors import DataError
from .metrics import auc

__all__ = ["dataset_summary", "markdown_table", "summarize_file", "summary_markdown"]


def dataset_summary(table: Table) -> dict[str, Any]:
    """Label rates, label correlation, and per-objective AUC of ``p_*`` and of ``true_*`` (oracle)."""
    if table.labels is None:
        raise DataError("dataset_summary needs labels; the table has none")
    y = table.labels.astype(np.float64)
    names = list(table.objectives)
    rows = []
    for m, name in enumerate(names):
        row: dict[str, Any] = {
            "objective": name,
            "positives": int(y[:, m].sum()),
            "rate": float(y[:, m].mean()),
            "mean_p": float(table.scores[:, m].mean()),
            "auc_p": auc(table.scores[:, m], y[:, m]),
        }
        if table.truth is not None:
            row["auc_true"] = auc(table.truth[:, m], y[:, m])
        rows.append(row)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(y.T) if y.shape[1] > 1 else np.ones((1, 1))
    return {
        "rows": len(table),
        "requests": int(np.unique(table.request).size),
        "users": int(np.unique(table.user).size),
        "objectives": rows,
        "label_correlation": {"objectives": names, "matrix": np.round(corr, 4).tolist()},
    }


def summarize_file(path: str | Path, config: DatasetConfig, max_rows: int = 1_000_000) -> dict[str, Any]:
    """Summary of a data file computed on its first ``max_rows`` rows (whole row groups).

    Reading stops after ``max_rows`` so a 10 M-row file is summarised with bounded memory.
    """
    parts: list[Table] = []
    n = 0
    for part in iter_tables(path, config):
        parts.append(part)
        n += len(part)
        if n >= max_rows:
            break
    summary = dataset_summary(concat_tables(parts))
    total = pq.ParquetFile(path).metadata.num_rows if str(path).endswith((".parquet", ".pq")) else n
    summary["file_rows"] = int(total)
    summary["summarised_rows"] = n
    return summary


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if np.isnan(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render dict rows as a GitHub Markdown table (floats with 4 decimals)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c == cols[0] else "---:" for c in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The dataset summary as Markdown: counts, per-objective table, label correlation matrix."""
    lines = [
        f"rows: {summary.get('file_rows', summary['rows']):,} (summary over {summary['rows']:,}), "
        f"requests: {summary['requests']:,}, users: {summary['users']:,}",
        "",
        markdown_table(summary["objectives"]),
        "",
        "Label correlation (Pearson):",
        "",
    ]
    names = summary["label_correlation"]["objectives"]
    mat = summary["label_correlation"]["matrix"]
    lines.append(markdown_table([{"": n, **{c: float(v) for c, v in zip(names, row, strict=True)}}
                                 for n, row in zip(names, mat, strict=True)]))
    return "\n".join(lines)
