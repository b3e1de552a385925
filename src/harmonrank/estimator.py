"""scikit-learn-style rankers: ``fit(train, valid=...)``, ``predict(table)``, ``score(table)``, ``save``/``load``.

Every ranker turns a :class:`~harmonrank.data.Table` into ONE score per row. Native objects stay reachable
(``ranker.net_`` for the torch module, ``ranker.booster_`` for LightGBM, ``ranker.weights_`` for the
formula). Models are saved as safetensors (weights) / LightGBM text plus ``model.json``; nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DatasetConfig
from .data import Table, atomic_path
from .errors import ConfigError, HarmonRankError
from .features import FeatureEncoder
from .metrics import auc_sum
from .models.formula import weighted_product
from .models.harmonrank import EnsembleConfig, HarmonRankNet
from .models.losses import make_loss
from .models.one_step import OneStepConfig, OneStepNet
from .train import TrainConfig, Trainer, predict_net

__all__ = ["RANKERS", "FormulaRanker", "LambdaMARTRanker", "NeuralRanker", "Ranker", "load_ranker",
           "make_ranker"]

log = logging.getLogger(__name__)

NETS: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "harmonrank": (HarmonRankNet, EnsembleConfig),
    "one_step": (OneStepNet, OneStepConfig),
}


def _write_json(obj: Any, path: Path) -> None:
    tmp, final = atomic_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=float), encoding="utf-8")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _labels(table: Table, what: str) -> np.ndarray:
    if table.labels is None:
        raise HarmonRankError(f"{what} needs labels")
    return table.labels


class Ranker(ABC):
    """Base: subclasses implement ``_fit``, ``predict``, ``_save`` and ``_load``."""

    kind: ClassVar[str]
    name: str = "ranker"
    config_: DatasetConfig

    def fit(self, train: Table, valid: Table | None = None, **kwargs: Any) -> Ranker:
        """Fit on ``train``; ``valid`` drives early stopping / tuning. Returns self."""
        _labels(train, f"{self.name}.fit")
        self.config_ = train.config
        self._fit(train, valid, **kwargs)
        return self

    @abstractmethod
    def _fit(self, train: Table, valid: Table | None, **kwargs: Any) -> None: ...

    def predict(self, table: Table) -> np.ndarray:
        """One ensemble score per row, higher ranks first, shape (n,)."""
        cfg = getattr(self, "config_", None)
        if cfg is not None:
            if tuple(table.objectives) != tuple(cfg.names):
                raise ConfigError(f"{self.name} was trained on objectives {', '.join(cfg.names)}; "
                                  f"the data has {', '.join(table.objectives)}")
            missing = [c for c in (*cfg.categorical, *cfg.numeric) if c not in table.features]
            if missing:
                raise ConfigError(f"{self.name} needs feature column(s) {', '.join(missing)}")
        return self._predict(table)

    @abstractmethod
    def _predict(self, table: Table) -> np.ndarray: ...

    def score(self, table: Table) -> float:
        """Weighted AUC-sum of :meth:`predict` on ``table``."""
        return auc_sum(self.predict(table), _labels(table, "score"), table.config.weights)

    def save(self, run_dir: str | Path) -> Path:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"ranker": self.name, "kind": self.kind, "dataset_config": self.config_.to_dict(), **self._save(d)}
        _write_json(meta, d / "model.json")
        return d

    @abstractmethod
    def _save(self, d: Path) -> dict[str, Any]: ...


class NeuralRanker(Ranker):
    """A torch ensemble network + a loss, trained by :class:`~harmonrank.train.Trainer`.

    Parameters
    ----------
    net : ``"harmonrank"`` (two-step relation-aware) or ``"one_step"`` (MLP).
    loss : ``"rank"`` (soft AUC-sum), ``"rank_group"`` (per-request soft AUC), ``"bce"``, ``"pairwise"``.
    net_options : extra config fields of the net (e.g. ``{"d_model": 64, "use_user": False}``).
    train : TrainConfig; ``method`` / ``temperature``: the soft-AUC operator of the rank losses.

    Examples
    --------
    >>> ranker = NeuralRanker(net="harmonrank", loss="rank", train=TrainConfig(max_epochs=2))  # doctest: +SKIP
    >>> ranker.fit(train_table, valid=valid_table).predict(test_table)  # doctest: +SKIP
    """

    kind = "neural"

    def __init__(self, *, net: str = "harmonrank", loss: str = "rank", net_options: dict[str, Any] | None = None,
                 train: TrainConfig | None = None, method: str = "pl", temperature: float | None = None,
                 name: str | None = None) -> None:
        if net not in NETS:
            raise ConfigError(f"net must be one of {', '.join(NETS)}. Got {net!r} instead.")
        self.net = net
        self.loss = loss
        self.net_options = dict(net_options or {})
        self.train = train or TrainConfig()
        self.method = method
        self.temperature = temperature
        self.name = name or f"{net}_{loss}"

    def build(self, table: Table) -> tuple[nn.Module, nn.Module]:
        """Fit the feature encoder on ``table`` and create the (untrained) net and loss."""
        self.encoder_ = FeatureEncoder.fit(table)
        cls, cfg_cls = NETS[self.net]
        try:
            self.net_config_ = cfg_cls(objectives=tuple(table.objectives), vocab_sizes=self.encoder_.vocab_sizes,
                                       numeric_dim=self.encoder_.numeric_dim, **self.net_options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"net_options for {self.net!r}: {err}") from err
        torch.manual_seed(self.train.seed)
        self.net_ = cls(self.net_config_)
        self.loss_ = make_loss(self.loss, table.config.weights, method=self.method, temperature=self.temperature)
        return self.net_, self.loss_

    def _fit(self, train: Table, valid: Table | None, **kwargs: Any) -> None:
        """kwargs: ``run_dir`` (checkpoints), ``resume`` (continue from them), ``on_epoch`` (callback)."""
        run_dir: str | Path | None = kwargs.pop("run_dir", None)
        resume: bool = kwargs.pop("resume", False)
        on_epoch: Callable[[dict[str, float]], None] | None = kwargs.pop("on_epoch", None)
        if kwargs:
            raise ConfigError(f"{self.name}.fit: unknown option(s) {', '.join(kwargs)}")
        net, loss = self.build(train)
        metadata = {"ranker": self.name, "net": self.net, "loss": self.loss, "net_config": self.net_config_.to_dict(),
                    "dataset_config": train.config.to_dict(), "encoder": self.encoder_.to_dict()}
        trainer = Trainer(net, loss, self.train, train.config.weights, run_dir=run_dir, metadata=metadata)
        self.history_ = trainer.fit(
            self.encoder_.transform(train), _labels(train, "fit"), train.request,
            self.encoder_.transform(valid) if valid is not None else None,
            _labels(valid, "validation") if valid is not None else None, resume=resume, on_epoch=on_epoch,
        )
        self.best_epoch_ = trainer.best_epoch

    def _predict(self, table: Table) -> np.ndarray:
        return predict_net(self.net_, self.encoder_.transform(table), self.train.eval_batch)

    def attention(self, table: Table) -> np.ndarray | None:
        """Step-1 objective-to-objective attention per row, (n, M, M) averaged over heads (None for MLPs)."""
        enc = self.encoder_.transform(table)
        self.net_.eval()
        with torch.no_grad():
            _, attn = self.net_(enc.scores, enc.logits, enc.categorical, enc.numeric, return_attention=True)
        return None if attn is None else attn.double().numpy()

    def _save(self, d: Path) -> dict[str, Any]:
        tmp, final = atomic_path(d / "model.safetensors")
        try:
            save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, str(tmp))
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return {"net": self.net, "loss": self.loss, "net_config": self.net_config_.to_dict(),
                "train_config": asdict(self.train), "method": self.method, "temperature": self.temperature,
                "encoder": self.encoder_.to_dict(), "history": getattr(self, "history_", []),
                "best_epoch": getattr(self, "best_epoch_", None)}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> NeuralRanker:
        r = cls(net=meta["net"], loss=meta["loss"], train=TrainConfig(**meta["train_config"]),
                method=meta["method"], temperature=meta["temperature"], name=meta["ranker"])
        net_cls, cfg_cls = NETS[meta["net"]]
        r.net_config_ = cfg_cls(**meta["net_config"])
        r.net_ = net_cls(r.net_config_)
        r.net_.load_state_dict(load_file(str(d / "model.safetensors")))
        r.encoder_ = FeatureEncoder.from_dict(meta["encoder"])
        r.history_ = meta.get("history", [])
        return r


class FormulaRanker(Ranker):
    """Weighted product ``prod_m p_m ** w_m`` with weights found by Bayesian optimisation (Optuna TPE) of the
    validation AUC-sum. ``n_trials`` is the budget; the first trial is the equal-weight product."""

    kind = "formula"

    def __init__(self, *, n_trials: int = 100, max_weight: float = 1.0, seed: int = 0,
                 name: str = "formula") -> None:
        self.n_trials = n_trials
        self.max_weight = max_weight
        self.seed = seed
        self.name = name

    def _fit(self, train: Table, valid: Table | None, **_: Any) -> None:
        import optuna

        target = valid if valid is not None else train
        labels = _labels(target, "formula tuning")
        names = target.objectives
        logp = np.log(np.clip(target.scores, 1e-7, 1.0))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))
        study.enqueue_trial({f"w_{m}": self.max_weight for m in names})

        def objective(trial: Any) -> float:
            w = np.array([trial.suggest_float(f"w_{m}", 0.0, self.max_weight) for m in names])
            return auc_sum(logp @ w, labels, target.config.weights)

        study.optimize(objective, n_trials=self.n_trials)
        self.weights_ = {m: float(study.best_params[f"w_{m}"]) for m in names}
        self.best_value_ = float(study.best_value)
        self.trials_ = [float(t.value) for t in study.trials if t.value is not None]

    def _predict(self, table: Table) -> np.ndarray:
        return weighted_product(table.scores, [self.weights_[m] for m in table.objectives])

    def _save(self, d: Path) -> dict[str, Any]:
        return {"weights": self.weights_, "n_trials": self.n_trials, "valid_auc_sum": self.best_value_,
                "seed": self.seed}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> FormulaRanker:
        r = cls(n_trials=meta["n_trials"], seed=meta["seed"], name=meta["ranker"])
        r.weights_ = dict(meta["weights"])
        r.best_value_ = meta["valid_auc_sum"]
        return r


class LambdaMARTRanker(Ranker):
    """LightGBM ``lambdarank`` with groups = requests, on a graded label ``round(sum_m w_m y_m)``.

    Features: every score's logit, and the personalised features (categorical as LightGBM categories).
    Early stopping on the validation AUC-sum.
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

    def _matrix(self, table: Table) -> np.ndarray:
        cols = [FeatureEncoder.logit(table.scores)]
        for k, name in enumerate(table.config.categorical):
            vocab = self.vocab_[k]
            col = table.features[name].astype(str)
            lookup = {v: i for i, v in enumerate(vocab)}
            cols.append(np.array([lookup.get(v, -1) for v in col], dtype=np.float64)[:, None])
        for name in table.config.numeric:
            cols.append(table.features[name].astype(np.float64)[:, None])
        return np.hstack(cols)

    def _grouped(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """Row order with requests contiguous, and the request sizes (LightGBM's group=)."""
        _, gid = np.unique(table.request, return_inverse=True)
        order = np.argsort(gid, kind="stable")
        return order, np.bincount(gid)

    def _fit(self, train: Table, valid: Table | None, **_: Any) -> None:
        import lightgbm as lgb

        self.vocab_ = [sorted(set(train.features[c].astype(str).tolist())) for c in train.config.categorical]
        m = len(train.objectives)
        cat_idx = list(range(m, m + len(train.config.categorical)))
        weights = np.asarray(train.config.weights)
        w = weights / weights[weights > 0].min()  # the smallest positive weight counts 1 grade
        order, sizes = self._grouped(train)
        grade = np.rint(_labels(train, "lambdamart") @ w).astype(int)[order]
        x = self._matrix(train)[order]
        params: dict[str, Any] = dict(objective="lambdarank", random_state=self.seed, verbose=-1, n_jobs=2,
                                      label_gain=list(range(int(np.rint(w.sum())) + 2)), **self.params)
        if valid is not None:
            params["metric"] = "None"  # early stopping on our validation AUC-sum only, not LightGBM's ndcg
        self.booster_ = lgb.LGBMRanker(**params)
        fit_kw: dict[str, Any] = {"group": sizes, "categorical_feature": cat_idx}
        if valid is not None:
            vx = self._matrix(valid)
            vy = _labels(valid, "lambdamart")

            def auc_sum_metric(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
                return "auc_sum", auc_sum(y_pred, vy, valid.config.weights), True

            vorder, vsizes = self._grouped(valid)
            inv = np.empty_like(vorder)
            inv[vorder] = np.arange(len(vorder))
            vgrade = np.rint(vy @ w).astype(int)

            def metric_in_order(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[str, float, bool]:
                return auc_sum_metric(y_true, y_pred[inv])  # back to table row order

            fit_kw.update(eval_X=(vx[vorder],), eval_y=(vgrade[vorder],), eval_group=[vsizes],
                          eval_metric=metric_in_order,
                          callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)])
        self.booster_.fit(x, grade, **fit_kw)

    def _predict(self, table: Table) -> np.ndarray:
        return np.asarray(self.booster_.predict(self._matrix(table)), dtype=np.float64)

    def _save(self, d: Path) -> dict[str, Any]:
        tmp, final = atomic_path(d / "model.txt")
        try:
            self.booster_.booster_.save_model(str(tmp))
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return {"params": self.params, "vocab": self.vocab_, "seed": self.seed}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> LambdaMARTRanker:
        import lightgbm as lgb

        r = cls(seed=meta["seed"], name=meta["ranker"], **meta["params"])
        r.vocab_ = meta["vocab"]
        booster = lgb.Booster(model_file=str(d / "model.txt"))
        r.booster_ = _BoosterAdapter(booster)
        return r


class _BoosterAdapter:
    """Gives a loaded lgb.Booster the ``predict``/``booster_`` surface of a fitted LGBMRanker."""

    def __init__(self, booster: Any) -> None:
        self.booster_ = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(x))


def _neural(net: str, loss: str, **net_options: Any) -> Callable[..., Ranker]:
    def make(name: str, train: TrainConfig, **kw: Any) -> Ranker:
        opts = {**net_options, **kw.pop("net_options", {})}
        return NeuralRanker(net=net, loss=loss, net_options=opts, train=train, name=name, **kw)

    return make


#: every ranker the benchmark knows, by name: (factory, one-line description)
RANKERS: dict[str, tuple[Callable[..., Ranker], str]] = {
    "harmonrank": (_neural("harmonrank", "rank"), "HarmonRank: two-step relation-aware net + soft AUC-sum loss"),
    "harmonrank_bce": (_neural("harmonrank", "bce"), "ablation: HarmonRank net with per-objective BCE"),
    "harmonrank_no_user": (_neural("harmonrank", "rank", use_user=False),
                           "ablation: HarmonRank without personalised features"),
    "harmonrank_group": (_neural("harmonrank", "rank_group"), "HarmonRank with the per-request (GAUC) loss"),
    "one_step_rank": (_neural("one_step", "rank"), "ablation: one-step net + soft AUC-sum loss (no two-step)"),
    "one_step_bce": (_neural("one_step", "bce"), "baseline: one-step ensemble net + per-objective BCE"),
    "pairwise": (_neural("one_step", "pairwise"), "RankNet-style pairwise logistic over positive-negative pairs"),
    "formula": (lambda name, train, **kw: FormulaRanker(seed=train.seed, name=name, **kw),
                "weighted-product formula, weights by Bayesian optimisation (Optuna TPE)"),
    "lambdamart": (lambda name, train, **kw: LambdaMARTRanker(seed=train.seed, name=name, **kw),
                   "LambdaMART (LightGBM lambdarank) on a graded label"),
}


def make_ranker(name: str, train: TrainConfig | None = None, **options: Any) -> Ranker:
    """A fresh ranker by name (see :data:`RANKERS`)."""
    if name not in RANKERS:
        raise ConfigError(f"unknown ranker {name!r}; known: {', '.join(RANKERS)}")
    try:
        return RANKERS[name][0](name, train or TrainConfig(), **options)
    except TypeError as err:
        raise ConfigError(f"ranker {name!r}: bad option: {err}") from err


def load_ranker(run_dir: str | Path) -> Ranker:
    """Load a ranker saved by :meth:`Ranker.save` (or ``harmonrank train``)."""
    d = Path(run_dir)
    if not (d / "model.json").is_file():
        raise HarmonRankError(f"{d} holds no model.json: not a harmonrank model folder")
    kinds: dict[str, Any] = {"neural": NeuralRanker, "formula": FormulaRanker, "lambdamart": LambdaMARTRanker}
    try:
        meta = json.loads((d / "model.json").read_text(encoding="utf-8"))
        if meta.get("kind") not in kinds:
            raise HarmonRankError(f"{d}/model.json: unknown model kind {meta.get('kind')!r}")
        r: Ranker = kinds[meta["kind"]]._load(d, meta)
        r.config_ = DatasetConfig.from_dict(meta["dataset_config"])
    except HarmonRankError:
        raise
    except Exception as err:  # corrupt or partial model folder: JSON, missing keys/files, bad weights
        raise HarmonRankError(f"cannot load the model in {d}: {type(err).__name__}: {err}") from err
    return r

