"""harmonrank: learned multi-objective ensemble ranking (HarmonRank) for recommender systems."""

from __future__ import annotations

from .config import DatasetConfig, Objective, load_config, simulator_config
from .data import Table, iter_tables, read_table
from .errors import ConfigError, DataError, HarmonRankError
from .metrics import BootstrapResult, auc, auc_sum, gauc, objective_table, oracle_scores, paired_bootstrap
from .models.formula import weighted_product
from .ranking import soft_auc, soft_auc_loss, soft_rank
from .simulate import SimulatorConfig, simulate, simulate_table

__all__ = [
    "BootstrapResult",
    "ConfigError",
    "DataError",
    "DatasetConfig",
    "HarmonRankError",
    "Objective",
    "SimulatorConfig",
    "Table",
    "auc",
    "auc_sum",
    "gauc",
    "iter_tables",
    "load_config",
    "objective_table",
    "oracle_scores",
    "paired_bootstrap",
    "read_table",
    "simulate",
    "simulate_table",
    "simulator_config",
    "soft_auc",
    "soft_auc_loss",
    "soft_rank",
    "weighted_product",
]

__version__ = "0.1.0"
