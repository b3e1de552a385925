"""Building blocks shared by the neural rankers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..features import LOGIT_EPS

__all__ = ["LogitStandardizer", "UserEncoder", "log_scores"]


class LogitStandardizer(nn.Module):
    """(B, M) raw probabilities -> (B, M) float32 standardised logits ``(logit(p) - mean) / std``.

    ``mean`` and ``std`` are persistent float64 buffers, fitted on the training scores
    (:func:`harmonrank.features.logit_moments`) and saved with the network's parameters, so the network maps
    raw ``p_*`` to a score by itself. The arithmetic is done in float64 and rounded once to float32.
    """

    mean: Tensor
    std: Tensor
    bounds: Tensor

    def __init__(self, n_objectives: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_objectives, dtype=torch.float64))
        self.register_buffer("std", torch.ones(n_objectives, dtype=torch.float64))
        # the clip bounds as float64 tensors: an exported graph would otherwise store them as float32, and
        # 1 - 1e-6 in float32 moves the logit of p = 1 from 13.8155 to 13.8023
        self.register_buffer("bounds", torch.tensor([LOGIT_EPS, 1 - LOGIT_EPS], dtype=torch.float64),
                             persistent=False)

    def set_moments(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Install fitted statistics (one per objective)."""
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(list(mean), dtype=torch.float64))
            self.std.copy_(torch.as_tensor(list(std), dtype=torch.float64))

    def forward(self, scores: Tensor) -> Tensor:  # (B, M) -> (B, M)
        q = torch.clamp(scores.to(torch.float64), self.bounds[0], self.bounds[1])
        return ((torch.log(q) - torch.log1p(-q) - self.mean) / self.std).to(torch.float32)


def log_scores(scores: Tensor) -> Tensor:
    """float32 log of the probabilities, clipped away from 0 (the weighted product's scale)."""
    return torch.log(scores.to(torch.float32).clamp(1e-6, 1.0))


class UserEncoder(nn.Module):
    """Personalised features -> one vector: an embedding per categorical column, numeric columns as is,
    then a two-layer MLP. ``vocab_sizes`` include the unknown id 0."""

    def __init__(self, vocab_sizes: tuple[int, ...], numeric_dim: int, cat_dim: int, out_dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(v, cat_dim) for v in vocab_sizes)
        width = cat_dim * len(vocab_sizes) + numeric_dim
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(max(width, 1), out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, categorical: Tensor, numeric: Tensor) -> Tensor:  # (B, C), (B, D) -> (B, out)
        parts = [emb(categorical[:, k]) for k, emb in enumerate(self.embeddings)]
        if numeric.shape[1]:
            parts.append(numeric)
        if not parts:
            x = torch.zeros(categorical.shape[0], 1, device=categorical.device, dtype=numeric.dtype)
        else:
            x = torch.cat(parts, dim=1)
        out: Tensor = self.mlp(x)
        return out
