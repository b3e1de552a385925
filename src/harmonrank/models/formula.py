"""Weighted-product formula fusion: ``score = prod_m p_m ** w_m``, the industry's hand formula.

Ranked on the log scale, ``sum_m w_m log p_m``, which orders candidates identically and never underflows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["parse_weights", "weighted_product"]

_EPS = 1e-7


def weighted_product(scores: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Log of the weighted product of the score columns: ``sum_m w_m log(clip(p_m))``.

    Parameters
    ----------
    scores : array of shape (n, M), probabilities in [0, 1].
    weights : M non-negative exponents.

    Examples
    --------
    >>> weighted_product(np.array([[0.5, 0.1], [0.2, 0.4]]), [1.0, 1.0]).argsort().tolist()
    [0, 1]
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.ndim != 2 or w.shape != (s.shape[1],):
        raise ConfigError(f"need scores (n, M) and M weights. Got {s.shape} and {w.shape} instead.")
    return np.log(np.clip(s, _EPS, 1.0)) @ w


def parse_weights(text: str, objectives: Sequence[str]) -> dict[str, float]:
    """Parse ``"click=1,buy=2.5"`` into a weight per objective (unnamed objectives get 0).

    Raises ConfigError naming the bad term.
    """
    out = dict.fromkeys(objectives, 0.0)
    terms = [t.strip() for t in text.split(",") if t.strip()]
    if not terms:
        raise ConfigError(f"formula must be like 'click=1,buy=2'. Got {text!r} instead.")
    for term in terms:
        name, sep, value = term.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"formula term {term!r} must be 'objective=weight'")
        if name not in out:
            raise ConfigError(f"formula names unknown objective {name!r}; known: {', '.join(objectives)}")
        try:
            w = float(value)
        except ValueError as err:
            raise ConfigError(f"formula weight of {name!r} must be a number. Got {value!r} instead.") from err
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"formula weight of {name!r} must be finite and >= 0. Got {w} instead.")
        out[name] = w
    return out


def weights_vector(weights: Mapping[str, float], objectives: Sequence[str]) -> np.ndarray:
    return np.array([float(weights.get(m, 0.0)) for m in objectives])
