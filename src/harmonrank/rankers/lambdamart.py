"""LambdaMART (LightGBM ``lambdarank``) as a ranker, and the tree-feature matrix every tree model uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import Table
from ..errors import MissingDependencyError
from ..features import logit
from ..io import atomic_write
from ..metrics import auc_sum
from ..threads import get_threads
from .base import BatchCallback, EpochCallback, Ranker, labels_of

__all__ = ["LambdaMARTRanker", "tree_matrix", "tree_vocab"]


def tree_vocab(table: Table) -> list[list[str]]:
    """Sorted values of each categorical feature of ``table`` (fitted on train)."""
    return [sorted(set(table.features[c].astype(str).tolist())) for c in table.config.categorical]


def tree_matrix(table: Table, vocab: list[list[str]]) -> np.ndarray:
    """(n, M + C + D) float64: each score's logit, categorical codes (-1 = unseen), numeric features as is."""
    cols = [logit(table.scores)]
    for k, name in enumerate(table.config.categorical):
        lookup = {v: i for i, v in enumerate(vocab[k])}
        cols.append(np.array([lookup.get(v, -1) for v in table.features[name].astype(str)], dtype=np.float64)[:, None])
    for name in table.config.numeric:
        cols.append(table.features[name].astype(np.float64)[:, None])
    return np.hstack(cols)


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ModuleNotFoundError as err:
        raise MissingDependencyError("LambdaMART needs lightgbm: pip install 'harmonrank[baselines]'") from err
    return lightgbm


class LambdaMARTRanker(Ranker):
    """LightGBM ``lambdarank`` with groups = requests, on a graded label ``round(sum_m w_m y_m)``.

    Features: :func:`tree_matrix` (every score's logit and the personalised features, categorical as
    LightGBM categories). Early stopping on the validation AUC-sum.
    """

    kind = "lambdamart"
    booster_: Any

    def __init__(self, *, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 50, early_stopping: int = 30, seed: int = 0,
                 name: str = "lambdamart") -> None:
        self.params = {"n_estimators": n_estimators, "learning_rate": learning_rate, "num_leaves": num_leaves,
                       "min_child_samples": min_child_samples}
        self.early_stopping = early_stopping
        self.seed = seed
        self.name = name

    @staticmethod
    def _grouped(table: Table) -> tuple[np.ndarray, np.ndarray]:
        """Row order with requests contiguous, and the request sizes (LightGBM's group=)."""
        _, gid = np.unique(table.request, return_inverse=True)
        order = np.argsort(gid, kind="stable")
        return order, np.bincount(gid)

    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None:
        lgb = _lightgbm()
        self.vocab_ = tree_vocab(train)
        m = len(train.objectives)
        cat_idx = list(range(m, m + len(train.config.categorical)))
        weights = np.asarray(train.config.objective_weights)
        w = weights / weights[weights > 0].min()  # the smallest positive objective weight counts 1 grade
        order, sizes = self._grouped(train)
        grade = np.rint(labels_of(train, "lambdamart") @ w).astype(int)[order]
        x = tree_matrix(train, self.vocab_)[order]
        params: dict[str, Any] = dict(objective="lambdarank", random_state=self.seed, verbose=-1, n_jobs=get_threads(),
                                      label_gain=list(range(int(np.rint(w.sum())) + 2)), **self.params)
        if valid is not None:
            params["metric"] = "None"  # early stopping on our validation AUC-sum only, not LightGBM's ndcg
        self.booster_ = lgb.LGBMRanker(**params)
        fit_kw: dict[str, Any] = {"group": sizes, "categorical_feature": cat_idx}
        if valid is not None:
            vx = tree_matrix(valid, self.vocab_)
            vy = labels_of(valid, "lambdamart")
            vorder, vsizes = self._grouped(valid)
            inv = np.empty_like(vorder)
            inv[vorder] = np.arange(len(vorder))
            vgrade = np.rint(vy @ w).astype(int)

            def metric_in_order(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
                # back to table row order, then our AUC-sum
                return "auc_sum", auc_sum(y_pred[inv], vy, valid.config.objective_weights), True

            fit_kw.update(eval_X=(vx[vorder],), eval_y=(vgrade[vorder],), eval_group=[vsizes],
                          eval_metric=metric_in_order,
                          callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)])
        self.booster_.fit(x, grade, **fit_kw)

    def _predict(self, table: Table) -> np.ndarray:
        return np.asarray(self.booster_.predict(tree_matrix(table, self.vocab_)), dtype=np.float64)

    def _save(self, d: Path) -> dict[str, Any]:
        with atomic_write(d / "model.txt") as tmp:
            self.booster_.booster_.save_model(str(tmp))
        return {"params": self.params, "vocab": self.vocab_, "seed": self.seed}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> LambdaMARTRanker:
        lgb = _lightgbm()
        r = cls(seed=meta["seed"], name=meta["ranker"], **meta["params"])
        r.vocab_ = meta["vocab"]
        r.booster_ = _BoosterAdapter(lgb.Booster(model_file=str(d / "model.txt")))
        return r


class _BoosterAdapter:
    """Gives a loaded lgb.Booster the ``predict``/``booster_`` surface of a fitted LGBMRanker."""

    def __init__(self, booster: Any) -> None:
        self.booster_ = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(x))
