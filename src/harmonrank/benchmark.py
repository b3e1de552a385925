"""Comparison of rankings on one table: per-objective AUC / GAUC, AUC-sum, oracle rows.

Each ranking is one score per row; every ranking is evaluated on the same rows in the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .data import Table
from .errors import DataError
from .metrics import auc, gauc, oracle_scores
from .models.formula import weighted_product

__all__ = ["compare_rankings", "reference_rankings"]


def reference_rankings(table: Table) -> dict[str, np.ndarray]:
    """Rankings that need no training: each upstream score alone and the equal-weight product.

    On simulated data (``true_*`` present) also the Bayes-optimal AUC-sum oracle (MISSION.md).
    """
    out: dict[str, np.ndarray] = {}
    for m, name in enumerate(table.objectives):
        out[f"p_{name} alone"] = table.scores[:, m]
    out["product, equal weights"] = weighted_product(table.scores, [1.0] * len(table.objectives))
    if table.truth is not None and table.labels is not None:
        out["oracle (AUC-sum optimal)"] = oracle_scores(table.truth, table.labels, table.config.weights)
    return out


def compare_rankings(
    table: Table, rankings: Mapping[str, np.ndarray], group: str = "user"
) -> list[dict[str, Any]]:
    """One row per ranking: AUC and GAUC per objective and the weighted AUC-sum (and GAUC-sum)."""
    if table.labels is None:
        raise DataError("compare_rankings needs labels")
    groups = table.user if group == "user" else table.request
    weights = table.config.weights
    rows = []
    for name, score in rankings.items():
        row: dict[str, Any] = {"ranker": name}
        total = gtotal = 0.0
        for m, obj in enumerate(table.objectives):
            a = auc(score, table.labels[:, m])
            g = gauc(score, table.labels[:, m], groups)
            row[f"auc_{obj}"] = a
            row[f"gauc_{obj}"] = g
            total += weights[m] * (0.0 if np.isnan(a) else a)
            gtotal += weights[m] * (0.0 if np.isnan(g) else g)
        row["auc_sum"] = total
        row["gauc_sum"] = gtotal
        rows.append(row)
    return rows
