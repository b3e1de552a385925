"""Training objectives for a one-score ensemble: rank-sum AUC, per-objective BCE, pairwise logistic.

Each loss is an nn.Module ``loss(score (B,), labels (B, M), group (B,), weights=None) -> scalar`` so that losses
with parameters (the BCE heads) train with the model, and the trainer never branches on which one it holds.
``weights`` ((M,) objective weights) replaces the loss's own for one step: preference-conditioned training
draws them per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ranking import METHODS, Method, soft_auc_loss

__all__ = [
    "LOSSES",
    "BCELoss",
    "LossName",
    "LossSpec",
    "MultiLabelBCELoss",
    "PairwiseLogisticLoss",
    "RankLoss",
    "make_loss",
]

LossName = Literal["rank", "rank_group", "bce", "pairwise"]


class RankLoss(nn.Module):
    """HarmonRank's loss: ``- sum_m w_m softAUC_m / sum_m w_m`` with ``w`` the objective weights
    (``group_wise``: soft AUC inside each request). ``method`` and ``temperature`` choose the soft-AUC operator
    (:func:`harmonrank.ranking.soft_auc`)."""

    weights: Tensor

    def __init__(self, objective_weights: Sequence[float], method: Method = "pl", temperature: float | None = None,
                 group_wise: bool = False) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"loss method must be one of {', '.join(METHODS)}. Got {method!r} instead.")
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"temperature must be > 0. Got {temperature!r} instead.")
        self.register_buffer("weights", torch.tensor(list(objective_weights), dtype=torch.float32))
        self.method = method
        self.temperature = temperature
        self.group_wise = group_wise

    def forward(self, score: Tensor, labels: Tensor, group: Tensor, weights: Tensor | None = None) -> Tensor:
        w = self.weights if weights is None else weights
        return soft_auc_loss(score, labels, w, method=self.method,
                             temperature=self.temperature, group=group if self.group_wise else None) / w.sum()


class BCELoss(nn.Module):
    """Sum over objectives of BCE on ``a_m * score + b_m`` (a_m > 0 learned): one score, K classification
    losses, the one-step ensemble's usual supervision. ``objective_weights`` weight the K losses."""

    weights: Tensor

    def __init__(self, objective_weights: Sequence[float]) -> None:
        super().__init__()
        m = len(objective_weights)
        self.register_buffer("weights", torch.tensor(list(objective_weights), dtype=torch.float32))
        self.scale = nn.Parameter(torch.zeros(m))
        self.bias = nn.Parameter(torch.full((m,), -3.0))

    def forward(self, score: Tensor, labels: Tensor, group: Tensor, weights: Tensor | None = None) -> Tensor:
        z = score[:, None] * F.softplus(self.scale) / math.log(2.0) + self.bias  # softplus(0) = ln 2: slope 1
        per = F.binary_cross_entropy_with_logits(z, labels.to(z.dtype), reduction="none").mean(0)
        w = self.weights if weights is None else weights
        return (per * w).sum() / w.sum()


class PairwiseLogisticLoss(nn.Module):
    """RankNet-style: mean over positive-negative pairs of log(1 + exp(-(s_i - s_j))), weighted per objective.

    All pairs of the batch, in chunks of positives: O(|P| B) time, no B x B tensor kept beyond a chunk.
    """

    weights: Tensor

    def __init__(self, objective_weights: Sequence[float], chunk: int = 1 << 22) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(list(objective_weights), dtype=torch.float32))
        self.chunk = chunk

    def forward(self, score: Tensor, labels: Tensor, group: Tensor, weights: Tensor | None = None) -> Tensor:
        total = score.new_zeros(())
        w = self.weights if weights is None else weights
        for m in range(labels.shape[1]):
            pos = score[labels[:, m] > 0]
            neg = score[labels[:, m] == 0]
            if pos.numel() == 0 or neg.numel() == 0:
                continue
            rows = max(1, self.chunk // neg.numel())
            acc = score.new_zeros(())
            for a in range(0, pos.numel(), rows):
                acc = acc + F.softplus(neg[None, :] - pos[a:a + rows, None]).sum()
            total = total + w[m] * acc / (pos.numel() * neg.numel())
        return total / w.sum()


class MultiLabelBCELoss(nn.Module):
    """Mean BCE of K logits against K labels: ``loss(logits (B, K), labels (B, K), group) -> scalar``.

    The upstream multi-task model's loss (one logit per objective), not an ensemble loss.
    """

    def forward(self, logits: Tensor, labels: Tensor, group: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


@dataclass(frozen=True)
class LossSpec:
    """One ensemble loss: its factory ``build(objective_weights, method, temperature)`` and what its value
    is, for progress lines ("loss -0.81 (= -weighted mean soft AUC)")."""

    build: Callable[[Sequence[float], Method, float | None], nn.Module]
    meaning: str


#: loss name -> LossSpec; add a new ensemble loss here
LOSSES: dict[str, LossSpec] = {
    "rank": LossSpec(lambda w, method, temperature: RankLoss(w, method, temperature), "-weighted mean soft AUC"),
    "rank_group": LossSpec(lambda w, method, temperature: RankLoss(w, method, temperature, group_wise=True),
                           "-weighted mean soft GAUC"),
    "bce": LossSpec(lambda w, method, temperature: BCELoss(w), "weighted mean BCE"),
    "pairwise": LossSpec(lambda w, method, temperature: PairwiseLogisticLoss(w),
                         "weighted mean pairwise logistic loss"),
}


def make_loss(name: str, objective_weights: Sequence[float], *, method: Method = "pl",
              temperature: float | None = None) -> nn.Module:
    """The loss ``name`` (see :data:`LOSSES`) over objectives weighted by ``objective_weights``."""
    if name not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}. Got {name!r} instead.")
    return LOSSES[name].build(objective_weights, method, temperature)
