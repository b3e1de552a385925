"""The ranker base class: ``fit(train, valid=...)``, ``predict(table)``, ``score(table)``, ``save``/``load``.

Every ranker turns a :class:`~harmonrank.data.Table` into ONE score per row. Native objects stay reachable
(``ranker.net_`` for the torch module, ``ranker.booster_`` for LightGBM, ``ranker.exponents_`` for the
formula). Models are saved as safetensors (parameters) / LightGBM text plus ``model.json``; nothing is pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import DatasetConfig
from ..data import Table
from ..errors import ConfigError, HarmonRankError
from ..io import write_json
from ..metrics import auc_sum

if TYPE_CHECKING:
    from ..train import TrainConfig

__all__ = ["MODEL_FORMAT", "BatchCallback", "EpochCallback", "Ranker", "labels_of"]

#: version of model.json; 2 = networks standardise logits themselves (version 1 had no "format" key)
MODEL_FORMAT = 2

EpochCallback = Callable[[dict[str, float]], None]
BatchCallback = Callable[[int, int, int], None]  # (epoch, batches done, batches in the epoch)


def labels_of(table: Table, what: str) -> np.ndarray:
    """The (n, M) labels of ``table``; a HarmonRankError naming ``what`` when it has none."""
    if table.labels is None:
        raise HarmonRankError(f"{what} needs labels")
    return table.labels


class Ranker(ABC):
    """Base: subclasses set ``kind`` and implement ``_fit``, ``_predict``, ``_save`` and ``_load``.

    ``from_spec`` builds a ranker for the registry (:func:`harmonrank.rankers.make_ranker`).
    """

    kind: ClassVar[str]
    name: str = "ranker"
    config_: DatasetConfig

    @classmethod
    def from_spec(cls, name: str, train: TrainConfig, options: Mapping[str, Any]) -> Ranker:
        """A fresh ranker named ``name``: the registry's fixed ``options`` and the seed of ``train``."""
        factory: Callable[..., Ranker] = cls
        return factory(name=name, seed=train.seed, **options)

    def fit(self, train: Table, valid: Table | None = None, *, run_dir: str | Path | None = None,
            resume: bool = False, on_epoch: EpochCallback | None = None,
            on_batch: BatchCallback | None = None) -> Ranker:
        """Fit on ``train``; ``valid`` drives early stopping / tuning. Returns self.

        ``run_dir``, ``resume``, ``on_epoch`` and ``on_batch`` (per-epoch checkpoints, exact resume,
        progress) apply to rankers trained in epochs; the others ignore them.
        """
        labels_of(train, f"{self.name}.fit")
        self.config_ = train.config
        self._fit(train, valid, run_dir=run_dir, resume=resume, on_epoch=on_epoch, on_batch=on_batch)
        return self

    @abstractmethod
    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None: ...

    def check_table(self, table: Table) -> None:
        """Raise ConfigError if ``table`` lacks the objectives or feature columns this ranker was fitted on."""
        cfg = getattr(self, "config_", None)
        if cfg is None:
            return
        if tuple(table.objectives) != tuple(cfg.names):
            raise ConfigError(f"{self.name} was trained on objectives {', '.join(cfg.names)}; "
                              f"the data has {', '.join(table.objectives)}")
        missing = [c for c in (*cfg.categorical, *cfg.numeric) if c not in table.features]
        if missing:
            raise ConfigError(f"{self.name} needs feature column(s) {', '.join(missing)}")

    def predict(self, table: Table) -> np.ndarray:
        """One ensemble score per row, higher ranks first, shape (n,)."""
        self.check_table(table)
        return self._predict(table)

    @abstractmethod
    def _predict(self, table: Table) -> np.ndarray: ...

    def score(self, table: Table) -> float:
        """AUC-sum of :meth:`predict` on ``table``, with the table's objective weights."""
        return auc_sum(self.predict(table), labels_of(table, "score"), table.config.objective_weights)

    def save(self, run_dir: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the fitted ranker to ``run_dir`` (``model.json`` last, each file atomically); ``extra``: more
        keys for model.json (e.g. how the model was chosen)."""
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": MODEL_FORMAT, "ranker": self.name, "kind": self.kind,
                "dataset_config": self.config_.to_dict(), **self._save(d)}
        clash = sorted(set(extra or {}) & set(meta))
        if clash:
            raise ConfigError(f"save(extra=...) may not replace model.json's own key(s) {', '.join(clash)}")
        meta.update(extra or {})
        write_json(meta, d / "model.json", indent=1)
        return d

    @abstractmethod
    def _save(self, d: Path) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> Ranker: ...
