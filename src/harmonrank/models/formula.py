"""Weighted-product formula fusion: ``score = prod_m p_m ** e_m``, the industry's hand formula.

The ``e_m`` are the formula's *exponents* (not the objective weights of the AUC-sum). Ranked on the log
scale, ``sum_m e_m log p_m``, which orders candidates identically and never underflows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["exponent_vector", "parse_objective_values", "weighted_product"]

_EPS = 1e-7


def weighted_product(scores: np.ndarray, exponents: Sequence[float] | np.ndarray) -> np.ndarray:
    """Log of the weighted product of the score columns: ``sum_m e_m log(clip(p_m))``.

    Parameters
    ----------
    scores : array of shape (n, M), probabilities in [0, 1].
    exponents : M non-negative exponents.

    Examples
    --------
    >>> weighted_product(np.array([[0.5, 0.1], [0.2, 0.4]]), [1.0, 1.0]).argsort().tolist()
    [0, 1]
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(exponents, dtype=np.float64)
    if s.ndim != 2 or w.shape != (s.shape[1],):
        raise ConfigError(f"need scores (n, M) and M exponents. Got {s.shape} and {w.shape} instead.")
    return np.log(np.clip(s, _EPS, 1.0)) @ w


def parse_objective_values(text: str, objectives: Sequence[str], what: str = "formula") -> dict[str, float]:
    """Parse ``"click=1,buy=2.5"`` into a finite, non-negative value per objective named in ``text``.

    Used for formula exponents and for objective weights; ``what`` names the option in errors. Raises
    ConfigError naming the bad term.
    """
    known = set(objectives)
    out: dict[str, float] = {}
    terms = [t.strip() for t in text.split(",") if t.strip()]
    if not terms:
        raise ConfigError(f"{what} must be like 'click=1,buy=2'. Got {text!r} instead.")
    for term in terms:
        name, sep, value = term.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{what} term {term!r} must be 'objective=value'")
        if name not in known:
            raise ConfigError(f"{what} names unknown objective {name!r}; known: {', '.join(objectives)}")
        try:
            w = float(value)
        except ValueError as err:
            raise ConfigError(f"{what} value of {name!r} must be a number. Got {value!r} instead.") from err
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"{what} value of {name!r} must be finite and >= 0. Got {w} instead.")
        out[name] = w
    return out


def exponent_vector(exponents: Mapping[str, float], objectives: Sequence[str]) -> np.ndarray:
    """Exponents in the order of ``objectives`` (unnamed objectives get 0)."""
    return np.array([float(exponents.get(m, 0.0)) for m in objectives])
