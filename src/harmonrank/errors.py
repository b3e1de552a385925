"""Exceptions raised by harmonrank.

Every error a user can trigger is a :class:`HarmonRankError`, so callers can catch one class. Messages name
the argument, column or field at fault, say what was expected and show what came in.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "HarmonRankError"]


class HarmonRankError(Exception):
    """Root of every error raised by harmonrank on bad input."""


class ConfigError(HarmonRankError):
    """A configuration file or argument is invalid."""


class DataError(HarmonRankError):
    """Input data breaks the data contract (missing columns, bad values, empty input ...)."""
