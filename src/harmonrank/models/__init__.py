"""Rankers: one module per method."""

from __future__ import annotations

from .formula import parse_weights, weighted_product

__all__ = ["parse_weights", "weighted_product"]
