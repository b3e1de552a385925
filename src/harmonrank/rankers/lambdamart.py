"""LambdaMART (LightGBM ``lambdarank``) as a ranker, and the tree-feature matrix every tree model uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import DatasetConfig
from ..data import Table
from ..errors import ConfigError, MissingDependencyError
from ..features import logit
from ..io import atomic_write
from ..metrics import auc_sum
from ..threads import get_threads
from .base import BatchCallback, EpochCallback, Ranker, labels_of

__all__ = ["LambdaMARTRanker", "tree_matrix", "tree_vocab"]


def tree_vocab(table: Table) -> list[list[str]]:
    """Sorted values of each categorical feature of ``table`` (fitted on train)."""
    return [sorted(set(table.features[c].astype(str).tolist())) for c in table.config.categorical]


def tree_matrix(table: Table, vocab: list[list[str]], config: DatasetConfig | None = None) -> np.ndarray:
    """(n, M + C + D) float64: each score's logit, categorical codes (-1 = unseen), numeric features as is.

    Feature columns follow ``config`` (the one fitted on; default: the table's own), so a table read with a
    config listing the features in another order still gives the same matrix.
    """
    config = config or table.config
    cols = [logit(table.scores)]
    for k, name in enumerate(config.categorical):
        lookup = {v: i for i, v in enumerate(vocab[k])}
        cols.append(np.array([lookup.get(v, -1) for v in table.features[name].astype(str)], dtype=np.float64)[:, None])
    for name in config.numeric:
        cols.append(table.features[name].astype(np.float64)[:, None])
    return np.hstack(cols)


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ModuleNotFoundError as err:
        raise MissingDependencyError("LambdaMART needs lightgbm: pip install 'harmonrank[baselines]'") from err
    return lightgbm


class LambdaMARTRanker(Ranker):
    """LightGBM ``lambdarank`` on a graded label, tuned for the AUC-sum the rankers are judged by.

    Two choices make LambdaMART a fair rival on an AUC-sum target (both the defaults; see docs/models.md):

    * ``gain="auc"``: a row's relevance gain is ``sum_m w_m y_m / (pi_m (1 - pi_m))`` with ``pi_m`` the
      training base rate. AUC_m normalises its pairs by ``|P_m||N_m|``, so one purchase pair weighs as much
      as many click pairs; these are the weights of the Bayes-optimal AUC-sum score. ``gain="count"`` is the
      plain ``sum_m w_m y_m`` (each objective alike per positive).
    * ``grouping="random"``: LambdaMART ranks within groups, but AUC compares candidates across requests;
      random groups of ``group_size`` rows (spanning requests) teach a global order. ``"request"`` groups by
      request (then the seed changes nothing).

    ``group_sizes`` with more than one value are tried on the validation AUC-sum and the best kept.
    Features: :func:`tree_matrix`. Early stopping on the validation AUC-sum.
    """

    kind = "lambdamart"
    booster_: Any

    def __init__(self, *, n_estimators: int = 400, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 50, early_stopping: int = 30, gain: Literal["auc", "count"] = "auc",
                 grouping: Literal["random", "request"] = "random", group_sizes: tuple[int, ...] = (500, 2000),
                 seed: int = 0, name: str = "lambdamart") -> None:
        if gain not in ("auc", "count"):
            raise ConfigError(f"lambdamart: gain must be 'auc' or 'count'. Got {gain!r} instead.")
        if grouping not in ("random", "request"):
            raise ConfigError(f"lambdamart: grouping must be 'random' or 'request'. Got {grouping!r} instead.")
        if not group_sizes or min(group_sizes) < 2:
            raise ConfigError(f"lambdamart: group_sizes must be sizes >= 2. Got {group_sizes!r} instead.")
        self.params = {"n_estimators": n_estimators, "learning_rate": learning_rate, "num_leaves": num_leaves,
                       "min_child_samples": min_child_samples}
        self.early_stopping = early_stopping
        self.gain = gain
        self.grouping = grouping
        self.group_sizes = tuple(group_sizes)
        self.seed = seed
        self.name = name

    def _groups(self, table: Table, size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Row order with each group contiguous, and the group sizes (LightGBM's group=)."""
        if size is None:
            _, gid = np.unique(table.request, return_inverse=True)
        else:
            gid = np.random.default_rng(self.seed).permutation(len(table)) // size
        order = np.argsort(gid, kind="stable")
        return order, np.bincount(gid)

    def _grades(self, train: Table, labels: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Integer labels (the rank of each row's gain among all gains) and the gain of each label."""
        w = np.asarray(train.config.objective_weights, dtype=np.float64)
        if self.gain == "auc":
            pi = np.clip(labels_of(train, "lambdamart").mean(0), 1 / len(train), 1 - 1 / len(train))
            w = w / (pi * (1 - pi))
        raw = [y @ w for y in labels]
        levels = np.unique(np.concatenate(raw))
        unit = levels[levels > 0].min() if (levels > 0).any() else 1.0
        return [np.searchsorted(levels, g) for g in raw], (levels / unit).tolist()

    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None:
        lgb = _lightgbm()
        self.vocab_ = tree_vocab(train)
        m = len(train.objectives)
        cat_idx = list(range(m, m + len(train.config.categorical)))
        y = labels_of(train, "lambdamart")
        vy = labels_of(valid, "lambdamart") if valid is not None else None
        (grade, *vgrade), gains = self._grades(train, [y] + ([vy] if vy is not None else []))
        x = tree_matrix(train, self.vocab_)
        sizes_tried: tuple[int | None, ...] = self.group_sizes if self.grouping == "random" else (None,)
        if valid is None:
            sizes_tried = sizes_tried[:1]
        eval_kw: dict[str, Any] = {}
        vx = tree_matrix(valid, self.vocab_) if valid is not None else None
        if valid is not None and vy is not None and vx is not None:
            vorder, vsizes = self._groups(valid, None)
            inv = np.empty_like(vorder)
            inv[vorder] = np.arange(len(vorder))
            valid_weights = valid.config.objective_weights

            def metric_in_order(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
                return "auc_sum", auc_sum(y_pred[inv], vy, valid_weights), True  # in table row order

            eval_kw = dict(eval_X=(vx[vorder],), eval_y=(vgrade[0][vorder],), eval_group=[vsizes],
                           eval_metric=metric_in_order,
                           callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)])
        best: tuple[float, Any, int | None] | None = None
        for size in sizes_tried:
            order, sizes = self._groups(train, size)
            params: dict[str, Any] = dict(objective="lambdarank", random_state=self.seed, verbose=-1,
                                          n_jobs=get_threads(), label_gain=gains, **self.params)
            if eval_kw:
                params["metric"] = "None"  # early stopping on our validation AUC-sum only, not LightGBM's ndcg
            booster = lgb.LGBMRanker(**params)
            booster.fit(x[order], grade[order], group=sizes, categorical_feature=cat_idx, **eval_kw)
            score = auc_sum(np.asarray(booster.predict(vx)), vy, valid_weights) if vy is not None and eval_kw else 0.0
            if best is None or score > best[0]:
                best = (score, booster, size)
        if best is None:  # unreachable: sizes_tried is never empty
            raise ConfigError("lambdamart: no group size to try")
        self.booster_, self.group_size_ = best[1], best[2]

    def _predict(self, table: Table) -> np.ndarray:
        x = tree_matrix(table, self.vocab_, self.config_)
        return np.asarray(self.booster_.predict(x, num_threads=get_threads()), dtype=np.float64)

    def _save(self, d: Path) -> dict[str, Any]:
        with atomic_write(d / "model.txt") as tmp:
            self.booster_.booster_.save_model(str(tmp))
        return {"params": self.params, "vocab": self.vocab_, "seed": self.seed, "gain": self.gain,
                "grouping": self.grouping, "group_size": getattr(self, "group_size_", None)}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> LambdaMARTRanker:
        lgb = _lightgbm()
        r = cls(seed=meta["seed"], name=meta["ranker"], gain=meta.get("gain", "count"),  # format 1: count gains
                grouping=meta.get("grouping", "request"), **meta["params"])
        r.vocab_ = meta["vocab"]
        r.booster_ = _BoosterAdapter(lgb.Booster(model_file=str(d / "model.txt")))
        return r


class _BoosterAdapter:
    """Gives a loaded lgb.Booster the ``predict``/``booster_`` surface of a fitted LGBMRanker."""

    def __init__(self, booster: Any) -> None:
        self.booster_ = booster

    def predict(self, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        return np.asarray(self.booster_.predict(x, num_threads=num_threads or 0))
