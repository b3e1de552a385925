"""Exceptions raised by harmonrank.

Every error a user can trigger is a :class:`HarmonRankError`, so callers can catch one class. Messages name
the argument, column or field at fault, say what was expected and show what came in.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "HarmonRankError", "MissingDependencyError", "SoftRankError"]


class HarmonRankError(Exception):
    """Root of every error raised by harmonrank on bad input."""


class ConfigError(HarmonRankError):
    """A configuration file or argument is invalid."""


class DataError(HarmonRankError):
    """Input data breaks the data contract (missing columns, bad values, empty input ...)."""


class SoftRankError(HarmonRankError, ValueError):
    """Bad arguments to a soft-rank / soft-AUC operator (also a ValueError, as torch users expect)."""


class MissingDependencyError(HarmonRankError):
    """An optional dependency (an extra such as ``harmonrank[baselines]``) is not installed."""
