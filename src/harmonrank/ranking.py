"""Differentiable rank-sum AUC: soft ranks and soft-AUC operators, as plain tensor functions.

HarmonRank (arXiv 2601.02955) writes the AUC of one score ``s`` against objective ``m`` as a rank-sum,
``AUC_m = (sum_{i in P_m} r_i - |P_m|(|P_m|+1)/2) / (|P_m||N_m|)`` with ``r`` the ascending ranks, and
replaces ``rank`` by a differentiable soft rank. This module ships four operators:

``"pl"`` (default) — piecewise-linear soft step ``h(d) = clip(d/tau + 1/2, 0, 1)``. Because ``h`` is odd
    around 1/2, the rank-sum collapses to ``sum_{i in P, j in N} h(s_i - s_j)`` (positive-positive terms
    cancel). Every positive's soft count and the exact gradient come from one sort of the batch, prefix
    sums and two ``searchsorted`` calls, shared by all M objectives: O(N log N + N M) time, O(N M) memory.
``"logistic"`` — logistic soft rank ``r_i = 1/2 + sum_j sigmoid((s_i - s_j)/tau)``; the rank-sum equals
    the classic pairwise sigmoid AUC surrogate over positive-negative pairs. O(|P| N), computed in chunks
    with a hand-written backward (no N x N tensor is kept).
``"projection"`` — soft rank as the Euclidean projection onto the permutahedron (Blondel, Teboul, Berthet,
    Djolonga 2020, "Fast Differentiable Sorting and Ranking"), solved by isotonic regression (PAV, scipy's
    C++ ``isotonic_regression``) in O(N log N), with the paper's block-averaging backward. This is the
    operator of the ``torchsort`` package. Runs on CPU numpy (tensors on other devices are copied).
``"softsort"`` — SoftSort (Prillo & Eisenschlos 2020): ``P = softmax_rows(-|sort(s)_i - s_j| / tau)``, soft
    rank ``r_j = sum_i i P_ij / sum_i P_ij``. O(N^2) time and memory.

**Scale-free temperature.** ``temperature`` is relative: the operator multiplies it by the batch's score
spread (the standard deviation of ``scores``, detached; 1 when all scores are equal) and, for the projection,
divides by N: ``eps = temperature * std / N`` (its regularisation acts on rank gaps of 1, so a fixed strength
pools ever more items as N grows: the known "soft AUC collapses to 0.5" trap). So for ``pl`` the soft step
is linear over a window of ``temperature`` standard deviations, for ``logistic``/``softsort`` it is the
sigmoid/softmax scale in standard deviations, and for ``projection`` it is in units of the mean gap between
neighbouring scores. Hence the soft AUC is unchanged by any affine rescaling
``a * s + b`` (a > 0) and, in expectation, by the batch size. ``relative=False`` uses ``temperature`` as is.

All functions are batch-first, keep the input's device and dtype for their outputs, and never call
``.item()``. Objectives whose batch (or group) lacks a positive or a negative contribute 0 and no NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .errors import SoftRankError

__all__ = [
    "DEFAULT_TEMPERATURE",
    "METHODS",
    "Method",
    "SoftRankError",
    "soft_auc",
    "soft_auc_loss",
    "soft_rank",
    "spread",
]

Method = Literal["pl", "logistic", "projection", "softsort"]
METHODS: tuple[str, ...] = ("pl", "logistic", "projection", "softsort")

#: default relative temperature per operator, chosen by benchmarks/soft_auc.py so that
#: |soft AUC - exact AUC| < 0.01 at every N while gradients stay non-zero for a useful share of the batch
DEFAULT_TEMPERATURE: dict[str, float] = {"pl": 0.1, "logistic": 0.01, "projection": 2.5, "softsort": 0.01}

_CHUNK = 1 << 22  # elements per pairwise block in the logistic operator


def spread(scores: Tensor) -> Tensor:
    """Detached robust scale of a score batch: its standard deviation, or 1 when it is 0 or undefined."""
    s = scores.detach()
    if s.numel() < 2:
        return torch.ones((), dtype=s.dtype, device=s.device)
    sd = s.std(unbiased=False)
    return torch.where(sd > 0, sd, torch.ones_like(sd))


def _check(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(scores, Tensor) or not torch.is_floating_point(scores):
        raise SoftRankError(f"scores must be a floating-point tensor. Got {type(scores).__name__} "
                            f"{getattr(scores, 'dtype', '')} instead.")
    s = scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores
    if s.ndim != 1:
        raise SoftRankError(f"scores must have shape (N,) or (N, 1). Got {tuple(scores.shape)} instead.")
    y = labels if labels.ndim == 2 else labels.reshape(-1, 1)
    if y.shape[0] != s.shape[0]:
        raise SoftRankError(f"labels must have N = {s.shape[0]} rows like scores. Got {tuple(labels.shape)}.")
    return s, y.to(s.dtype)


def _temperature(scores: Tensor, method: str, temperature: float | None, relative: bool) -> Tensor:
    if method not in METHODS:
        raise SoftRankError(f"method must be one of {', '.join(METHODS)}. Got {method!r} instead.")
    t = DEFAULT_TEMPERATURE[method] if temperature is None else temperature
    if not t > 0:
        raise SoftRankError(f"temperature must be > 0. Got {t!r} instead.")
    tau = torch.as_tensor(t, dtype=scores.dtype, device=scores.device)
    if relative:
        tau = tau * spread(scores)
        if method == "projection":
            tau = tau / max(scores.shape[0], 1)
    return tau


def _group_ids(group: Tensor | np.ndarray | None, n: int, device: torch.device) -> Tensor | None:
    if group is None:
        return None
    g = torch.as_tensor(np.asarray(group) if not isinstance(group, Tensor) else group, device=device)
    if g.shape != (n,):
        raise SoftRankError(f"group must have shape ({n},). Got {tuple(g.shape)} instead.")
    inverse: Tensor = torch.unique(g, return_inverse=True)[1]
    return inverse


def _coefficients(y: Tensor, gid: Tensor | None) -> Tensor:
    """Per-row, per-objective normaliser c such that soft AUC_m = sum_{i in P_m} c_im S_im.

    Without groups c = 1 / (|P_m||N_m|), shape (M,). With groups, shape (N, M),
    c = n_g / (|P_gm||N_gm| sum_g' n_g') over the groups that hold both classes (impression-weighted GAUC),
    0 elsewhere.
    """
    if gid is None:
        p = y.T @ torch.ones_like(y[:, 0])  # BLAS gemv: several times faster than y.sum(0) on (N, M)
        q = y.shape[0] - p
        ok = (p > 0) & (q > 0)
        return torch.where(ok, 1.0 / torch.where(ok, p * q, torch.ones_like(p)), torch.zeros_like(p))
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    p = torch.zeros(n_groups, y.shape[1], dtype=y.dtype, device=y.device).index_add_(0, gid, y)
    size = torch.zeros(n_groups, dtype=y.dtype, device=y.device).index_add_(0, gid, torch.ones_like(y[:, 0]))
    q = size[:, None] - p
    ok = (p > 0) & (q > 0)
    total = (size[:, None] * ok).sum(0)  # impressions of the groups that count, per objective
    denom = torch.where(ok, p * q, torch.ones_like(p)) * torch.where(total > 0, total, torch.ones_like(total))
    c = torch.where(ok, size[:, None] / denom, torch.zeros_like(p))
    return c[gid]


# --------------------------------------------------------------------------- piecewise linear, O(N log N)

def _pl_keys(scores: Tensor, gid: Tensor | None, tau: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
    """Sort keys, group floors and within-group values for the piecewise-linear operator.

    Without groups the keys are the scores themselves (their own dtype: sorting float32 is cheaper) and the
    values are centred in float64. With groups, float64 keys lay the groups on disjoint intervals more than
    tau apart, so no window crosses a group; sums use the small within-group values, not the large keys,
    to avoid cancellation at tiny temperatures.
    """
    s = scores.detach()
    if gid is None:
        return s, None, s  # values are taken from the sorted keys, centred, in float64
    s64 = s.to(torch.float64)
    local = s64 - s64.min()
    step = local.max() + 2 * tau.detach().to(torch.float64) + 1.0
    floor = gid.to(torch.float64) * step
    return floor + local, floor - 0.5, local


def _prefix(x: Tensor) -> Tensor:
    """Cumulative sum with a leading 0: out[k] = sum of the first k entries."""
    out = torch.zeros(x.shape[0] + 1, dtype=x.dtype, device=x.device)
    torch.cumsum(x, 0, out=out[1:])
    return out


def _sort(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Ascending sort of float keys through an order-preserving integer view: (sorted keys, order).

    PyTorch sorts integers with a radix sort on CPU, much faster than its float comparison sort at
    N = 1M. Flipping all non-sign bits of negative floats makes signed-integer order equal float order
    (-0.0 and +0.0 land next to each other, which is all ties need); the flip is its own inverse, so the
    sorted keys come back without a gather.
    """
    if keys.dtype == torch.float32:
        itype, mask_value = torch.int32, 0x7FFFFFFF
    elif keys.dtype == torch.float64:
        itype, mask_value = torch.int64, 0x7FFFFFFFFFFFFFFF
    else:
        out = torch.sort(keys)
        return out.values, out.indices
    mask = torch.tensor(mask_value, dtype=itype, device=keys.device)
    bits = keys.view(itype)
    srt = torch.sort(torch.where(bits < 0, bits ^ mask, bits))
    back = srt.values
    return torch.where(back < 0, back ^ mask, back).view(keys.dtype), srt.indices


class _PiecewiseLinearAUC(torch.autograd.Function):
    """Soft AUC with h(d) = clip(d/tau + 1/2, 0, 1), O(N log N) forward and O(N) backward.

    In sorted order, row k's window (key_k - tau/2, key_k + tau/2) is the position range [lo_k, hi_k), found
    by two searchsorted calls shared by all objectives. A positive's soft count is the negatives below its
    window plus sum over window negatives of (key_k + tau/2 - key_j) / tau, read off prefix sums; only the
    positives of each objective are visited. For the gradient, with a_m = grad_m c_m and
    u_k = sum_m a_m y_km, every row gets (|window_k| u_k - sum_{j in window_k} u_j) / tau: one cumulative sum
    of u, whatever M is.
    """

    @staticmethod
    def forward(ctx: Any, scores: Tensor, labels: Tensor, coef: Tensor, keys: Tensor, floors: Tensor | None,
                local: Tensor, tau: Tensor) -> Tensor:
        t = tau.detach().to(torch.float64)
        half = (t / 2).to(keys.dtype)
        n = keys.shape[0]
        ks, order = _sort(keys)
        hi = torch.searchsorted(ks, ks + half, right=False)  # rows with key <  k + tau/2
        # rows with key <= k - tau/2, i.e. the rows j whose own window ends at or before k (hi_j <= k):
        # a bincount + cumsum instead of a second binary search
        lo = torch.cumsum(torch.bincount(hi, minlength=n + 1), 0)[:n]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=order.device)
        # within-group values in sorted order; without groups they are the sorted keys, centred
        if floors is None:
            loc = ks.to(torch.float64)
            loc = loc - loc.mean()
        else:
            loc = local[order]
        key_sum = _prefix(loc)
        # every (row, objective) positive at once, ordered by objective then sorted position: no per-objective
        # loop and no host sync; entry e has objective obj_e and sorted position pos_e
        entries = torch.nonzero(labels > 0.5)
        obj = entries[:, 1]
        code = torch.sort(obj * n + rank[entries[:, 0]]).values
        obj = torch.div(code, n, rounding_mode="floor")
        pos = code - obj * n
        base = obj * n
        first = torch.searchsorted(code, base)  # entry index where the objective's block starts
        lo_p, hi_p = lo[pos], hi[pos]
        plo = torch.searchsorted(code, base + lo_p)  # (global) positives of the objective before the window
        phi = torch.searchsorted(code, base + hi_p)
        pos_key_sum = _prefix(loc[pos])
        mid_neg = (hi_p - lo_p) - (phi - plo)
        mid_sum = (key_sum[hi_p] - key_sum[lo_p]) - (pos_key_sum[phi] - pos_key_sum[plo])
        below = lo_p - (plo - first)
        if floors is not None:
            st = torch.searchsorted(ks, floors[order[pos]], right=False)  # first row of the group
            below = below - (st - (torch.searchsorted(code, base + st) - first))
        soft = below + (mid_neg * (loc[pos] + t / 2) - mid_sum) / t
        c = coef[order[pos], obj] if coef.ndim == 2 else coef[obj]
        values = torch.zeros(labels.shape[1], dtype=torch.float64, device=scores.device)
        values.index_add_(0, obj, soft * c.to(torch.float64))
        ctx.save_for_backward(order, lo, hi, labels, coef, t)
        return values.to(scores.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        order, lo, hi, labels, coef, t = ctx.saved_tensors
        g = grad_out.to(labels.dtype)
        u = (labels * coef * g).sum(1) if coef.ndim == 2 else labels @ (g * coef.to(labels.dtype))
        u = u.to(torch.float64)[order]
        u_sum = _prefix(u)
        grad_sorted = ((hi - lo).to(torch.float64) * u - (u_sum[hi] - u_sum[lo])) / t
        grad = torch.empty_like(grad_sorted)
        grad[order] = grad_sorted
        return grad.to(grad_out.dtype), None, None, None, None, None, None


# --------------------------------------------------------------------------- logistic, O(|P| N)

class _LogisticAUC(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, scores: Tensor, labels: Tensor, coef: Tensor, gid: Tensor | None,
                tau: Tensor) -> Tensor:
        n, m_count = labels.shape
        s = scores.detach()
        t = tau.detach()
        value = torch.zeros(m_count, dtype=s.dtype, device=s.device)
        deriv = torch.zeros(n, m_count, dtype=s.dtype, device=s.device)
        for m in range(m_count):
            pos = torch.nonzero(labels[:, m] > 0.5).flatten()
            negs = torch.nonzero(labels[:, m] <= 0.5).flatten()
            if pos.numel() == 0 or negs.numel() == 0:
                continue
            sn = s[negs]
            rows = max(1, _CHUNK // negs.numel())
            for a in range(0, pos.numel(), rows):
                p = pos[a:a + rows]
                sig = torch.sigmoid((s[p, None] - sn[None, :]) / t)  # (chunk, |N|)
                w = (coef[p, m, None] if coef.ndim == 2 else coef[m]).expand_as(sig)
                if gid is not None:
                    w = w * (gid[p, None] == gid[negs][None, :])
                value[m] += (w * sig).sum()
                slope = w * sig * (1 - sig) / t
                deriv[p, m] += slope.sum(1)
                deriv[:, m].index_add_(0, negs, -slope.sum(0))
        ctx.save_for_backward(deriv)
        return value

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (deriv,) = ctx.saved_tensors
        return deriv @ grad_out, None, None, None, None


# --------------------------------------------------------------------------- projection (Blondel et al.)

class _ProjectionRank(torch.autograd.Function):
    """r = argmin_{r in permutahedron(1..N)} ||r - z||^2, via isotonic regression of sort(z) - (N..1)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        from scipy.optimize import isotonic_regression

        zn = z.detach().cpu().to(torch.float64).numpy()
        n = zn.shape[0]
        perm = np.argsort(-zn, kind="stable")  # descending
        s = zn[perm]
        w = np.arange(n, 0, -1, dtype=np.float64)
        fit = isotonic_regression(s - w, increasing=False)
        r = np.empty(n)
        r[perm] = s - fit.x
        ctx.perm = perm
        ctx.blocks = np.asarray(fit.blocks)
        return torch.from_numpy(r).to(device=z.device, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Jacobian in sorted order is I - B, B averaging within each isotonic block (Blondel et al., Lemma 3)
        g = grad.detach().cpu().to(torch.float64).numpy()[ctx.perm]
        starts = ctx.blocks[:-1]
        sizes = np.diff(ctx.blocks)
        means = np.repeat(np.add.reduceat(g, starts) / sizes, sizes)
        out = np.empty_like(g)
        out[ctx.perm] = g - means
        return torch.from_numpy(out).to(device=grad.device, dtype=grad.dtype)


def _softsort_rank(s: Tensor, tau: Tensor) -> Tensor:
    sorted_s = torch.sort(s).values
    p = torch.softmax(-(sorted_s[:, None] - s[None, :]).abs() / tau, dim=1)  # (N, N): position x item
    pos = torch.arange(1, s.shape[0] + 1, dtype=s.dtype, device=s.device)
    return (pos[:, None] * p).sum(0) / p.sum(0)


def soft_rank(
    scores: Tensor,
    method: Literal["projection", "softsort", "logistic"] = "projection",
    temperature: float | None = None,
    *,
    relative: bool = True,
) -> Tensor:
    """Ascending soft ranks (1 = lowest score) of a batch of scores, shape (N,) -> (N,).

    ``projection``: Blondel et al. 2020 (what ``torchsort.soft_rank`` computes), O(N log N);
    ``softsort``: Prillo & Eisenschlos 2020, O(N^2); ``logistic``: ``1/2 + sum_j sigmoid((s_i - s_j)/tau)``,
    O(N^2). As the temperature goes to 0 every one tends to the hard rank (ties: the average rank for
    projection and logistic).

    Examples
    --------
    >>> soft_rank(torch.tensor([0.3, -1.0, 2.0]), temperature=1e-3).tolist()
    [2.0, 1.0, 3.0]
    """
    s, _ = _check(scores, torch.zeros(scores.shape[0], 1))
    tau = _temperature(s, method, temperature, relative)
    if method == "projection":
        out: Tensor = _ProjectionRank.apply(s / tau)  # type: ignore[no-untyped-call]
        return out
    if method == "softsort":
        return _softsort_rank(s, tau)
    if method == "logistic":
        return 0.5 + torch.sigmoid((s[:, None] - s[None, :]) / tau).sum(1)
    raise SoftRankError(f"soft_rank method must be projection, softsort or logistic. Got {method!r} instead.")


def _rank_sum_auc(r: Tensor, y: Tensor) -> Tensor:
    p = y.sum(0)
    q = y.shape[0] - p
    ok = (p > 0) & (q > 0)
    num = y.T @ r - p * (p + 1) / 2
    return torch.where(ok, num / torch.where(ok, p * q, torch.ones_like(p)), torch.zeros_like(p))


def soft_auc(
    scores: Tensor,
    labels: Tensor,
    *,
    method: Method = "pl",
    temperature: float | None = None,
    relative: bool = True,
    group: Tensor | np.ndarray | None = None,
) -> Tensor:
    """Differentiable AUC of ONE score against each of M objectives, shape (M,).

    Parameters
    ----------
    scores : (N,) or (N, 1) float tensor, the ensemble score.
    labels : (N, M) or (N,) tensor of 0/1 labels.
    method : ``"pl"`` (O(N log N), default), ``"logistic"``, ``"projection"`` or ``"softsort"``.
    temperature : relative temperature (see the module docstring); default per method in
        :data:`DEFAULT_TEMPERATURE`.
    relative : scale ``temperature`` by the score spread (and 1/N for projection). Default True.
    group : optional (N,) request ids: soft AUC inside each group, averaged with impression weights over
        groups holding both classes (GAUC-aligned training). Methods ``pl`` and ``logistic`` only.

    Returns
    -------
    (M,) tensor; 0 for an objective without a positive or a negative (it contributes nothing).

    Examples
    --------
    >>> s = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    >>> y = torch.tensor([[0], [0], [1], [1]])
    >>> soft_auc(s, y, temperature=1e-4)
    tensor([0.7500], grad_fn=<_PiecewiseLinearAUCBackward>)
    """
    s, y = _check(scores, labels)
    tau = _temperature(s, method, temperature, relative)
    gid = _group_ids(group, s.shape[0], s.device)
    if gid is not None and method not in ("pl", "logistic"):
        raise SoftRankError(f"group-wise soft AUC supports method 'pl' or 'logistic'. Got {method!r} instead.")
    if s.shape[0] == 0:
        return torch.zeros(y.shape[1], dtype=s.dtype, device=s.device)
    if method == "pl":
        coef = _coefficients(y, gid)
        keys, floors, local = _pl_keys(s, gid, tau)
        out: Tensor = _PiecewiseLinearAUC.apply(s, y, coef, keys, floors, local, tau)  # type: ignore[no-untyped-call]
        return out
    if method == "logistic":
        out = _LogisticAUC.apply(s, y, _coefficients(y, gid), gid, tau)  # type: ignore[no-untyped-call]
        return out
    if method == "projection":
        return _rank_sum_auc(_ProjectionRank.apply(s / tau), y)  # type: ignore[no-untyped-call]
    return _rank_sum_auc(_softsort_rank(s, tau), y)


def soft_auc_loss(
    scores: Tensor,
    labels: Tensor,
    weights: Sequence[float] | Tensor | None = None,
    *,
    method: Method = "pl",
    temperature: float | None = None,
    relative: bool = True,
    group: Tensor | np.ndarray | None = None,
) -> Tensor:
    """HarmonRank's rank loss ``L = - sum_m w_m softAUC_m`` (equal weights by default, as in the paper).

    Lies in ``[-sum_m w_m, 0]``; objectives without both classes in the batch contribute 0.

    Examples
    --------
    >>> s = torch.randn(1000, requires_grad=True)
    >>> y = (torch.rand(1000, 6) < 0.1).long()
    >>> soft_auc_loss(s, y).backward()
    """
    auc = soft_auc(scores, labels, method=method, temperature=temperature, relative=relative, group=group)
    if weights is None:
        return -auc.sum()
    w = torch.as_tensor(weights, dtype=auc.dtype, device=auc.device)
    if w.shape != auc.shape:
        raise SoftRankError(f"weights must have one entry per objective ({auc.shape[0]}). Got {tuple(w.shape)}.")
    return -(w * auc).sum()
