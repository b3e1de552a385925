"""Replay, a simulated online A/B test on ground truth (simulated data only).

Each request's candidates are ranked by the ranker's score; the top ``k`` are exposed, position ``i``
(1-based) being seen with probability ``1 / log2(i + 1)`` (DCG-style decay). The expected number of each
outcome is ``sum over exposed candidates of decay(i) * true_m``: expected clicks, long views, likes,
comments, follows and purchases. Comparing two rankers on the same requests mirrors an online A/B test
whose users behave exactly as the simulator's ground truth says; the relative purchase gain vs the BCE
ensemble is the analogue of the paper's online purchase gain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["position_weights", "replay"]


def position_weights(score: np.ndarray, request: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row: ``1 / log2(position + 1)`` if it lands in its request's top ``k`` by score, else 0."""
    s = np.asarray(score, dtype=np.float64)
    _, gid = np.unique(np.asarray(request), return_inverse=True)
    order = np.lexsort((-s, gid))  # by request, best first
    g_sorted = gid[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    pos = np.arange(len(order)) - first + 1  # 1-based position inside the request
    w = np.zeros(len(order))
    w[order] = np.where(pos <= k, 1.0 / np.log2(pos + 1.0), 0.0)
    return w


def replay(
    score: np.ndarray, truth: np.ndarray, request: np.ndarray, objectives: Sequence[str], k: int = 10
) -> dict[str, float]:
    """Expected outcomes per objective when exposing each request's top ``k`` by ``score``.

    ``truth`` is (n, M) ground-truth probabilities (``true_*``).
    """
    t = np.asarray(truth, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != len(score) or t.shape[1] != len(objectives):
        raise DataError(f"truth must be (n, M) = ({len(score)}, {len(objectives)}). Got {t.shape} instead.")
    if k < 1:
        raise DataError(f"k must be >= 1. Got {k} instead.")
    w = position_weights(score, request, k)
    return {name: float(w @ t[:, m]) for m, name in enumerate(objectives)}
