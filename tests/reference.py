"""Slow, obviously correct reference implementations the fast code is tested against."""

from __future__ import annotations

import numpy as np


def auc_pairs(scores: np.ndarray, labels: np.ndarray, weight: np.ndarray | None = None) -> float:
    """AUC by counting every positive-negative pair: 1 if the positive is higher, 1/2 on ties."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    w = np.ones_like(s) if weight is None else np.asarray(weight, dtype=float)
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            pw = w[i] * w[j]
            den += pw
            num += pw * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den if den else float("nan")


def gauc_loop(scores: np.ndarray, labels: np.ndarray, group: np.ndarray) -> float:
    """GAUC by looping over groups: impression-weighted mean of per-group pair-count AUCs."""
    num = den = 0.0
    for g in np.unique(group):
        m = group == g
        y = labels[m]
        if y.min() == y.max():
            continue
        num += m.sum() * auc_pairs(scores[m], y)
        den += m.sum()
    return num / den if den else float("nan")
