"""One thread count for everything that computes: torch (intra- and inter-op), BLAS/OpenMP, LightGBM.

On a machine shared with other jobs, more threads than free cores thrash: each library spins up its own
pool per core and they contend. ``set_threads(n)`` fixes all of them at once; the CLI calls it from every
command's ``--threads`` option. Results are reproducible for the same seed *and the same thread count*
(float sums are reduced in a different order with another count).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["DEFAULT_THREADS", "get_threads", "set_threads"]

log = logging.getLogger(__name__)

#: default thread count: HARMONRANK_THREADS if set, else 1 (see benchmarks/results/throughput.md: on this
#: project's 2-core machines one thread trained as fast as two when idle and far faster when busy)
DEFAULT_THREADS = 1

_current: int | None = None
_blas_limit: Any = None


def _default() -> int:
    env = os.environ.get("HARMONRANK_THREADS")
    if env is None:
        return DEFAULT_THREADS
    if not env.isdigit() or int(env) < 1:
        raise ConfigError(f"HARMONRANK_THREADS must be a positive integer. Got {env!r} instead.")
    return int(env)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (None: HARMONRANK_THREADS or :data:`DEFAULT_THREADS`) in torch, BLAS and LightGBM.

    Returns the count in force. torch's inter-op pool can only be sized before its first parallel work;
    later calls change the intra-op pool, BLAS and LightGBM only.
    """
    global _current, _blas_limit
    n = _default() if n is None else n
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a positive integer. Got {n!r} instead.")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already started: torch allows sizing the inter-op pool only once
        log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())
    from threadpoolctl import threadpool_limits

    _blas_limit = threadpool_limits(limits=n)  # numpy/scipy BLAS and OpenMP pools in this process
    _current = n
    return n


def get_threads() -> int:
    """The thread count set by :func:`set_threads` (LightGBM's ``n_jobs``); if never set (library use
    without the CLI), torch's own intra-op count, so LightGBM and torch agree."""
    return _current if _current is not None else torch.get_num_threads()
