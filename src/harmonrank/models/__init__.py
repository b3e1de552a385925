"""Ensemble networks and their losses, one module per method, and the registry of networks.

Every network is an ``nn.Module`` built from one frozen config dataclass (saved with its checkpoint), whose
``forward`` takes one :class:`~harmonrank.features.EncodedBatch` and returns a ``(B,)`` score tensor.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .formula import weighted_product
from .harmonrank import EnsembleConfig, HarmonRankNet
from .losses import LOSSES, make_loss
from .one_step import OneStepConfig, OneStepNet

__all__ = ["LOSSES", "NETWORKS", "EnsembleConfig", "HarmonRankNet", "OneStepConfig", "OneStepNet", "make_loss",
           "weighted_product"]

#: network name -> (module class, its config dataclass); add a new network here
NETWORKS: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "harmonrank": (HarmonRankNet, EnsembleConfig),
    "one_step": (OneStepNet, OneStepConfig),
}
