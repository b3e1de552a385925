"""Building blocks shared by the neural rankers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["UserEncoder", "log_scores"]


def log_scores(scores: Tensor) -> Tensor:
    """log of the probabilities, clipped away from 0 (the weighted product's scale)."""
    return torch.log(scores.clamp(1e-6, 1.0))


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
            x = torch.zeros(categorical.shape[0], 1, device=categorical.device)
        else:
            x = torch.cat(parts, dim=1)
        out: Tensor = self.mlp(x)
        return out
