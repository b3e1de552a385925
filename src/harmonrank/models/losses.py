"""Training objectives for a one-score ensemble: rank-sum AUC, per-objective BCE, pairwise logistic.

Each loss is an nn.Module ``loss(score (B,), labels (B, M), group (B,)) -> scalar`` so that losses with
parameters (the BCE heads) train with the model, and the trainer never branches on which one it holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ranking import soft_auc_loss

__all__ = ["BCELoss", "LossName", "PairwiseLogisticLoss", "RankLoss", "make_loss"]

LossName = Literal["rank", "rank_group", "bce", "pairwise"]


class RankLoss(nn.Module):
    """HarmonRank's loss: ``- sum_m w_m softAUC_m`` (``group_wise``: soft AUC inside each request)."""

    weights: Tensor

    def __init__(self, weights: Sequence[float], method: str = "pl", temperature: float | None = None,
                 group_wise: bool = False) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))
        self.method = method
        self.temperature = temperature
        self.group_wise = group_wise

    def forward(self, score: Tensor, labels: Tensor, group: Tensor) -> Tensor:
        w = self.weights
        return soft_auc_loss(score, labels, w, method=self.method,  # type: ignore[arg-type]
                             temperature=self.temperature, group=group if self.group_wise else None) / w.sum()


class BCELoss(nn.Module):
    """Sum over objectives of BCE on ``a_m * score + b_m`` (a_m > 0 learned): one score, K classification
    losses, the one-step ensemble's usual supervision."""

    weights: Tensor

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        m = len(weights)
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))
        self.scale = nn.Parameter(torch.zeros(m))
        self.bias = nn.Parameter(torch.full((m,), -3.0))

    def forward(self, score: Tensor, labels: Tensor, group: Tensor) -> Tensor:
        z = score[:, None] * F.softplus(self.scale) / math.log(2.0) + self.bias  # softplus(0) = ln 2: slope 1
        per = F.binary_cross_entropy_with_logits(z, labels.to(z.dtype), reduction="none").mean(0)
        w = self.weights
        return (per * w).sum() / w.sum()


class PairwiseLogisticLoss(nn.Module):
    """RankNet-style: mean over positive-negative pairs of log(1 + exp(-(s_i - s_j))), weighted per objective.

    All pairs of the batch, in chunks of positives: O(|P| B) time, no B x B tensor kept beyond a chunk.
    """

    weights: Tensor

    def __init__(self, weights: Sequence[float], chunk: int = 1 << 22) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))
        self.chunk = chunk

    def forward(self, score: Tensor, labels: Tensor, group: Tensor) -> Tensor:
        total = score.new_zeros(())
        w = self.weights
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


def make_loss(name: str, weights: Sequence[float], *, method: str = "pl",
              temperature: float | None = None) -> nn.Module:
    if name == "rank":
        return RankLoss(weights, method, temperature)
    if name == "rank_group":
        return RankLoss(weights, method, temperature, group_wise=True)
    if name == "bce":
        return BCELoss(weights)
    if name == "pairwise":
        return PairwiseLogisticLoss(weights)
    raise ValueError(f"loss must be rank, rank_group, bce or pairwise. Got {name!r} instead.")
