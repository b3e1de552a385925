"""The one-step ensemble network, the industry's "popular solution" the paper improves on.

Scores (as standardised logits) and the user-feature embedding are concatenated and an MLP outputs the
ensemble score directly: no objective tokens, no alignment step, no fusion guided by user features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..features import EncodedBatch
from .common import LogitStandardizer, UserEncoder

__all__ = ["OneStepConfig", "OneStepNet"]


@dataclass(frozen=True)
class OneStepConfig:
    objectives: tuple[str, ...]
    vocab_sizes: tuple[int, ...] = ()
    numeric_dim: int = 0
    hidden: tuple[int, ...] = (128, 64)
    cat_dim: int = 8
    user_dim: int = 32
    use_user: bool = True
    preference: bool = False  # True: objective weights w are concatenated to the input (docs/preference.md)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "vocab_sizes", tuple(self.vocab_sizes))
        object.__setattr__(self, "hidden", tuple(self.hidden))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(objectives=list(self.objectives), vocab_sizes=list(self.vocab_sizes), hidden=list(self.hidden))
        return d


class OneStepNet(nn.Module):
    """MLP([standardised logits, user]) -> (B,) ensemble score.

    Examples
    --------
    >>> net = OneStepNet(OneStepConfig(objectives=("buy", "follow")))
    >>> net(EncodedBatch(torch.rand(4, 2), torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 0))).shape
    torch.Size([4])
    """

    default_preference: Tensor

    def __init__(self, config: OneStepConfig) -> None:
        super().__init__()
        self.config = config
        m = len(config.objectives)
        self.standardize = LogitStandardizer(m)
        self.user = UserEncoder(config.vocab_sizes, config.numeric_dim, config.cat_dim, config.user_dim) \
            if config.use_user else None
        layers: list[nn.Module] = []
        width = m + (config.user_dim if config.use_user else 0) + (m if config.preference else 0)
        if config.preference:
            self.register_buffer("default_preference", torch.full((m,), 1.0 / m))
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, batch: EncodedBatch) -> Tensor:
        """(B,) ensemble scores of ``batch``."""
        logits = self.standardize(batch.scores)  # (B, M)
        x = logits if self.user is None else torch.cat([logits, self.user(batch.categorical, batch.numeric)], dim=1)
        if self.config.preference:
            w = batch.weights if batch.weights is not None else self.default_preference.expand(*logits.shape)
            x = torch.cat([x, w.to(x.dtype)], dim=1)
        score: Tensor = self.mlp(x)[:, 0]
        return score

    def set_default_preference(self, weights: Tensor) -> None:
        """The objective weights used when a batch carries none (normalised to the simplex)."""
        with torch.no_grad():
            self.default_preference.copy_(weights / weights.sum())
