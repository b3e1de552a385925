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
from ..metrics import BootstrapResult, _summarise

__all__ = ["position_weights", "replay", "replay_gain_bootstrap"]


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


def replay_gain_bootstrap(
    scores_a: Sequence[np.ndarray],
    scores_b: Sequence[np.ndarray],
    truth: np.ndarray,
    request: np.ndarray,
    *,
    k: int = 10,
    n_boot: int = 200,
    level: float = 0.95,
    random_state: int = 0,
    chunk: int = 50,
) -> BootstrapResult:
    """Paired bootstrap CI of one outcome's relative replay gain, ``replay(a) / replay(b) - 1``.

    ``scores_a[s]``/``scores_b[s]`` are the two rankers trained with seed s; ``truth`` is that outcome's (n,)
    ground-truth probability. Requests are resampled with replacement (both rankers on the same draw), per
    seed, and the resamples of all seeds pooled, as :func:`harmonrank.metrics.paired_bootstrap_seeds` does
    for the AUC-sum. The point estimate is the mean over seeds of the observed gains.
    """
    if len(scores_a) != len(scores_b) or not scores_a:
        raise DataError(f"need the same number (>= 1) of seeds for both rankers. Got {len(scores_a)} and "
                        f"{len(scores_b)} instead.")
    t = np.asarray(truth, dtype=np.float64)
    _, gid = np.unique(np.asarray(request), return_inverse=True)
    g = int(gid.max()) + 1 if len(gid) else 0
    points, pooled = [], []
    for s, (a, b) in enumerate(zip(scores_a, scores_b, strict=True)):
        ra = np.bincount(gid, position_weights(a, request, k) * t, minlength=g)  # per request
        rb = np.bincount(gid, position_weights(b, request, k) * t, minlength=g)
        points.append(float(ra.sum() / rb.sum() - 1.0))
        rng = np.random.default_rng(random_state + s)
        for start in range(0, n_boot, chunk):
            idx = rng.integers(0, g, size=(min(chunk, n_boot - start), g))
            pooled.append(ra[idx].sum(1) / rb[idx].sum(1) - 1.0)
    return _summarise(points, np.concatenate(pooled), level)
