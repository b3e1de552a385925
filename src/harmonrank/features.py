"""Model inputs from a Table: raw upstream scores plus encoded personalised features, as one batch type.

:class:`EncodedBatch` is the only argument of every network's ``forward``. It carries the raw ``p_*``
probabilities: each network standardises their logits itself (the statistics are buffers of the network,
see :class:`harmonrank.models.common.LogitStandardizer`), so an exported network needs no preprocessing
beyond the feature encoding done here.

Vocabularies and numeric statistics are fitted on the training table only and saved as JSON with every
model. Categorical values unseen at fit time map to id 0 ("unknown"); missing numeric values become 0 after
standardisation plus a missing-indicator column, so a model never sees NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Table
from .errors import DataError

__all__ = ["EncodedBatch", "FeatureEncoder", "logit", "logit_moments"]

LOGIT_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before the logit


def logit(p: np.ndarray, eps: float = LOGIT_EPS) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, with ``p`` clipped to ``[eps, 1 - eps]`` so 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.asarray(np.log(q) - np.log1p(-q))


def logit_moments(scores: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-objective mean and standard deviation (at least ``LOGIT_EPS``) of the logits of ``scores`` (n, M)."""
    z = logit(scores)
    return z.mean(0).tolist(), np.maximum(z.std(0), LOGIT_EPS).tolist()


@dataclass
class EncodedBatch:
    """The input of every network.

    Attributes
    ----------
    scores : Tensor (n, M), raw probabilities ``p_*`` in [0, 1] (float64 from tables, float32 accepted).
    categorical : Tensor (n, C), int64 category ids, 0 = unknown.
    numeric : Tensor (n, D), float32: standardised values and missing flags.
    weights : Tensor (n, M) or None, float32: objective weights on the simplex, the input of
        preference-conditioned networks (None: the network's training default).
    """

    scores: torch.Tensor
    categorical: torch.Tensor
    numeric: torch.Tensor
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def index(self, idx: torch.Tensor | np.ndarray | slice) -> EncodedBatch:
        """Rows ``idx`` as a new batch."""
        w = self.weights[idx] if self.weights is not None else None
        return EncodedBatch(self.scores[idx], self.categorical[idx], self.numeric[idx], w)

    def to(self, device: torch.device | str) -> EncodedBatch:
        """The batch on ``device`` (no copy when it is already there)."""
        w = self.weights.to(device) if self.weights is not None else None
        return EncodedBatch(self.scores.to(device), self.categorical.to(device), self.numeric.to(device), w)


@dataclass
class FeatureEncoder:
    """Fitted on train: the objectives' order, categorical vocabularies, numeric mean/std."""

    objectives: tuple[str, ...] = ()
    vocab: dict[str, list[str]] = field(default_factory=dict)
    numeric_mean: dict[str, float] = field(default_factory=dict)
    numeric_std: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: Table, max_vocab: int = 10_000, min_count: int = 1) -> FeatureEncoder:
        """Learn statistics and vocabularies from ``table`` (the training split): per categorical feature the
        ``max_vocab`` most frequent values seen at least ``min_count`` times (the others map to the unseen id)."""
        enc = cls.fit_columns(table.features, table.config.categorical, table.config.numeric, max_vocab, min_count)
        enc.objectives = tuple(table.objectives)
        return enc

    @classmethod
    def fit_columns(cls, features: dict[str, np.ndarray], categorical: tuple[str, ...] | list[str],
                    numeric: tuple[str, ...] | list[str], max_vocab: int = 10_000,
                    min_count: int = 1) -> FeatureEncoder:
        """Vocabularies (the ``max_vocab`` most frequent values, ties by value, kept if seen at least
        ``min_count`` times: the rule of the streamed :func:`harmonrank.stream.scan`) and numeric mean/std."""
        vocab = {}
        for name in categorical:
            values, counts = np.unique(np.asarray(features[name]).astype(str), return_counts=True)
            top = np.argsort(-counts, kind="stable")[:max_vocab]
            vocab[name] = sorted(values[top][counts[top] >= min_count].tolist())
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
        cats, nums = self.encode_columns(table.features, len(table))
        return EncodedBatch(
            scores=torch.from_numpy(np.ascontiguousarray(table.scores, dtype=np.float64)),
            categorical=torch.from_numpy(cats),
            numeric=torch.from_numpy(nums),
        )

    def encode_columns(self, features: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Categorical ids (n, C) int64, 0 = unknown; numeric (n, 2D) float32: value, missing flag."""
        cols = [np.asarray(features[name]) for name in self.vocab]
        if n > 1 and cols and all(c.dtype.kind in "OUSiubf" for c in cols):
            # rows of one request repeat their user's features: look up each run of equal rows once (comparing
            # neighbouring rows is far cheaper than a string lookup in the vocabulary). Equal must mean equal
            # text: floats are compared bit for bit (0.0 == -0.0 prints differently), and object columns only
            # if every run starts with a str (no other built-in type compares equal to a str)
            new = np.zeros(n, dtype=bool)
            new[0] = True
            for col in cols:
                c = col.view(f"i{col.itemsize}") if col.dtype.kind == "f" else col
                new[1:] |= c[1:] != c[:-1]
            heads = np.flatnonzero(new)
            if len(heads) <= n // 2 and all(all(isinstance(v, str) for v in c[heads])
                                            for c in cols if c.dtype.kind == "O"):
                run = np.cumsum(new, dtype=np.int64) - 1
                return self._lookup([c[heads] for c in cols], len(heads))[run], self._numeric(features, n)
        return self._lookup(cols, n), self._numeric(features, n)

    def _lookup(self, cols: list[np.ndarray], n: int) -> np.ndarray:
        """(n, C) int64 vocabulary ids of the categorical columns (in vocab order), 0 = unknown."""
        cats = np.zeros((n, len(self.vocab)), dtype=np.int64)
        for k, values in enumerate(self.vocab.values()):
            col = cols[k].astype(str)
            known = np.asarray(values, dtype=str)
            pos = np.clip(np.searchsorted(known, col), 0, max(len(known) - 1, 0))
            hit = known[pos] == col if len(known) else np.zeros(n, bool)
            cats[:, k] = np.where(hit, pos + 1, 0)
        return cats

    def _numeric(self, features: dict[str, np.ndarray], n: int) -> np.ndarray:
        """(n, 2D) float32: each numeric column standardised (0 when missing) and its missing flag."""
        nums = np.zeros((n, self.numeric_dim), dtype=np.float32)
        for k, name in enumerate(self.numeric_mean):
            v = np.asarray(features[name], dtype=np.float64)
            miss = ~np.isfinite(v)
            nums[:, 2 * k] = np.where(miss, 0.0, (v - self.numeric_mean[name]) / self.numeric_std[name])
            nums[:, 2 * k + 1] = miss
        return np.clip(nums, -10, 10)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives),
            "vocab": self.vocab,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(
            objectives=tuple(d["objectives"]),
            vocab={k: list(v) for k, v in d["vocab"].items()},
            numeric_mean=dict(d["numeric_mean"]),
            numeric_std=dict(d["numeric_std"]),
        )
