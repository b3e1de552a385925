"""Ranking metrics: arrays in, numbers out.

Definitions (also in docs/metrics.md):

* **AUC** of one score against one objective's binary labels: the probability that a random positive is
  scored above a random negative, ties counted 1/2. Computed from ranks in O(n log n):
  ``AUC = (sum_{i in P} r_i - |P|(|P|+1)/2) / (|P||N|)`` with ``r`` the ascending average ranks.
  With ``sample_weight`` every pair counts ``w_i w_j``.
* **GAUC**: AUC inside each group (user or request), averaged over the groups that have both a positive and
  a negative, each weighted by its number of impressions: ``sum_g n_g AUC_g / sum_g n_g``.
* **AUC-sum**: ``sum_m w_m AUC_m`` of ONE ensemble score over the objectives (the paper's headline metric;
  equal weights by default).
* **Paired bootstrap** over requests: both rankers are scored on the same resampled set of requests, so
  the confidence interval is for their difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError

__all__ = [
    "BootstrapResult",
    "auc",
    "auc_sum",
    "gauc",
    "objective_table",
    "oracle_scores",
    "paired_bootstrap",
    "paired_bootstrap_seeds",
]


def _check_1d(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise DataError(f"scores and labels must be 1-d of equal length. Got {s.shape} and {y.shape} instead.")
    if not np.all(np.isfinite(s)):
        raise DataError(f"scores must be finite. Got {int((~np.isfinite(s)).sum())} NaN/inf values.")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 or 1. Got {int((~np.isin(y, (0, 1))).sum())} other values.")
    return s, y.astype(np.float64)


def _tie_starts(sorted_keys: Sequence[np.ndarray]) -> np.ndarray:
    """Start positions of runs of equal keys in lexicographically sorted arrays."""
    n = len(sorted_keys[0])
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in sorted_keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _auc_from_sorted(ys: np.ndarray, ws: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Weighted AUC of scores already sorted ascending; ``ws`` (..., n) may carry a batch of weightings."""
    pos = np.add.reduceat(ws * ys, starts, axis=-1)
    neg = np.add.reduceat(ws * (1.0 - ys), starts, axis=-1)
    below = np.cumsum(neg, axis=-1) - neg  # negative weight strictly below each tie run
    numer = np.sum(pos * (below + 0.5 * neg), axis=-1)
    denom = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), np.nan)


def auc(scores: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """ROC AUC with ties counted 1/2, in O(n log n).

    Returns NaN when ``labels`` has no positive or no negative.

    Examples
    --------
    >>> auc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]))
    0.875
    """
    s, y = _check_1d(scores, labels)
    if s.size == 0:
        return float("nan")
    w = np.ones_like(s) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    return float(_auc_from_sorted(y[order], w[order], _tie_starts([s[order]])))


def gauc(scores: np.ndarray, labels: np.ndarray, group: np.ndarray) -> float:
    """Group AUC: impression-weighted mean of per-group AUCs over groups with both classes, O(n log n).

    Returns NaN when no group has both classes.

    Examples
    --------
    >>> gauc(np.array([0.1, 0.9, 0.3, 0.2, 0.5]), np.array([0, 1, 1, 0, 0]), np.array([1, 1, 2, 2, 2]))
    0.7
    """
    s, y = _check_1d(scores, labels)
    g = np.asarray(group)
    if g.shape != s.shape:
        raise DataError(f"group must have the shape of scores {s.shape}. Got {g.shape} instead.")
    if s.size == 0:
        return float("nan")
    _, gid = np.unique(g, return_inverse=True)
    order = np.lexsort((s, gid))
    gs, ss, ys = gid[order], s[order], y[order]
    starts = _tie_starts([gs, ss])
    pos = np.add.reduceat(ys, starts)
    neg = np.add.reduceat(1.0 - ys, starts)
    run_group = gs[starts]
    cum_neg = np.cumsum(neg) - neg
    # negatives below a run within its own group = global cumulative minus the group's start value
    first_run = np.searchsorted(run_group, run_group, side="left")
    below = cum_neg - cum_neg[first_run]
    n_groups = int(gid.max()) + 1
    numer = np.bincount(run_group, weights=pos * (below + 0.5 * neg), minlength=n_groups)
    p_g = np.bincount(run_group, weights=pos, minlength=n_groups)
    n_g = np.bincount(run_group, weights=neg, minlength=n_groups)
    ok = (p_g > 0) & (n_g > 0)
    if not ok.any():
        return float("nan")
    auc_g = numer[ok] / (p_g[ok] * n_g[ok])
    size = (p_g + n_g)[ok]
    return float(np.sum(size * auc_g) / np.sum(size))


def auc_sum(
    scores: np.ndarray, labels: np.ndarray, weights: Sequence[float] | None = None
) -> float:
    """Weighted sum over objectives of the AUC of ONE score: ``sum_m w_m AUC(scores, labels[:, m])``.

    ``labels`` is (n, M); objectives without both classes contribute 0.
    """
    y = np.asarray(labels)
    if y.ndim != 2:
        raise DataError(f"labels must be 2-d (n, M). Got shape {y.shape} instead.")
    w = np.ones(y.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (y.shape[1],):
        raise DataError(f"weights must have one entry per objective ({y.shape[1]}). Got {w.shape} instead.")
    vals = np.array([auc(scores, y[:, m]) for m in range(y.shape[1])])
    return float(np.sum(np.where(np.isnan(vals), 0.0, vals) * w))


def objective_table(
    scores: np.ndarray,
    labels: np.ndarray,
    objectives: Sequence[str],
    group: np.ndarray | None = None,
) -> list[dict[str, float | int | str]]:
    """Per-objective rows ``{objective, positives, rate, auc, gauc}`` for one ranking score."""
    y = np.asarray(labels)
    rows: list[dict[str, float | int | str]] = []
    for m, name in enumerate(objectives):
        row: dict[str, float | int | str] = {
            "objective": name,
            "positives": int(y[:, m].sum()),
            "rate": float(y[:, m].mean()),
            "auc": auc(scores, y[:, m]),
        }
        if group is not None:
            row["gauc"] = gauc(scores, y[:, m], group)
        rows.append(row)
    return rows


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``metric(a) - metric(b)``: point estimate and percentile interval."""

    difference: float
    low: float
    high: float
    level: float
    n_boot: int  # resamples in all (per seed x seeds)
    p_value: float  # two-sided: 2 * min(share of resamples <= 0, share >= 0)
    n_seeds: int = 1

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def p_text(self) -> str:
        """The p-value for a table: ``< 1/n_boot`` when no resample fell on the other side of zero."""
        return f"< 1/{self.n_boot}" if self.p_value == 0 else f"{self.p_value:.3f}"


def paired_bootstrap(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    group: np.ndarray,
    *,
    weights: Sequence[float] | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    random_state: int = 0,
    chunk: int = 8,
) -> BootstrapResult:
    """Paired bootstrap CI for ``AUC-sum(a) - AUC-sum(b)`` resampling whole groups (requests).

    Each resample draws the groups with replacement; a row's weight is how often its group was drawn, and
    both rankers are evaluated with the same weights. Each ranker is sorted once, each resample costs O(n).
    """
    point, d = _bootstrap_differences(scores_a, scores_b, labels, group, weights=weights, n_boot=n_boot,
                                      level=level, random_state=random_state, chunk=chunk)
    return _summarise([point], d, level)


def paired_bootstrap_seeds(
    scores_a: Sequence[np.ndarray],
    scores_b: Sequence[np.ndarray],
    labels: np.ndarray,
    group: np.ndarray,
    *,
    weights: Sequence[float] | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    random_state: int = 0,
) -> BootstrapResult:
    """Paired bootstrap of the seed-mean ``AUC-sum(a) - AUC-sum(b)`` over several training seeds.

    ``scores_a[k]`` and ``scores_b[k]`` are the two rankers trained with seed k, scored on the same rows.
    Within each seed, ``n_boot`` resamples of whole groups give that seed's differences; the resamples of
    all seeds are pooled, so the interval is that of a single seed's difference: it holds both the request
    sampling and the seed-to-seed spread, and is wider than an interval for the mean over seeds. The point
    estimate is the mean over seeds of the observed differences (the difference of the seed means).
    """
    if len(scores_a) != len(scores_b) or not scores_a:
        raise DataError(f"need the same number (>= 1) of seeds for both rankers. Got {len(scores_a)} and "
                        f"{len(scores_b)} instead.")
    points, pooled = [], []
    for k, (a, b) in enumerate(zip(scores_a, scores_b, strict=True)):
        p, d = _bootstrap_differences(a, b, labels, group, weights=weights, n_boot=n_boot, level=level,
                                      random_state=random_state + k)
        points.append(p)
        pooled.append(d)
    return _summarise(points, np.concatenate(pooled), level)


def _summarise(points: list[float], d: np.ndarray, level: float) -> BootstrapResult:
    alpha = (1 - level) / 2
    lo, hi = (float(q) for q in np.quantile(d, [alpha, 1 - alpha]))
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return BootstrapResult(float(np.mean(points)), lo, hi, level, int(d.size), p, len(points))


def _bootstrap_differences(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    group: np.ndarray,
    *,
    weights: Sequence[float] | None,
    n_boot: int,
    level: float,
    random_state: int,
    chunk: int = 8,
) -> tuple[float, np.ndarray]:
    """Observed ``AUC-sum(a) - AUC-sum(b)`` and its ``n_boot`` group-resampled values."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if not (a.shape == b.shape == (y.shape[0],)):
        raise DataError(f"scores_a, scores_b must be (n,) with n = {y.shape[0]}. Got {a.shape}, {b.shape}.")
    if not 0 < level < 1:
        raise DataError(f"level must be in (0, 1). Got {level} instead.")
    w_obj = np.ones(y.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    _, gid = np.unique(np.asarray(group), return_inverse=True)
    n_groups = int(gid.max()) + 1
    rng = np.random.default_rng(random_state)

    # Per ranker: rows sorted by score, tie runs, and per objective its positives' sorted positions. A weighted
    # AUC needs, for each run holding positives, the weight below it and in it: one cumulative sum of all the
    # weights per resample (shared by every objective), the rest over the positives only. Per resample this
    # costs O(n + sum of positives) instead of O(n M) full-length passes.
    prepared = []
    for s in (a, b):
        order = np.argsort(s, kind="stable")
        starts = _tie_starts([s[order]])
        run = np.zeros(len(order), dtype=np.int64)
        run[starts[1:]] = 1
        run = np.cumsum(run)  # tie run of each sorted row
        per_obj = []
        for m in range(y.shape[1]):
            pos_idx = np.flatnonzero(y[order, m] > 0)
            r = run[pos_idx]
            pstarts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, dtype=np.int64)
            per_obj.append((pos_idx, r[pstarts], pstarts))
        prepared.append((order, starts, per_obj))

    def metric(wrow: np.ndarray) -> np.ndarray:  # wrow (B, n) -> (B,) AUC-sum(a) - AUC-sum(b)
        out = np.zeros(wrow.shape[0])
        for sign, (order, starts, per_obj) in zip((1.0, -1.0), prepared, strict=True):
            ws = wrow[:, order]
            w_run = np.add.reduceat(ws, starts, axis=1)  # (B, runs)
            w_below = np.cumsum(w_run, axis=1) - w_run
            w_total = w_run.sum(axis=1)
            for m, (pos_idx, runs, pstarts) in enumerate(per_obj):
                if not len(pos_idx):
                    continue  # no positive: AUC undefined, counts 0 as in auc_sum
                p_run = np.add.reduceat(ws[:, pos_idx], pstarts, axis=1)  # (B, runs with positives)
                p_below = np.cumsum(p_run, axis=1) - p_run
                neg_below = w_below[:, runs] - p_below
                neg_in = w_run[:, runs] - p_run
                numer = np.sum(p_run * (neg_below + 0.5 * neg_in), axis=1)
                p_total = p_run.sum(axis=1)
                denom = p_total * (w_total - p_total)
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.where(denom > 0, numer / np.where(denom > 0, denom, 1.0), 0.0)
                out += sign * w_obj[m] * v
        return out

    point = float(metric(np.ones((1, y.shape[0])))[0])
    diffs = []
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=k).astype(np.float64)
        diffs.append(metric(counts[:, gid]))
    return point, np.concatenate(diffs)


def oracle_scores(truth: np.ndarray, labels: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """The Bayes-optimal single score for the weighted AUC-sum (simulated data only).

    Putting candidate i above j changes the expected AUC_m by ``(q_i^m - q_j^m) / (|P_m||N_m|)``, so the
    expected AUC-sum is maximised by ranking on ``sum_m w_m q^m / (pi_m (1 - pi_m))`` with ``q^m`` the true
    probabilities and ``pi_m`` the objective's base rate in the evaluated split (MISSION.md).
    """
    q = np.asarray(truth, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if q.shape != y.shape or q.ndim != 2:
        raise DataError(f"truth and labels must both be (n, M). Got {q.shape} and {y.shape} instead.")
    w = np.ones(q.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    pi = y.mean(axis=0)
    scale = np.where((pi > 0) & (pi < 1), w / np.maximum(pi * (1 - pi), 1e-12), 0.0)
    return np.asarray(q @ scale)
