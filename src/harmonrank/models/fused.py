"""An inference form of a trained :class:`HarmonRankNet`: the same function with its linear maps folded.

Scoring is bound by memory traffic and kernel count, not arithmetic (benchmarks/results/serving.md), so
the exported graph does the fewest passes over the data it can:

* step-1 attention: Q, K, V come from one GEMM with the 1/sqrt(d_h) scale folded into the query weights
  (writing the M x M products as broadcasts instead of batched matmuls was measured slower at one thread);
* the user encoder's first layer is folded into per-column embedding tables (a sum of gathers instead of a
  concatenation and a GEMM), and everything linear in the user vector (the cross-attention query in token
  space, the head's user term, the gate) is one GEMM from the hidden layer;
* cross-attention's value and output projections are folded into the head's first layer (softmax weights
  sum to 1, so the value bias passes through), and the key bias, constant over tokens, is dropped from
  the softmax where it cancels.

Folding is done in float64 and rounded once; ``tests/test_export.py`` checks the ONNX graph of this form
against the trained network in PyTorch (1e-5), and ``tests/test_models.py`` checks this module directly.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special
from torch import Tensor, nn

from .. import kernels
from ..features import EncodedBatch
from .common import log_scores
from .harmonrank import HarmonRankNet

__all__ = ["FusedHarmonRank"]


def _param(t: Tensor, dtype: torch.dtype) -> nn.Parameter:
    """A folded (float64) weight, rounded once to ``dtype``."""
    return nn.Parameter(t.detach().to(dtype).contiguous(), requires_grad=False)


class _FusedBlock(nn.Module):
    def __init__(self, block: Any, heads: int, dtype: torch.dtype) -> None:
        super().__init__()
        attn = block.attn
        d: int = attn.q.weight.shape[0]
        self.heads: int = heads
        self.dh: int = d // heads
        scale = self.dh**-0.5
        f64 = torch.float64
        self.w_qkv = _param(torch.cat([attn.q.weight.to(f64) * scale, attn.kv.weight.to(f64)]), dtype)  # (3d, d)
        self.b_qkv = _param(torch.cat([attn.q.bias.to(f64) * scale, attn.kv.bias.to(f64)]), dtype)
        self.out = copy.deepcopy(attn.out)
        self.norm1 = copy.deepcopy(block.norm1)
        self.ff = copy.deepcopy(block.ff)
        self.norm2 = copy.deepcopy(block.norm2)
        # the fused C++ kernel (harmonrank.kernels) takes the block's own parameters, the scale unfolded; a
        # plain list, so it is neither saved nor exported (the exported graph is the PyTorch form below)
        self.eps = float(block.norm1.eps)
        self.kernel_ok = block.norm1.eps == block.norm2.eps
        self.kernel_params = [p.detach().to(torch.float32).contiguous().clone() for p in kernels.block_params(block)]

    def forward(self, x: Tensor) -> Tensor:  # (B, M, d) -> (B, M, d)
        if self.kernel_ok and not torch.compiler.is_exporting() and kernels.available(x):
            return kernels.align_block_params(x, self.kernel_params, self.heads, self.eps)
        b, m, d = x.shape
        qkv = F.linear(x, self.w_qkv, self.b_qkv).view(b, m, 3, self.heads, self.dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, M, dh); the 1/sqrt(dh) scale is in the query weights
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, H, Mq, Mk)
        o = (a @ v).transpose(1, 2).reshape(b, m, d)  # (B, Mq, d)
        x = self.norm1(x + self.out(o))
        out: Tensor = self.norm2(x + self.ff(x))
        return out


class FusedHarmonRank(nn.Module):
    """``EncodedBatch -> (B,)``: a trained HarmonRankNet's score, folded for inference.

    The folds are computed in float64 and rounded to ``dtype`` (float32 for export; float64 shows the
    algebra is exact).
    """

    knots: Tensor

    def __init__(self, trained: HarmonRankNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        net: Any = trained  # submodules accessed by name below
        cfg = net.config
        f64 = torch.float64
        m, d = len(cfg.objectives), cfg.d_model
        self.m, self.d, self.gate_branch, self.use_user = m, d, cfg.gate_branch, cfg.use_user
        self.standardize = copy.deepcopy(net.standardize)
        self.register_buffer("knots", net.knots.clone(), persistent=False)
        self.w_tok = _param(torch.block_diag(*net.token_weight.to(f64).unbind(0)), dtype)  # type: ignore[no-untyped-call]
        self.b_tok = _param(net.objective.reshape(-1), dtype)
        self.blocks = nn.ModuleList(_FusedBlock(blk, cfg.n_heads, dtype) for blk in net.blocks)

        # what is linear in the user vector u: [cross-attention query in token space | head's u term | gate]
        cross, head1, head2 = net.cross, net.head[0], net.head[2]
        wq, bq = cross.q.weight.to(f64), cross.q.bias.to(f64)
        wk = cross.kv.weight.to(f64)[:d]
        wv, bv = cross.kv.weight.to(f64)[d:], cross.kv.bias.to(f64)[d:]
        wo, bo = cross.out.weight.to(f64), cross.out.bias.to(f64)
        w1, b1 = head1.weight.to(f64), head1.bias.to(f64)  # (hd, M d + d + d)
        w1t, w1f, w1u = w1[:, : m * d], w1[:, m * d: (m + 1) * d], w1[:, (m + 1) * d:]
        rows = [wk.T @ wq / d**0.5, w1u]
        bias = [wk.T @ bq / d**0.5, b1 + w1f @ (wo @ bv + bo)]
        if cfg.gate_branch:
            rows.append(net.gate.weight.to(f64))
            bias.append(net.gate.bias.to(f64))
        s_w, s_b = torch.cat(rows), torch.cat(bias)  # applied to u: (d + hd [+ M], d)
        self.n_query, self.n_head = d, w1.shape[0]
        if cfg.use_user:
            enc = net.user
            mlp1, mlp2 = enc.mlp[0], enc.mlp[2]
            wa = mlp1.weight.to(f64)  # (d, width or 1)
            cat_dim = enc.embeddings[0].weight.shape[1] if len(enc.embeddings) else 0
            self.tables = nn.ParameterList(
                _param(e.weight.to(f64) @ wa[:, k * cat_dim:(k + 1) * cat_dim].T, dtype)
                for k, e in enumerate(enc.embeddings))
            self.has_numeric = enc.width > cat_dim * len(enc.embeddings)
            self.w_num = _param(wa[:, cat_dim * len(enc.embeddings):], dtype) if self.has_numeric else None
            self.b_user = _param(mlp1.bias.to(f64), dtype)
            self.w_u = _param(s_w @ mlp2.weight.to(f64), dtype)  # folded through the user MLP's second layer
            self.b_u = _param(s_w @ mlp2.bias.to(f64) + s_b, dtype)
        else:
            self.tables = nn.ParameterList()
            self.has_numeric, self.w_num = False, None
            self.u_const = _param(s_w @ net.user_const.to(f64) + s_b, dtype)
        self.w_head = _param(torch.cat([w1t, w1f @ wo @ wv], dim=1), dtype)  # on [aligned tokens, pooled tokens]
        self.head2 = copy.deepcopy(head2)
        self.requires_grad_(False)
        # the whole-net kernel (harmonrank.kernels.ScorePlan) takes the tokens' weights unfolded
        self.kernel_tok = [t.detach().to(torch.float32).contiguous().clone() for t in (
            net.knots, net.token_weight, net.objective)]

    def forward(self, batch: EncodedBatch) -> Tensor:
        if self._kernel_ok(batch.scores):
            return self._kernel_forward(batch)
        scores, categorical, numeric = batch.scores, batch.categorical, batch.numeric
        b = scores.shape[0]
        z = self.standardize(scores)  # (B, M)
        basis = torch.cat([z[..., None], torch.relu(z[..., None] - self.knots)], dim=-1).reshape(b, -1)
        x = (basis @ self.w_tok + self.b_tok).view(b, self.m, self.d)
        for blk in self.blocks:
            x = blk(x)
        if not self.use_user:
            uterms = self.u_const.expand(b, -1)
        elif b > 1 and not torch.compiler.is_exporting():
            new, run = _runs(categorical, numeric)
            uterms = self._user_terms(categorical[new], numeric[new])[run]
        else:
            uterms = self._user_terms(categorical, numeric)
        g = uterms[:, : self.n_query]  # cross-attention query, in token space
        w = torch.softmax((x * g[:, None, :]).sum(-1), dim=-1)  # (B, M)
        pooled = (w[..., None] * x).sum(1)  # (B, d)
        h = torch.cat([x.reshape(b, -1), pooled], dim=1) @ self.w_head.T
        h = h + uterms[:, self.n_query: self.n_query + self.n_head]
        score: Tensor = self.head2(F.gelu(h))[:, 0]
        if self.gate_branch:
            gate = F.softplus(uterms[:, self.n_query + self.n_head:])
            score = score + (gate * log_scores(scores)).sum(1)
        return score

    def _kernel_ok(self, scores: Tensor) -> bool:
        """Whether the whole-net kernel runs: float32 weights on the CPU, not exporting, the kernel loaded."""
        return (scores.device.type == "cpu" and self._weights_fit_kernel() and not torch.compiler.is_exporting()
                and kernels.available())

    def _weights_fit_kernel(self) -> bool:
        return (self.w_head.dtype == torch.float32 and self.w_head.device.type == "cpu"
                and all(getattr(blk, "kernel_ok", False) for blk in self.blocks))

    def score_numpy(self, scores: np.ndarray, categorical: np.ndarray, numeric: np.ndarray) -> np.ndarray | None:
        """(B,) float32 scores of encoded numpy inputs through the kernel, with no torch call on the way (what a
        server pays per request while holding the GIL); None when the kernel cannot run (then call the module)."""
        if not (self._weights_fit_kernel() and kernels.available()):
            return None
        return self._plan().score(scores, categorical, numeric)

    def _kernel_forward(self, batch: EncodedBatch) -> Tensor:
        return torch.from_numpy(self._plan().score(batch.scores.detach().numpy(), batch.categorical.detach().numpy(),
                                                   batch.numeric.detach().numpy()))

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the kernel plan behind (it holds raw pointers); it is rebuilt on use."""
        state = self.__dict__.copy()
        state.pop("_score_plan", None)
        return state

    def _plan(self) -> _Plan:
        """The kernel's plan, built on first use as a snapshot of this form's weights (an inference form does
        not train; a changed form must be rebuilt from its network)."""
        plan: _Plan | None = getattr(self, "_score_plan", None)
        if plan is None:
            plan = _Plan(self)
            self._score_plan = plan
        return plan

    def _user_terms(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        """(B, d + head_dim [+ M]): everything linear in the user vector, from the folded user encoder."""
        return _folded_user(list(self.tables), self.w_num, self.b_user, self.w_u, self.b_u, categorical, numeric)


def _folded_user(tables: list[Tensor], w_num: Tensor | None, b_user: Tensor, w_u: Tensor, b_u: Tensor,
                 categorical: Tensor, numeric: Tensor) -> Tensor:
    """The folded user encoder: per-column embedding tables summed with the numeric term, GELU, one GEMM."""
    pre = b_user.expand(categorical.shape[0], -1)
    for k, table in enumerate(tables):
        pre = pre + F.embedding(categorical[:, k], table)
    if w_num is not None:
        pre = pre + F.linear(numeric, w_num)
    return F.linear(F.gelu(pre), w_u, b_u)


def _runs(categorical: Tensor, numeric: Tensor) -> tuple[Tensor, Tensor]:
    """Candidates of one request share their user's features, and scoring keeps a request's rows together:
    (first row of each run of equal feature rows (B,) bool, each row's run index (B,) int64), so user terms
    are computed once per run and repeated."""
    b = categorical.shape[0]
    new = torch.ones(b, dtype=torch.bool, device=categorical.device)
    if b > 1:
        new[1:] = (categorical[1:] != categorical[:-1]).any(1) | (numeric[1:] != numeric[:-1]).any(1)
    return new, torch.cumsum(new, 0) - 1


class _Plan:
    """What the kernel path of a :class:`FusedHarmonRank` reads: the kernel's :class:`kernels.ScorePlan`,
    the standardiser's statistics and the folded user encoder as float32 numpy arrays."""

    def __init__(self, form: FusedHarmonRank) -> None:
        blocks: list[Any] = list(form.blocks)
        knots, wtok, btok = form.kernel_tok
        self.kernel = kernels.ScorePlan([blk.kernel_params for blk in blocks], blocks[0].heads, blocks[0].eps, knots,
                                        wtok, btok, form.w_head, form.head2.weight[0], float(form.head2.bias[0]),
                                        form.gate_branch)
        std = form.standardize
        self.lo, self.hi = float(std.bounds[0]), float(std.bounds[1])
        self.mean_t, self.std_t = std.mean.detach().clone(), std.std.detach().clone()
        self.mean, self.std = self.mean_t.numpy(), self.std_t.numpy()
        self.gate0 = form.n_query + form.n_head if form.gate_branch else None  # softplus from this column on
        self.use_user = form.use_user  # no reference to the form itself: it holds this plan

        def f32(t: Tensor) -> Tensor:  # a copy: the plan is a snapshot of the form's weights
            return t.detach().to(torch.float32).contiguous().clone()

        if form.use_user:  # torch copies, and numpy views of the same memory
            self.t_tables = [f32(t) for t in form.tables]
            self.t_w_num = f32(form.w_num) if form.w_num is not None else None
            self.t_b_user, self.t_w_u, self.t_b_u = f32(form.b_user), f32(form.w_u), f32(form.b_u)
            self.tables = [t.numpy() for t in self.t_tables]
            self.w_num = self.t_w_num.numpy() if self.t_w_num is not None else None
            self.b_user, self.w_u_t, self.b_u = self.t_b_user.numpy(), self.t_w_u.numpy().T, self.t_b_u.numpy()
        else:
            self.u_const = self._softplus_gate(f32(form.u_const).numpy()[None, :].copy())

    def score(self, scores: np.ndarray, cats: np.ndarray, nums: np.ndarray) -> np.ndarray:
        """The kernel path: the per-candidate inputs and the per-user terms in numpy (a handful of calls; the
        fixed cost per batch is what a few-hundred-candidate request pays), then one kernel call."""
        scores = np.ascontiguousarray(scores)  # so every array derived from it is C-contiguous, as C reads it
        n = scores.shape[0]
        logp: np.ndarray | None = None
        if n >= 4096:  # torch's vectorised, threaded log (numpy's float64 log is scalar on AVX2 machines)
            t = torch.from_numpy(scores)
            q = t.to(torch.float64).clamp(self.lo, self.hi)
            z = ((torch.log(q) - torch.log1p(-q) - self.mean_t) / self.std_t).to(torch.float32).numpy()
            if self.gate0 is not None:
                logp = log_scores(t).numpy()
        else:  # a handful of numpy calls cost less than torch's per-operator overhead
            qn = np.clip(scores.astype(np.float64, copy=False), self.lo, self.hi)
            z = ((np.log(qn) - np.log1p(-qn) - self.mean) / self.std).astype(np.float32)
            if self.gate0 is not None:
                logp = np.log(np.clip(scores.astype(np.float32), 1e-6, 1.0))
        if self.use_user:
            new = np.ones(n, dtype=bool)
            if n > 1:  # runs of equal feature rows: a request's candidates share their user's terms
                new[1:] = (cats[1:] != cats[:-1]).any(1) | (nums[1:] != nums[:-1]).any(1)
            run = np.cumsum(new, dtype=np.int64) - 1
            if n and run[-1] >= 255:  # many users: torch's BLAS on the threads the kernel uses (numpy's pool competes)
                users = self._softplus_gate(self._torch_user_terms(torch.from_numpy(cats[new]),
                                                                   torch.from_numpy(nums[new])))
            else:
                users = self.user_terms(cats[new], nums[new])
        else:
            users, run = self.u_const, np.zeros(n, dtype=np.int64)
        return self.kernel.run(z, logp, run, users)

    def _softplus_gate(self, terms: np.ndarray) -> np.ndarray:
        if self.gate0 is not None:  # F.softplus: log(1 + e^x), x itself above 20
            g = terms[:, self.gate0:]
            terms[:, self.gate0:] = np.where(g > 20.0, g, np.log1p(np.exp(np.minimum(g, 20.0))))
        return terms

    def _torch_user_terms(self, cats: Tensor, nums: Tensor) -> np.ndarray:
        """:meth:`user_terms` before the gate's softplus, in torch (MKL on torch's threads), for many users."""
        with torch.no_grad():
            u = _folded_user(self.t_tables, self.t_w_num, self.t_b_user, self.t_w_u, self.t_b_u, cats,
                             nums.to(torch.float32))
        return np.ascontiguousarray(u.numpy(), dtype=np.float32)

    def user_terms(self, cats: np.ndarray, nums: np.ndarray) -> np.ndarray:
        """(U, d + hd [+ M]) float32 for U distinct feature rows: the folded user encoder (embedding tables
        summed, GELU, one GEMM), the gate's softplus applied."""
        pre = np.repeat(self.b_user[None, :], len(cats), axis=0)
        for k, table in enumerate(self.tables):
            pre += table[cats[:, k]]
        if self.w_num is not None:
            pre += np.asarray(nums, dtype=np.float32) @ self.w_num.T
        act = (0.5 * pre * (1.0 + special.erf(pre * np.float32(0.5**0.5)))).astype(np.float32)
        return np.ascontiguousarray(self._softplus_gate(act @ self.w_u_t + self.b_u), dtype=np.float32)
