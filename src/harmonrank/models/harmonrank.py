"""The HarmonRank ensemble network: a two-step, relation-aware fusion of M objective scores.

Reconstructed from "HarmonRank: Ranking-aligned Multi-objective Ensemble for Live-streaming E-commerce
Recommendation" (Kuaishou, arXiv 2601.02955); layer sizes are not public, these defaults are ours.

1. Objective tokens: each score becomes a vector: a per-objective, piecewise-linear function of its
   standardised logit (hinge basis at fixed knots, so the model can bend miscalibrated scores), plus a
   learned objective-id embedding.
2. Step 1, inter-objective alignment: self-attention over the M tokens (multi-head, residual, LayerNorm,
   feed-forward), so every objective is re-expressed in the light of the others.
3. Step 2, personalised fusion: the user-feature embedding queries the aligned tokens (cross-attention);
   an MLP maps [aligned tokens, fused, user] to a scalar.
4. Relation-agnostic branch: a user-conditioned, non-negative gate weights each objective's log-score, a
   personalised weighted product. The ensemble score is the sum of both branches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels
from ..errors import ConfigError
from ..features import EncodedBatch
from .common import LogitStandardizer, UserEncoder, log_scores

__all__ = ["EnsembleConfig", "HarmonRankNet"]


@dataclass(frozen=True)
class EnsembleConfig:
    """Everything needed to rebuild a HarmonRankNet; saved as JSON beside its weights."""

    objectives: tuple[str, ...]
    vocab_sizes: tuple[int, ...] = ()
    numeric_dim: int = 0
    d_model: int = 16
    n_heads: int = 2
    n_layers: int = 1
    ffn_dim: int = 32
    cat_dim: int = 8
    n_knots: int = 8
    head_dim: int = 64
    use_user: bool = True  # False: the "without personalisation" ablation (a learned constant user)
    gate_branch: bool = True
    preference: bool = False  # True: objective weights w are an input (docs/preference.md)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "vocab_sizes", tuple(self.vocab_sizes))
        if self.n_layers < 1 or self.n_heads < 1:
            raise ConfigError(f"n_layers and n_heads must be >= 1. Got {self.n_layers} and {self.n_heads} instead.")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objectives"] = list(self.objectives)
        d["vocab_sizes"] = list(self.vocab_sizes)
        return d


class _Attention(nn.Module):
    """Multi-head self-attention over a handful of tokens.

    Q, K and V come from one GEMM (the two weight matrices are concatenated on the fly, so saved models keep
    their parameter names). Eager training uses ``F.scaled_dot_product_attention`` (``nn.MultiheadAttention``'s
    extra reshapes made the net several times slower on CPU at M = 6 tokens; batched matmuls over (M, d_h)
    matrices are slower still). Under ``torch.compile`` the M x M products are written as broadcasts, which
    inductor fuses into one loop (benchmarks/results/train_step.md). The attention map is computed
    explicitly only when asked for (analysis, plots).
    """

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        b, m, d = x.shape
        h, dh = self.heads, d // self.heads
        qkv = F.linear(x, torch.cat([self.q.weight, self.kv.weight]), torch.cat([self.q.bias, self.kv.bias]))
        w = None
        if torch.compiler.is_compiling() and not need_weights:
            q, k, v = qkv.view(b, m, 1, 3, h, dh).unbind(3)  # (B, M, 1, H, dh) each
            att = torch.softmax((q * k.transpose(1, 2)).sum(-1) * dh**-0.5, dim=2)  # (B, Mq, Mk, H)
            out = (att[..., None] * v.transpose(1, 2)).sum(2).reshape(b, m, d)
            return self.out(out), None
        q, k, v = qkv.view(b, m, 3, h, dh).permute(2, 0, 3, 1, 4)  # 3 x (B, H, M, dh)
        if need_weights:
            att = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)  # (B, H, Mq, Mk)
            o = att @ v
            w = att.mean(1)  # averaged over heads: (B, Mq, Mk)
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, m, d)), w


class _CrossAttention(nn.Module):
    """One query (the user) over the M aligned tokens, single head: (B, d), (B, M, d) -> (B, d).

    Written so that no projection runs per token: the key projection moves to the query side
    (q . (W_k t + b_k) = (W_k^T q) . t + const, and the constant cancels in the softmax), and the value
    projection runs once on the pooled token (the softmax weights sum to 1, so the value bias passes through).
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, user: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        d = tokens.shape[-1]
        wk, wv = self.kv.weight[:d], self.kv.weight[d:]
        g = self.q(user) @ wk * d**-0.5  # (B, d): the query in token space
        w = torch.softmax((tokens * g[:, None, :]).sum(-1), dim=-1)  # (B, M)
        pooled = (w[..., None] * tokens).sum(1)  # (B, d)
        return self.out(F.linear(pooled, wv, self.kv.bias[d:])), w


class _AlignBlock(nn.Module):
    """Post-norm transformer encoder block over the objective tokens; returns its attention map."""

    uses_fused_kernel = True  # harmonrank.kernels: CompiledOrEager loads the kernel before tracing

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = _Attention(d, heads)
        self.norm1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        # the same block through the fused kernel (harmonrank/kernels), except in an exported graph (ONNX
        # Runtime and other runtimes know only standard operators)
        if not need_weights and not torch.compiler.is_exporting() and kernels.available(x):
            return kernels.align_block(x, self, self.attn.heads), None
        a, w = self.attn(x, need_weights)  # w: (B, M, M) when asked for
        x = self.norm1(x + a)
        return self.norm2(x + self.ff(x)), w


class HarmonRankNet(nn.Module):
    """Two-step relation-aware ensemble: an :class:`EncodedBatch` (raw (B, M) scores + user features) ->
    (B,) ensemble score. :meth:`attention` gives the step-1 attention map.

    Examples
    --------
    >>> net = HarmonRankNet(EnsembleConfig(objectives=("buy", "follow")))
    >>> batch = EncodedBatch(torch.rand(4, 2), torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 0))
    >>> net(batch).shape
    torch.Size([4])
    """

    knots: Tensor
    default_preference: Tensor

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.config = config
        m, d, k = len(config.objectives), config.d_model, config.n_knots
        self.register_buffer("knots", torch.linspace(-2.5, 2.5, k), persistent=False)
        self.standardize = LogitStandardizer(m)  # raw p -> standardised logits; statistics saved as buffers
        # per objective: hinge basis (B, k+1) @ (k+1, d), one batched matmul over the M objectives
        self.token_weight = nn.Parameter(torch.randn(m, k + 1, d) * (0.5 / (k + 1) ** 0.5))
        self.objective = nn.Parameter(torch.randn(m, d) * 0.1)
        self.blocks = nn.ModuleList(_AlignBlock(d, config.n_heads, config.ffn_dim) for _ in range(config.n_layers))
        if config.use_user:
            self.user = UserEncoder(config.vocab_sizes, config.numeric_dim, config.cat_dim, d)
        else:
            self.user_const = nn.Parameter(torch.randn(d) * 0.1)
        self.cross = _CrossAttention(d)
        # the head sees the user-guided fusion AND every aligned token: attention pooling alone is a weighted
        # average of the tokens and would blur which objective said what
        self.head = nn.Sequential(nn.Linear((m + 2) * d, config.head_dim), nn.GELU(), nn.Linear(config.head_dim, 1))
        if config.gate_branch:
            self.gate = nn.Linear(d, m)
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, 0.5413)  # softplus(0.5413) = 1: start at the equal-weight product
        if config.preference:
            # w enters three ways: a preference token in the step-1 self-attention, a FiLM of the head's hidden
            # layer (zero-initialised: starts as the plain head), and it scales the gate branch per objective
            self.preference_token = nn.Linear(m, d)
            self.film = nn.Linear(m, 2 * config.head_dim)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
            self.register_buffer("default_preference", torch.full((m,), 1.0 / m))

    def tokens(self, logits: Tensor) -> Tensor:
        """(B, M) standardised logits -> (B, M, d) objective tokens."""
        basis = torch.cat([logits[..., None], torch.relu(logits[..., None] - self.knots)], dim=-1)  # (B, M, k+1)
        out: Tensor = torch.bmm(basis.transpose(0, 1), self.token_weight).transpose(0, 1) + self.objective
        return out

    def user_vector(self, categorical: Tensor, numeric: Tensor, batch: int) -> Tensor:  # -> (B, d)
        if self.config.use_user:
            out: Tensor = self.user(categorical, numeric)
            return out
        return self.user_const.expand(batch, -1)

    def forward(self, batch: EncodedBatch) -> Tensor:
        """(B,) ensemble scores of ``batch`` (raw (B, M) probabilities, (B, C) categorical, (B, D) numeric)."""
        score, _ = self._run(batch, need_weights=False)
        return score

    def inference_form(self) -> nn.Module:
        """The same function for scoring only: its linear maps folded and, on the CPU, one fused kernel pass
        per tile of candidates (:class:`harmonrank.models.fused.FusedHarmonRank`); prediction and ONNX export
        use it. A preference-conditioned net (objective weights as an input) is its own inference form."""
        if self.config.preference:
            return self
        from .fused import FusedHarmonRank  # fused imports this module

        return FusedHarmonRank(self, dtype=self.token_weight.dtype).eval()  # a float64 net folds in float64

    def attention(self, batch: EncodedBatch) -> Tensor:
        """Step-1 objective-to-objective attention of the last block, averaged over heads: (B, M, M)."""
        _, attn = self._run(batch, need_weights=True)
        if attn is None:  # unreachable: the config requires n_layers >= 1
            raise ConfigError("attention needs n_layers >= 1")
        return attn

    def set_default_preference(self, weights: Tensor) -> None:
        """The objective weights used when a batch carries none (normalised to the simplex)."""
        with torch.no_grad():
            self.default_preference.copy_(weights / weights.sum())

    def _run(self, batch: EncodedBatch, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        logits = self.standardize(batch.scores)  # (B, M) standardised logits
        b, m = logits.shape
        tokens = self.tokens(logits)  # (B, M, d)
        w = None
        if self.config.preference:
            w = batch.weights if batch.weights is not None else self.default_preference.expand(b, m)
            w = w.to(tokens.dtype)
            tokens = torch.cat([tokens, self.preference_token(w)[:, None, :]], dim=1)  # (B, M + 1, d)
        attn = None
        for blk in self.blocks:  # step 1: align each objective with the others, (B, M, d)
            tokens, attn = blk(tokens, need_weights)
        if w is not None:
            tokens = tokens[:, :m]
            attn = attn[:, :m, :m] if attn is not None else None
        u = self.user_vector(batch.categorical, batch.numeric, b)  # (B, d)
        fused, _ = self.cross(u, tokens)  # step 2: the user queries the aligned tokens, (B, d)
        x = torch.cat([tokens.reshape(b, -1), fused, u], dim=1)
        if w is None:
            score = self.head(x)[:, 0]
        else:
            gamma, beta = self.film(w).chunk(2, dim=1)
            score = self.head[2](self.head[1](self.head[0](x)) * (1 + gamma) + beta)[:, 0]
        if self.config.gate_branch:  # relation-agnostic: personalised weighted product, gate weights >= 0
            gate = F.softplus(self.gate(u))
            if w is not None:
                gate = gate * (m * w)  # the equal point leaves the gate as trained without preferences
            score = score + (gate * log_scores(batch.scores)).sum(1)
        return score, attn
