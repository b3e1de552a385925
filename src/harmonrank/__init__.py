"""harmonrank: learned multi-objective ensemble ranking (HarmonRank) for recommender systems.

Three layers, each usable alone: ops (:func:`soft_auc_loss`), networks (:class:`HarmonRankNet`, one batch
in, one score per row out) and rankers (``make_ranker("harmonrank").fit(train, valid=valid)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import DatasetConfig, Objective, load_config, simulator_config
from .data import Table, iter_tables, read_table
from .errors import ConfigError, DataError, HarmonRankError, MissingDependencyError, SoftRankError
from .features import EncodedBatch, FeatureEncoder
from .metrics import BootstrapResult, auc, auc_sum, gauc, objective_table, oracle_scores, paired_bootstrap
from .models import EnsembleConfig, HarmonRankNet, OneStepConfig, OneStepNet, weighted_product
from .rankers import (
    FormulaRanker,
    LambdaMARTRanker,
    NeuralRanker,
    Ranker,
    RankerSpec,
    load_ranker,
    make_ranker,
    ranker_names,
    register_ranker,
)
from .ranking import soft_auc, soft_auc_loss, soft_rank
from .scoring import evaluate_file, score_file, score_table
from .train import TrainConfig, Trainer

if TYPE_CHECKING:
    from .study.simulate import SimulatorConfig, simulate, simulate_table

__all__ = [
    "BootstrapResult",
    "ConfigError",
    "DataError",
    "DatasetConfig",
    "EncodedBatch",
    "EnsembleConfig",
    "FeatureEncoder",
    "FormulaRanker",
    "HarmonRankError",
    "HarmonRankNet",
    "LambdaMARTRanker",
    "MissingDependencyError",
    "NeuralRanker",
    "Objective",
    "OneStepConfig",
    "OneStepNet",
    "Ranker",
    "RankerSpec",
    "SimulatorConfig",
    "SoftRankError",
    "Table",
    "TrainConfig",
    "Trainer",
    "auc",
    "auc_sum",
    "evaluate_file",
    "gauc",
    "iter_tables",
    "load_config",
    "load_ranker",
    "make_ranker",
    "objective_table",
    "oracle_scores",
    "paired_bootstrap",
    "ranker_names",
    "read_table",
    "register_ranker",
    "score_file",
    "score_table",
    "simulate",
    "simulate_table",
    "simulator_config",
    "soft_auc",
    "soft_auc_loss",
    "soft_rank",
    "weighted_product",
]

__version__ = "0.1.0"

_STUDY = {"SimulatorConfig", "simulate", "simulate_table"}


def __getattr__(name: str) -> Any:
    """The simulator (study path) loads on first use, so importing the product path never imports it."""
    if name in _STUDY:
        from .study import simulate as module

        return getattr(module, name)
    raise AttributeError(f"module 'harmonrank' has no attribute {name!r}")
