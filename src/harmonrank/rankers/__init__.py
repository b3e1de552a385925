"""Rankers and their registry: each ranker is declared once, and the CLI, the benchmark and the docs read it.

>>> from harmonrank.rankers import RankerSpec, make_ranker, register_ranker, ranker_names
>>> register_ranker(RankerSpec("formula_fast", FormulaRanker, "formula, 10 trials",  # doctest: +SKIP
...                            options={"n_trials": 10}))
>>> make_ranker("formula_fast").fit(train, valid=valid).score(test)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DatasetConfig
from ..errors import ConfigError, HarmonRankError
from ..train import Device, TrainConfig
from .auto import AutoRanker, Selection, choose_two_step, request_keys
from .base import MODEL_FORMAT, Ranker
from .formula import FormulaRanker
from .lambdamart import LambdaMARTRanker, tree_matrix, tree_vocab
from .neural import NeuralRanker

__all__ = ["RANKERS", "AutoRanker", "FormulaRanker", "LambdaMARTRanker", "NeuralRanker", "Ranker", "RankerSpec",
           "Selection", "choose_two_step", "default_rankers", "load_ranker", "make_ranker", "ranker_names",
           "ranker_table", "register_ranker", "request_keys", "tree_matrix", "tree_vocab"]


@dataclass(frozen=True)
class RankerSpec:
    """One ranker's declaration.

    Attributes
    ----------
    name : registry name (CLI ``--ranker``, benchmark ``rankers``, report rows).
    estimator : the :class:`Ranker` subclass; built by its ``from_spec(name, train, options)``.
    description : one line for ``--help``, the docs and reports.
    net, loss : network and loss names for neural rankers (:data:`harmonrank.models.NETWORKS`, ``LOSSES``).
    options : fixed constructor options (e.g. ``{"net_options": {"use_user": False}}``).
    benchmark : part of the benchmark's default list.
    """

    name: str
    estimator: type[Ranker]
    description: str
    net: str | None = None
    loss: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    benchmark: bool = True

    def build(self, train: TrainConfig, **options: Any) -> Ranker:
        opts: dict[str, Any] = {**self.options, **options}
        if self.net is not None:
            opts["net_options"] = {**self.options.get("net_options", {}), **options.get("net_options", {})}
            opts.update(net=self.net, loss=self.loss)
        return self.estimator.from_spec(self.name, train, opts)


#: every registered ranker by name, in registration order (the benchmark's order)
RANKERS: dict[str, RankerSpec] = {}


def register_ranker(spec: RankerSpec, *, replace: bool = False) -> RankerSpec:
    """Add a ranker to the registry (``replace=True`` to overwrite one of the same name)."""
    if not spec.name.isidentifier():
        raise ConfigError(f"ranker name must be an identifier. Got {spec.name!r} instead.")
    if spec.name in RANKERS and not replace:
        raise ConfigError(f"ranker {spec.name!r} is already registered (pass replace=True to overwrite)")
    if not (isinstance(spec.estimator, type) and issubclass(spec.estimator, Ranker)):
        raise ConfigError(f"ranker {spec.name!r}: estimator must be a Ranker subclass. Got {spec.estimator!r}.")
    RANKERS[spec.name] = spec
    return spec


def ranker_names() -> tuple[str, ...]:
    """Names of every registered ranker."""
    return tuple(RANKERS)


def default_rankers() -> tuple[str, ...]:
    """The rankers a benchmark compares unless told otherwise."""
    return tuple(name for name, spec in RANKERS.items() if spec.benchmark)


def ranker_table() -> list[dict[str, str]]:
    """One row per ranker (name, estimator, net, loss, description): the docs table and ``--help``."""
    return [{"ranker": s.name, "estimator": s.estimator.__name__, "net": s.net or "—", "loss": s.loss or "—",
             "description": s.description} for s in RANKERS.values()]


def make_ranker(name: str, train: TrainConfig | None = None, **options: Any) -> Ranker:
    """A fresh ranker by registry name, with training knobs ``train`` and extra constructor ``options``."""
    if name not in RANKERS:
        raise ConfigError(f"unknown ranker {name!r}; known: {', '.join(RANKERS)}")
    try:
        return RANKERS[name].build(train or TrainConfig(), **options)
    except TypeError as err:
        raise ConfigError(f"ranker {name!r}: bad option: {err}") from err


def load_ranker(run_dir: str | Path, *, device: Device | None = None) -> Ranker:
    """Load a ranker saved by :meth:`Ranker.save` (or ``harmonrank train``); ``device`` for neural rankers."""
    d = Path(run_dir)
    if not (d / "model.json").is_file():
        raise HarmonRankError(f"{d} holds no model.json: not a harmonrank model folder")
    kinds = {s.estimator.kind: s.estimator for s in RANKERS.values()}
    try:
        meta = json.loads((d / "model.json").read_text(encoding="utf-8"))
        version = meta.get("format", 1)
        if not isinstance(version, int) or not 1 <= version <= MODEL_FORMAT:
            raise HarmonRankError(f"{d}/model.json has format version {version!r}; this harmonrank reads "
                                  f"versions 1 to {MODEL_FORMAT} (upgrade harmonrank)")
        if meta.get("kind") not in kinds:
            raise HarmonRankError(f"{d}/model.json: unknown model kind {meta.get('kind')!r}")
        r: Ranker = kinds[meta["kind"]]._load(d, meta)
        r.config_ = DatasetConfig.from_dict(meta["dataset_config"])
    except HarmonRankError:
        raise
    except Exception as err:  # corrupt or partial model folder: JSON, missing keys/files, bad weights
        raise HarmonRankError(f"cannot load the model in {d}: {type(err).__name__}: {err}") from err
    if device is not None and isinstance(r, NeuralRanker):
        r.with_device(device)
    return r


def _neural(name: str, net: str, loss: str, description: str, **net_options: Any) -> None:
    options = {"net_options": net_options} if net_options else {}
    register_ranker(RankerSpec(name, NeuralRanker, description, net=net, loss=loss, options=options))


# the built-in rankers, baselines first (the benchmark's table order)
register_ranker(RankerSpec("formula", FormulaRanker,
                           "weighted-product formula, exponents by Bayesian optimisation (Optuna TPE)"))
register_ranker(RankerSpec("lambdamart", LambdaMARTRanker,
                           "LambdaMART (LightGBM lambdarank), AUC-weighted gains, random groups"))
_neural("pairwise", "one_step", "pairwise", "RankNet-style pairwise logistic over positive-negative pairs")
_neural("one_step_bce", "one_step", "bce", "baseline: one-step ensemble net + per-objective BCE")
_neural("one_step_rank", "one_step", "rank", "ablation: one-step net + soft AUC-sum loss (no two-step)")
_neural("harmonrank_bce", "harmonrank", "bce", "ablation: HarmonRank net with per-objective BCE")
_neural("harmonrank_no_user", "harmonrank", "rank", "ablation: HarmonRank without personalised features",
        use_user=False)
_neural("harmonrank_group", "harmonrank", "rank_group", "HarmonRank with the per-request (GAUC) loss")
_neural("harmonrank", "harmonrank", "rank", "HarmonRank: two-step relation-aware net + soft AUC-sum loss")
register_ranker(RankerSpec("harmonrank_pref", NeuralRanker, "HarmonRank conditioned on objective weights chosen "
                           "at prediction time, trained over Dirichlet-drawn weights", net="harmonrank", loss="rank",
                           options={"preference_alpha": 1.0}, benchmark=False))
register_ranker(RankerSpec("one_step_rank_pref", NeuralRanker, "one-step rank net with the objective weights "
                           "concatenated to its input (the conditioned baseline)", net="one_step", loss="rank",
                           options={"preference_alpha": 1.0}, benchmark=False))
register_ranker(RankerSpec("auto", AutoRanker, "trains harmonrank and one_step_rank, keeps harmonrank if its "
                           "validation AUC-sum is higher (or, rule='ci', only if significantly)",
                           benchmark=False))
