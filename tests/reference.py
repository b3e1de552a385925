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


def pl_step(d: np.ndarray, tau: float) -> np.ndarray:
    """The piecewise-linear soft step clip(d / tau + 1/2, 0, 1)."""
    return np.clip(d / tau + 0.5, 0.0, 1.0)


def soft_auc_pairs(scores: np.ndarray, labels: np.ndarray, step, group: np.ndarray | None = None) -> float:  # type: ignore[no-untyped-def]
    """Soft AUC by looping over every positive-negative pair with a soft step; group-wise if ``group``."""
    if group is None:
        group = np.zeros(len(scores), dtype=int)
    num = den = 0.0
    for g in np.unique(group):
        m = group == g
        s, y = scores[m], labels[m]
        pos, neg = s[y == 1], s[y == 0]
        if len(pos) == 0 or len(neg) == 0:
            continue
        total = sum(float(step(p - q)) for p in pos for q in neg)
        num += m.sum() * total / (len(pos) * len(neg))
        den += m.sum()
    return num / den if den else 0.0


def isotonic_decreasing(y: np.ndarray) -> np.ndarray:
    """Textbook pool-adjacent-violators for a non-increasing fit (unit weights)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in y:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


def projection_rank(z: np.ndarray) -> np.ndarray:
    """Projection of z onto the permutahedron of (1..n) (Blondel et al. 2020, Prop. 3), slow reference."""
    n = len(z)
    perm = np.argsort(-z, kind="stable")
    s = z[perm]
    v = isotonic_decreasing(s - np.arange(n, 0, -1))
    r = np.empty(n)
    r[perm] = s - v
    return r
