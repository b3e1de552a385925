"""Model inputs from a Table: upstream scores as standardised logits, personalised features encoded.

Vocabularies and statistics are fitted on the training table only and saved as JSON with every model.
Categorical values unseen at fit time map to id 0 ("unknown"); missing numeric values become 0 after
standardisation plus a missing-indicator column, so a model never sees NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Table
from .errors import DataError

__all__ = ["EncodedBatch", "FeatureEncoder"]

_EPS = 1e-6


@dataclass
class EncodedBatch:
    """Tensors for a model: ``scores`` (n, M) raw probabilities, ``logits`` (n, M) standardised,
    ``categorical`` (n, C) int64 ids (0 = unknown), ``numeric`` (n, D) float32."""

    scores: torch.Tensor
    logits: torch.Tensor
    categorical: torch.Tensor
    numeric: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def index(self, idx: torch.Tensor | np.ndarray | slice) -> EncodedBatch:
        return EncodedBatch(self.scores[idx], self.logits[idx], self.categorical[idx], self.numeric[idx])


@dataclass
class FeatureEncoder:
    """Fitted on train: logit mean/std per objective, categorical vocabularies, numeric mean/std."""

    objectives: tuple[str, ...] = ()
    logit_mean: list[float] = field(default_factory=list)
    logit_std: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    numeric_mean: dict[str, float] = field(default_factory=dict)
    numeric_std: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def logit(p: np.ndarray) -> np.ndarray:
        q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
        return np.asarray(np.log(q) - np.log1p(-q))

    @classmethod
    def fit(cls, table: Table, max_vocab: int = 10_000) -> FeatureEncoder:
        """Learn statistics and vocabularies from ``table`` (the training split)."""
        z = cls.logit(table.scores)
        enc = cls.fit_columns(table.features, table.config.categorical, table.config.numeric, max_vocab)
        enc.objectives = tuple(table.objectives)
        enc.logit_mean = z.mean(0).tolist()
        enc.logit_std = np.maximum(z.std(0), _EPS).tolist()
        return enc

    @classmethod
    def fit_columns(cls, features: dict[str, np.ndarray], categorical: tuple[str, ...] | list[str],
                    numeric: tuple[str, ...] | list[str], max_vocab: int = 10_000) -> FeatureEncoder:
        """Vocabularies (the ``max_vocab`` most frequent values) and numeric mean/std of feature columns."""
        vocab = {}
        for name in categorical:
            values, counts = np.unique(np.asarray(features[name]).astype(str), return_counts=True)
            keep = values[np.argsort(-counts, kind="stable")][:max_vocab]
            vocab[name] = sorted(keep.tolist())
        num_mean, num_std = {}, {}
        for name in numeric:
            v = np.asarray(features[name], dtype=np.float64)
            finite = v[np.isfinite(v)]
            num_mean[name] = float(finite.mean()) if finite.size else 0.0
            num_std[name] = float(finite.std()) if finite.size > 1 and finite.std() > 0 else 1.0
        return cls(vocab=vocab, numeric_mean=num_mean, numeric_std=num_std)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """Embedding table sizes (vocabulary + 1 for the unknown id 0)."""
        return tuple(len(v) + 1 for v in self.vocab.values())

    @property
    def numeric_dim(self) -> int:
        return 2 * len(self.numeric_mean)  # value + missing indicator

    def transform(self, table: Table) -> EncodedBatch:
        if tuple(table.objectives) != self.objectives:
            raise DataError(f"model was fitted on objectives {self.objectives}; the data has {table.objectives}")
        z = (self.logit(table.scores) - np.asarray(self.logit_mean)) / np.asarray(self.logit_std)
        cats, nums = self.encode_columns(table.features, len(table))
        return EncodedBatch(
            scores=torch.from_numpy(table.scores.astype(np.float32)),
            logits=torch.from_numpy(z.astype(np.float32)),
            categorical=torch.from_numpy(cats),
            numeric=torch.from_numpy(nums),
        )

    def encode_columns(self, features: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Categorical ids (n, C) int64, 0 = unknown; numeric (n, 2D) float32: value, missing flag."""
        cats = np.zeros((n, len(self.vocab)), dtype=np.int64)
        for k, (name, values) in enumerate(self.vocab.items()):
            col = np.asarray(features[name]).astype(str)
            known = np.asarray(values, dtype=str)
            pos = np.clip(np.searchsorted(known, col), 0, max(len(known) - 1, 0))
            hit = known[pos] == col if len(known) else np.zeros(n, bool)
            cats[:, k] = np.where(hit, pos + 1, 0)
        nums = np.zeros((n, self.numeric_dim), dtype=np.float32)
        for k, name in enumerate(self.numeric_mean):
            v = np.asarray(features[name], dtype=np.float64)
            miss = ~np.isfinite(v)
            nums[:, 2 * k] = np.where(miss, 0.0, (v - self.numeric_mean[name]) / self.numeric_std[name])
            nums[:, 2 * k + 1] = miss
        return cats, np.clip(nums, -10, 10)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives),
            "logit_mean": self.logit_mean,
            "logit_std": self.logit_std,
            "vocab": self.vocab,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(
            objectives=tuple(d["objectives"]),
            logit_mean=list(d["logit_mean"]),
            logit_std=list(d["logit_std"]),
            vocab={k: list(v) for k, v in d["vocab"].items()},
            numeric_mean=dict(d["numeric_mean"]),
            numeric_std=dict(d["numeric_std"]),
        )
