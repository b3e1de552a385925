"""Data-parallel training on several processes (torchrun / torch.distributed), with ONE global rank loss.

Launch ``torchrun --nproc-per-node N -m harmonrank train ...`` (or any launcher that sets torchrun's
environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` — Kubernetes jobs,
Slurm, Ray Train, Spark's TorchDistributor). :func:`init_from_env` joins the process group (gloo on CPU,
nccl on CUDA) and the :class:`~harmonrank.train.Trainer` wraps the network in DistributedDataParallel.

The global batch. ``TrainConfig.batch_size`` is per process: each step draws one global batch of about
``N * batch_size`` rows (whole requests, the same on every rank because the batch order comes from the
seed), and rank ``r`` scores the ``r``-th of ``N`` equal slices of it. The soft AUC needs every score of
the batch (each positive is ranked against every negative), so the ranks' scores are gathered *with their
gradients* (:func:`gather_scores`, ``all_gather_single_autograd``) and every rank computes
the same loss over the whole batch, labels and request ids indexed locally (each rank holds them).

The scaling rule (the factor-of-N trap). The backward of ``all_gather`` sums, over the N ranks, each
rank's gradient with respect to the gathered scores; as every rank computed the same loss, a rank's local
scores receive N times dL/ds. DistributedDataParallel then *averages* parameter gradients over the N ranks,
dividing by N: the result is exactly the gradient of the one-process loss over the same N * batch_size rows
(``tests/test_distributed.py`` checks it to 1e-6). Do not rescale the loss or the learning rate by N.

Communication per step: the gathered scores (N x max slice x 4 bytes) forward and their gradients
backward, plus DDP's all-reduce of the network's gradients (4 bytes per parameter).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .errors import ConfigError

__all__ = ["DistInfo", "all_sizes", "any_rank", "gather_rows", "gather_scores", "gather_tensor", "init_from_env",
           "shard", "world"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, number of processes, rank within its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, checkpoints and writes the model."""
        return self.rank == 0


def world() -> DistInfo:
    """The current job (one process when torch.distributed is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's environment variables when ``WORLD_SIZE`` > 1."""
    size = os.environ.get("WORLD_SIZE", "1")
    if not size.isdigit() or int(size) < 1:
        raise ConfigError(f"WORLD_SIZE must be a positive integer. Got {size!r} instead.")
    if int(size) == 1 or (dist.is_available() and dist.is_initialized()):
        return world()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: launch with torchrun "
                          "(docs/scale.md)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    info = world()
    log.info("joined process group: rank %d of %d (%s)", info.rank, info.size, backend)
    return info


def shard(rows: np.ndarray, info: DistInfo) -> tuple[np.ndarray, list[int]]:
    """This rank's slice of a global batch and every rank's slice length (``np.array_split``: the slices
    concatenate back to ``rows`` in rank order, sizes differ by at most one)."""
    parts = np.array_split(rows, info.size)
    return parts[info.rank], [len(p) for p in parts]


def gather_scores(local: Tensor, sizes: list[int]) -> Tensor:
    """Every rank's scores concatenated in rank order, differentiable with respect to ``local``.

    Slices of unequal length are padded to the longest for the collective and cut back after it.
    """
    if len(sizes) == 1:
        return local
    longest = max(sizes)
    pad = longest - local.shape[0]
    padded = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))]) if pad else local
    # differentiable all-gather (its backward sums the ranks' gradients): torch's functional collective, which
    # torch 2.13 recommends over the deprecated torch.distributed.nn.functional.all_gather
    from torch.distributed._functional_collectives import all_gather_single_autograd

    group = dist.group.WORLD
    if group is None:  # unreachable: len(sizes) > 1 only inside an initialised process group
        raise ConfigError("gather_scores needs an initialised process group")
    gathered = all_gather_single_autograd(padded, 0, group)  # (N * longest, ...)
    parts = gathered.view(len(sizes), longest, *local.shape[1:])
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def _padded(local: np.ndarray, sizes: list[int]) -> Tensor:
    """``local`` as a tensor padded with zero rows to the longest rank's length (collectives need equal shapes)."""
    t = torch.from_numpy(np.ascontiguousarray(local))
    return torch.cat([t, t.new_zeros((max(sizes) - t.shape[0], *t.shape[1:]))])


def _unpad(parts: list[Tensor], sizes: list[int]) -> np.ndarray:
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).numpy()


def gather_rows(local: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Like :func:`gather_scores` for numpy arrays without gradients (e.g. validation scores)."""
    if len(sizes) == 1:
        return local
    padded = _padded(local, sizes)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return _unpad(parts, sizes)


def gather_rows_to_main(local: np.ndarray, sizes: list[int]) -> np.ndarray | None:
    """Every rank's rows concatenated in rank order on rank 0 only (None on the others): for data only rank
    0 needs, so the other ranks hold no copy."""
    if len(sizes) == 1:
        return local
    padded = _padded(local, sizes)
    parts = [torch.empty_like(padded) for _ in sizes] if dist.get_rank() == 0 else None
    dist.gather(padded, parts, dst=0)
    return _unpad(parts, sizes) if parts is not None else None


def broadcast_from_main(values: np.ndarray) -> np.ndarray:
    """Rank 0's float64 vector on every rank (the others pass a vector of the same length)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    dist.broadcast(t, src=0)
    return t.numpy()


def all_sizes(n: int) -> list[int]:
    """Every rank's ``n`` (e.g. its batch's row count), in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [n]
    t = torch.tensor([n], dtype=torch.int64)
    out = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [int(x) for x in out]


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. "I still have a batch this epoch")."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_tensor(local: Tensor, sizes: list[int]) -> Tensor:
    """Every rank's rows of a tensor without gradients (labels, request ids), concatenated in rank order."""
    if len(sizes) == 1:
        return local
    longest = max(sizes)
    padded = torch.cat([local, local.new_zeros((longest - local.shape[0], *local.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
