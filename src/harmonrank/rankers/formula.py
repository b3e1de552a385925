"""The weighted-product formula as a ranker: exponents fixed, or tuned by Bayesian optimisation (Optuna)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Table
from ..errors import ConfigError, MissingDependencyError
from ..metrics import auc_sum
from ..models.formula import exponent_vector, weighted_product
from .base import BatchCallback, EpochCallback, Ranker, labels_of

__all__ = ["FormulaRanker"]


class FormulaRanker(Ranker):
    """Weighted product ``prod_m p_m ** e_m``.

    With ``exponents`` given, the formula is fixed and ``fit`` only records the objectives. Otherwise the
    exponents are found by Bayesian optimisation (Optuna TPE) of the validation AUC-sum within
    ``[0, max_exponent]``; ``n_trials`` is the budget and the first trial is the equal-exponent product.

    Examples
    --------
    >>> FormulaRanker(exponents={"click": 1.0, "buy": 2.0}).fit(table).predict(table)  # doctest: +SKIP
    """

    kind = "formula"
    exponents_: dict[str, float]

    def __init__(self, *, n_trials: int = 100, max_exponent: float = 1.0, seed: int = 0, name: str = "formula",
                 exponents: Mapping[str, float] | None = None) -> None:
        if n_trials < 1:
            raise ConfigError(f"n_trials must be >= 1. Got {n_trials!r} instead.")
        self.n_trials = n_trials
        self.max_exponent = max_exponent
        self.seed = seed
        self.name = name
        self.exponents = dict(exponents) if exponents is not None else None

    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None:
        if self.exponents is not None:
            unknown = sorted(set(self.exponents) - set(train.objectives))
            if unknown:
                raise ConfigError(f"formula names unknown objective(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(train.objectives)}")
            self.exponents_ = {m: float(self.exponents.get(m, 0.0)) for m in train.objectives}
            self.best_value_ = float("nan")
            return
        try:
            import optuna
        except ModuleNotFoundError as err:
            raise MissingDependencyError(
                "the tuned formula needs optuna: pip install 'harmonrank[baselines]'") from err

        target = valid if valid is not None else train
        labels = labels_of(target, "formula tuning")
        names = target.objectives
        logp = np.log(np.clip(target.scores, 1e-7, 1.0))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))
        study.enqueue_trial({f"w_{m}": self.max_exponent for m in names})

        def objective(trial: Any) -> float:
            e = np.array([trial.suggest_float(f"w_{m}", 0.0, self.max_exponent) for m in names])
            return auc_sum(logp @ e, labels, target.config.objective_weights)

        study.optimize(objective, n_trials=self.n_trials)
        self.exponents_ = {m: float(study.best_params[f"w_{m}"]) for m in names}
        self.best_value_ = float(study.best_value)
        self.trials_ = [float(t.value) for t in study.trials if t.value is not None]

    @classmethod
    def fixed(cls, table: Table, exponents: Mapping[str, float], name: str = "formula") -> FormulaRanker:
        """A fitted formula with the given exponents (unnamed objectives 0) for the objectives of ``table``."""
        r = cls(exponents=exponents, name=name)
        r.config_ = table.config
        r._fit(table, None, run_dir=None, resume=False, on_epoch=None, on_batch=None)
        return r

    def _predict(self, table: Table) -> np.ndarray:
        return weighted_product(table.scores, exponent_vector(self.exponents_, table.objectives))

    def _save(self, d: Path) -> dict[str, Any]:
        best = self.best_value_ if np.isfinite(self.best_value_) else None
        return {"exponents": self.exponents_, "n_trials": self.n_trials, "valid_auc_sum": best, "seed": self.seed}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> FormulaRanker:
        r = cls(n_trials=meta["n_trials"], seed=meta["seed"], name=meta["ranker"])
        r.exponents_ = dict(meta["exponents"] if "exponents" in meta else meta["weights"])  # "weights": format 1
        best = meta.get("valid_auc_sum")
        r.best_value_ = float("nan") if best is None else float(best)
        return r
