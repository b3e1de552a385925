"""The training loop: mini-batches of whole requests, AdamW, early stopping on validation AUC-sum,
a checkpoint every epoch (safetensors + JSON) and exact resume.

The trainer knows a model only as ``net(batch: EncodedBatch) -> output`` and a loss only as
``loss(output, labels, group) -> scalar``; it never looks at their classes. Ensemble networks output (B,)
scores judged by the validation AUC-sum; other models (the upstream multi-task net, (B, K) logits) pass
their own validation ``metric``. Net, loss and batches live on one device (``TrainConfig.device``); outputs
come back to numpy via ``.cpu()``.

Reproducibility: the batch order of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e])`` and
the network is initialised after ``torch.manual_seed(seed)``, so the same seed gives the same model on the
same machine, and a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import kernels
from .distributed import all_sizes, any_rank, gather_rows, gather_scores, gather_tensor, shard, world
from .errors import ConfigError, HarmonRankError
from .features import EncodedBatch
from .io import atomic_write, write_json
from .metrics import auc_sum
from .ranking import METHODS, Method

__all__ = ["CHECKPOINT_FORMAT", "Device", "TrainConfig", "Trainer", "predict_net", "request_batches",
           "resolve_device"]

log = logging.getLogger(__name__)

#: version of checkpoint.json / checkpoint.safetensors; 2 = networks take one EncodedBatch and hold their
#: logit standardisation as buffers (version 1, before, had no "format" key)
CHECKPOINT_FORMAT = 2

Device = Literal["auto", "cpu", "cuda", "mps"]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda if available, else cpu; other names are checked.

    ``"mps"`` is refused with the reason: Apple's MPS backend has no float64, which the networks' logit
    standardisation uses (so that it matches a numpy float64 reference exactly).
    """
    if device not in get_args(Device):
        raise ConfigError(f"device must be one of {', '.join(get_args(Device))}. Got {device!r} instead.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device (use --device cpu or auto)")
    if device == "mps":
        raise ConfigError("device 'mps' is not supported yet: MPS has no float64, which the networks' logit "
                          "standardisation uses; use --device cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TrainConfig:
    """Training knobs. ``batch_size`` is in impressions; batches hold whole requests (the rank loss and its
    group-wise variant need them), so a batch may exceed it by one request."""

    max_epochs: int = 8
    batch_size: int = 4096
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 2
    seed: int = 0
    grad_clip: float = 5.0
    eval_batch: int = 65_536
    batch_by: Literal["request", "row"] = "request"
    smoothing: float = 0.5  # early stopping watches an EMA of the validation metric (1: the raw metric)
    min_delta: float = 1e-4  # ... and needs it to improve by this much to reset the patience
    loss_method: Method = "pl"  # soft-AUC operator of the rank losses (harmonrank.ranking.METHODS)
    temperature: float | None = None  # relative temperature of that operator; None: the method's default
    device: Device = "auto"
    # preference-conditioned training (docs/preference.md): objective weights drawn per batch, fed to the net
    # and used by the loss; None: off. With probability preference_vertex_prob a vertex or the equal point.
    preference_alpha: float | None = None
    preference_vertex_prob: float = 0.25
    # torch.compile the training forward (inductor; eager if compilation fails). Pays on long runs: the first
    # step compiles for 10-60 s (docs/performance.md); validation and prediction stay eager.
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size", "patience", "eval_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train: {name} must be >= 1. Got {getattr(self, name)!r} instead.")
        if not self.lr > 0:
            raise ConfigError(f"train: lr must be > 0. Got {self.lr!r} instead.")
        if self.batch_by not in ("request", "row"):
            raise ConfigError(f"train: batch_by must be 'request' or 'row'. Got {self.batch_by!r} instead.")
        if self.loss_method not in METHODS:
            raise ConfigError(f"train: loss_method must be one of {', '.join(METHODS)}. "
                              f"Got {self.loss_method!r} instead.")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"train: temperature must be > 0. Got {self.temperature!r} instead.")
        if self.device not in get_args(Device):
            raise ConfigError(f"train: device must be one of {', '.join(get_args(Device))}. "
                              f"Got {self.device!r} instead.")
        if not 0 < self.smoothing <= 1:
            raise ConfigError(f"train: smoothing must be in (0, 1]. Got {self.smoothing!r} instead.")
        if not self.min_delta >= 0:
            raise ConfigError(f"train: min_delta must be >= 0. Got {self.min_delta!r} instead.")
        if self.preference_alpha is not None and not self.preference_alpha > 0:
            raise ConfigError(f"train: preference_alpha must be > 0. Got {self.preference_alpha!r} instead.")
        if not 0 <= self.preference_vertex_prob <= 1:
            raise ConfigError(f"train: preference_vertex_prob must be in [0, 1]. "
                              f"Got {self.preference_vertex_prob!r} instead.")
        if not self.grad_clip >= 0:
            raise ConfigError(f"train: grad_clip must be >= 0 (0: off). Got {self.grad_clip!r} instead.")


def request_batches(group: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of mini-batches made of whole, shuffled groups of about ``batch_size`` rows each."""
    _, gid, sizes = np.unique(group, return_inverse=True, return_counts=True)
    order = np.argsort(gid, kind="stable")  # rows grouped by request
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    perm = rng.permutation(len(sizes))
    sz = sizes[perm]
    rows = order[np.repeat(starts[perm], sz) + (np.arange(sz.sum()) - np.repeat(np.cumsum(sz) - sz, sz))]
    batch_of_group = (np.cumsum(sz) - sz) // batch_size
    cut = np.flatnonzero(np.diff(batch_of_group)) + 1
    bounds = np.concatenate([[0], np.cumsum(sz)[cut - 1], [len(rows)]])
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def predict_net(net: nn.Module, data: EncodedBatch, eval_batch: int = 65_536,
                device: torch.device | str | None = None) -> np.ndarray:
    """Outputs of a network in eval mode, in chunks on ``device`` (default: where the net is), as float64 numpy.

    A network with an ``inference_form()`` (HarmonRank: folded, one fused kernel pass on the CPU) is scored
    in that form, so validation during training, prediction and serving compute the same scores."""
    if device is None:
        device = next(iter(net.parameters())).device
    net = scoring_form(net)
    out = []
    with torch.no_grad():
        for a in range(0, len(data), eval_batch):
            b = data.index(slice(a, a + eval_batch)).to(device)
            out.append(net(b).cpu().double().numpy())
    return np.concatenate(out) if out else np.empty(0)


def scoring_form(net: nn.Module) -> nn.Module:
    """``net`` in eval mode, as its ``inference_form()`` where it has one (what :func:`predict_net` scores)."""
    net.eval()
    form = getattr(net, "inference_form", None)
    return form() if form is not None else net


class CompiledOrEager(nn.Module):
    """``torch.compile(module, dynamic=True)`` (batches of whole requests vary in size), falling back to the
    eager module for good if compilation fails (no C++ compiler, an unsupported operator ...), with a log line.

    The wrapped module's parameters are the module's own: state dicts, checkpoints and the optimiser see no
    difference. Compiled and eager forwards agree to float rounding, not bitwise.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._compiled: Callable[..., Any] | None = None
        self._probed = False  # the first training call also compiles the backward, inside the fallback
        if any(getattr(m, "uses_fused_kernel", False) for m in module.modules()):
            kernels.available()  # build/load the fused kernel now: the traced graph only sees it if loaded
        try:
            with warnings.catch_warnings():  # importing inductor trips torch's own torch.jit deprecation warning
                warnings.filterwarnings("ignore", message=".*torch.jit.script_method. is deprecated",
                                        category=DeprecationWarning)
                self._compiled = torch.compile(module, dynamic=True)
        except Exception as err:  # any failure to set up compilation: train eagerly
            self._give_up(err)

    def _give_up(self, err: BaseException) -> None:
        log.warning("torch.compile failed (%s: %s); training eagerly", type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")
        self._compiled = None

    def forward(self, *args: Any) -> Any:
        if self._compiled is not None:
            try:
                out = self._compiled(*args)
                if (not self._probed and isinstance(out, torch.Tensor) and out.requires_grad
                        and not isinstance(self.module, DistributedDataParallel)):  # DDP: its reducer owns backward
                    # the backward graph compiles lazily, at the caller's backward(), outside this fallback:
                    # compile it here on a throw-away forward and gradient (parameters' .grad untouched)
                    params = [p for p in self.module.parameters() if p.requires_grad]
                    torch.autograd.grad(out.float().sum(), params, allow_unused=True)
                    out = self._compiled(*args)
                self._probed = True
                return out
            except Exception as err:  # any compiler failure: train on, eagerly
                self._give_up(err)
        return self.module(*args)

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled module (False after a fallback)."""
        return self._compiled is not None


class Trainer:
    """Owns optimiser, loop, early stopping and checkpoints for one (net, loss) pair.

    ``metric(outputs, labels) -> float`` (higher is better) judges an epoch on the validation set; default:
    the AUC-sum of (n,) scores with ``objective_weights``.
    """

    def __init__(self, net: nn.Module, loss: nn.Module, config: TrainConfig, objective_weights: Sequence[float],
                 run_dir: str | Path | None = None, metadata: dict[str, Any] | None = None,
                 metric: Callable[[np.ndarray, np.ndarray], float] | None = None) -> None:
        self.metadata = metadata or {}  # saved in every checkpoint.json (net config, objectives, vocabularies)
        self.device = resolve_device(config.device)
        self.net = net.to(self.device)
        self.dist = world()  # one process, or this rank of a torchrun job (harmonrank.distributed)
        self.model: nn.Module = self.net
        if self.dist.size > 1:  # gradients averaged over ranks; with the gathered loss that is the exact gradient
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids, forward_sync_buffers=False)
        if config.compile:
            self.model = CompiledOrEager(self.model)
        self.loss = loss.to(self.device)
        self.config = config
        self.objective_weights = tuple(objective_weights)
        self.metric = metric or (lambda s, y: auc_sum(s, y, self.objective_weights))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._params = [p for p in list(net.parameters()) + list(loss.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._params, lr=config.lr, weight_decay=config.weight_decay)
        self.history: list[dict[str, float]] = []
        self.best_metric = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0  # epochs completed
        self._step_rows = 0

    # ------------------------------------------------------------------ checkpoints
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"model.{k}": v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}
        t.update({f"loss.{k}": v.detach().clone().contiguous() for k, v in self.loss.state_dict().items()})
        for idx, st in self.optimizer.state_dict()["state"].items():
            for k, v in st.items():
                t[f"opt.{idx}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
        if self.best_state is not None:
            t.update({f"best.{k}": v.contiguous() for k, v in self.best_state.items()})
        return t

    def save_checkpoint(self) -> None:
        if self.run_dir is None or not self.dist.main:  # rank 0 writes; every rank can resume from it
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.run_dir / "checkpoint.safetensors") as tmp:
            save_file({k: v.cpu() for k, v in self._state_tensors().items()}, str(tmp),
                      metadata={"epoch": str(self.epoch)})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "best_metric": self.best_metric if np.isfinite(self.best_metric) else None,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "train_config": asdict(self.config),
            "param_groups": [{k: v for k, v in g.items() if k != "params"}
                             for g in self.optimizer.state_dict()["param_groups"]],
            "model": self.metadata,
        }
        write_json(meta, self.run_dir / "checkpoint.json", indent=1)  # written last: marks the pair complete

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint of ``run_dir``; False when there is none."""
        if self.run_dir is None or not (self.run_dir / "checkpoint.json").exists():
            return False
        try:
            meta = json.loads((self.run_dir / "checkpoint.json").read_text(encoding="utf-8"))
            with safe_open(str(self.run_dir / "checkpoint.safetensors"), framework="pt") as f:
                saved_epoch = (f.metadata() or {}).get("epoch")
            tensors = load_file(str(self.run_dir / "checkpoint.safetensors"), device=str(self.device))
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise HarmonRankError(f"cannot resume from {self.run_dir}: {err}") from err
        if meta.get("format", 1) != CHECKPOINT_FORMAT:
            raise HarmonRankError(
                f"cannot resume from {self.run_dir}: its checkpoint has format version {meta.get('format', 1)}, "
                f"this harmonrank writes and resumes version {CHECKPOINT_FORMAT}; start a new run (a finished "
                "model.json of the old version still loads with load_ranker)")
        if saved_epoch != str(meta.get("epoch")):
            raise HarmonRankError(
                f"cannot resume from {self.run_dir}: checkpoint.safetensors is from epoch {saved_epoch} but "
                f"checkpoint.json from epoch {meta.get('epoch')} (the run died between the two writes); "
                "delete both to restart")
        saved_ranker = (meta.get("model") or {}).get("ranker")
        if saved_ranker and self.metadata.get("ranker") and saved_ranker != self.metadata["ranker"]:
            raise HarmonRankError(
                f"cannot resume from {self.run_dir}: its checkpoint holds ranker {saved_ranker!r}, this run trains "
                f"{self.metadata['ranker']!r}; resume with --ranker {saved_ranker} or use another --out")
        saved_enc, enc = (meta.get("model") or {}).get("encoder"), self.metadata.get("encoder")
        if saved_enc and enc and saved_enc.get("vocab") != enc.get("vocab"):
            col = next((c for c in enc.get("vocab", {}) if saved_enc.get("vocab", {}).get(c) != enc["vocab"][c]), "?")
            raise HarmonRankError(
                f"cannot resume from {self.run_dir}: the categorical vocabularies differ from the checkpoint's "
                f"(first: {col!r}); the data, --max-vocab or --min-count changed, and the saved embeddings would "
                "sit on other categories")
        saved_cfg = meta.get("train_config", {})
        for key in ("seed", "batch_size", "batch_by", "loss_method", "temperature", "lr", "weight_decay",
                    "grad_clip", "smoothing", "min_delta", "preference_alpha", "preference_vertex_prob", "compile"):
            if key in saved_cfg and saved_cfg[key] != getattr(self.config, key):
                raise HarmonRankError(
                    f"cannot resume from {self.run_dir}: it was trained with {key}={saved_cfg[key]!r}, "
                    f"this run asks for {getattr(self.config, key)!r}; resuming would not be exact")
        try:
            self.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.loss.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("loss.")})
        except RuntimeError as err:
            raise HarmonRankError(f"cannot resume from {self.run_dir}: the checkpoint holds a different model "
                                  f"(other ranker, data or options): {str(err).splitlines()[0]}") from err
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        groups = self.optimizer.state_dict()["param_groups"]
        for g, saved in zip(groups, meta["param_groups"], strict=True):
            g.update({k: v for k, v in saved.items() if k in g})
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        self.epoch = int(meta["epoch"])
        self.best_metric = meta["best_metric"] if meta["best_metric"] is not None else -np.inf
        self.best_epoch = int(meta["best_epoch"])
        self.history = list(meta["history"])
        log.info("resumed from %s after epoch %d", self.run_dir, self.epoch)
        return True

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        train: EncodedBatch,
        train_labels: np.ndarray,
        train_group: np.ndarray,
        valid: EncodedBatch | None,
        valid_labels: np.ndarray | None,
        *,
        resume: bool = False,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``max_epochs`` or until the smoothed validation metric has not improved by ``min_delta``
        for ``patience`` epochs (:meth:`epochs_without_improvement`).

        Leaves the best epoch's parameters in ``net`` (the last epoch's when there is no validation set).
        ``on_epoch(record)`` after each epoch, ``on_batch(epoch, done, total)`` after each batch.
        """
        cfg = self.config
        labels_t = torch.from_numpy(np.asarray(train_labels, dtype=np.float32)).to(self.device)
        _, gid = np.unique(train_group, return_inverse=True)
        group_t = torch.from_numpy(gid).to(self.device)

        def steps(epoch: int) -> Iterator[tuple[Callable[[], torch.Tensor], int, int]]:
            rng = np.random.default_rng([cfg.seed, epoch])
            size = cfg.batch_size * self.dist.size  # the global batch: batch_size rows per process
            if cfg.batch_by == "request":
                batches = request_batches(train_group, size, rng)
            else:
                perm = rng.permutation(len(train))
                batches = [perm[a:a + size] for a in range(0, len(perm), size)]
            for k, rows in enumerate(batches):
                yield (functools.partial(self.step_loss, train, labels_t, group_t, rows, self.preference(epoch, k)),
                       len(rows), len(batches))

        def validate() -> float:
            assert valid is not None and valid_labels is not None
            return self.metric(self.predict(valid), valid_labels)

        has_valid = valid is not None and valid_labels is not None
        return self._loop(steps, validate if has_valid else None, resume, on_epoch, on_batch)

    def fit_stream(
        self,
        batches: Callable[[int], Iterator[tuple[EncodedBatch, torch.Tensor, torch.Tensor]]],
        valid: Callable[[], Iterator[tuple[EncodedBatch, np.ndarray]]] | None,
        *,
        batches_per_epoch: int = 0,
        resume: bool = False,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None,
    ) -> list[dict[str, float]]:
        """:meth:`fit` for data streamed from disk (:class:`harmonrank.stream.StreamLoader`).

        ``batches(epoch)`` yields this rank's (batch, labels, request ids) of an epoch; the ranks agree step by
        step on whether any still has a batch (one that has run out scores one row of its last batch and
        contributes nothing), so no row is dropped. ``valid()`` yields this rank's (batch, labels) of the
        validation set; the scores of all ranks are gathered and the metric is computed exactly on the whole
        set. ``batches_per_epoch`` is only the progress bar's estimate.
        """
        last: list[EncodedBatch] = []

        def steps(epoch: int) -> Iterator[tuple[Callable[[], torch.Tensor], int, int]]:
            it = batches(epoch)
            for k in itertools.count():
                item = next(it, None)
                if not any_rank(item is not None):
                    return
                if item is not None:
                    last[:] = [item[0].index(slice(0, 1))]
                yield (functools.partial(self.stream_step_loss, item, last[0], self.preference(epoch, k)), -1,
                       batches_per_epoch)

        def validate() -> float:
            assert valid is not None
            scores, labels = [], []
            form = scoring_form(self.net)  # folded once for the whole validation pass
            for b, y in valid():
                scores.append(predict_net(form, b, self.config.eval_batch, self.device))
                labels.append(y)
            s = np.concatenate(scores) if scores else np.empty(0)
            y_all = np.concatenate(labels) if labels else np.empty((0, len(self.objective_weights)), np.int8)
            sizes = all_sizes(len(s))
            return self.metric(gather_rows(s, sizes), gather_rows(y_all, sizes))

        return self._loop(steps, validate if valid is not None else None, resume, on_epoch, on_batch)

    def stream_step_loss(self, item: tuple[EncodedBatch, torch.Tensor, torch.Tensor] | None,
                         fallback: EncodedBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one step of streamed batches: this rank's scores (none if ``item`` is None) gathered
        with those of the other ranks, labels and request ids gathered plainly."""
        if item is None:  # this rank has run out: one row keeps DDP's backward in step, none reaches the loss
            out = self.model(self._with_preference(fallback, weights).to(self.device))[:0]
            labels = torch.zeros((0, len(self.objective_weights)), dtype=torch.float32)
            group = torch.zeros(0, dtype=torch.int64)
        else:
            batch, labels, group = item
            out = self.model(self._with_preference(batch, weights).to(self.device))
        sizes = all_sizes(int(out.shape[0]))
        self._step_rows = sum(sizes)  # the global batch's rows, for the epoch's samples/s
        out = gather_scores(out, sizes)
        labels = gather_tensor(labels, sizes).to(self.device)
        group = gather_tensor(group, sizes).to(self.device)
        return self._loss(out, labels, group, weights)

    def _loop(self, steps: Callable[[int], Iterator[tuple[Callable[[], torch.Tensor], int, int]]],
              validate: Callable[[], float] | None, resume: bool,
              on_epoch: Callable[[dict[str, float]], None] | None,
              on_batch: Callable[[int, int, int], None] | None) -> list[dict[str, float]]:
        cfg = self.config
        if resume:
            self.load_checkpoint()
        while self.epoch < cfg.max_epochs and not self._stopped():
            self.net.train()
            t0 = time.perf_counter()
            total, seen = 0.0, 0
            for done, (step, rows, n_batches) in enumerate(steps(self.epoch), 1):
                loss = step()
                rows = rows if rows >= 0 else self._step_rows
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip)
                self.optimizer.step()
                total += float(loss.detach()) * rows
                seen += rows
                if on_batch is not None and self.dist.main:
                    on_batch(self.epoch + 1, done, max(n_batches, done))
            secs = time.perf_counter() - t0
            self.epoch += 1
            record: dict[str, float] = {"epoch": self.epoch, "train_loss": total / max(seen, 1),
                                        "seconds": secs, "samples_per_s": seen / max(secs, 1e-9)}
            if validate is not None:
                metric = validate()
                record["valid_auc_sum"] = metric
                if metric > self.best_metric + 1e-6:
                    self.best_metric, self.best_epoch = metric, self.epoch
                    self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.history.append(record)
            log.info("epoch %d: %s", self.epoch, record)
            if on_epoch is not None and self.dist.main:
                on_epoch(record)
            self.save_checkpoint()
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        return self.history

    def preference(self, epoch: int, step: int) -> torch.Tensor | None:
        """The objective weights of one step of preference-conditioned training (None when it is off): with
        probability ``preference_vertex_prob`` one objective alone or the equal point, else a draw from
        Dirichlet(``preference_alpha``). Seeded by (seed, epoch, step): the same on every rank and on resume."""
        cfg = self.config
        if cfg.preference_alpha is None:
            return None
        m = len(self.objective_weights)
        rng = np.random.default_rng([cfg.seed, epoch, step, 7])
        if rng.random() < cfg.preference_vertex_prob:
            k = int(rng.integers(m + 1))
            w = np.eye(m)[k] if k < m else np.full(m, 1.0 / m)
        else:
            w = rng.dirichlet(np.full(m, cfg.preference_alpha))
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def _with_preference(self, batch: EncodedBatch, weights: torch.Tensor | None) -> EncodedBatch:
        if weights is None:
            return batch
        return EncodedBatch(batch.scores, batch.categorical, batch.numeric, weights.expand(len(batch), -1))

    def _loss(self, out: torch.Tensor, labels: torch.Tensor, group: torch.Tensor,
              weights: torch.Tensor | None) -> torch.Tensor:
        loss: torch.Tensor = (self.loss(out, labels, group) if weights is None
                              else self.loss(out, labels, group, weights=weights))
        return loss

    def step_loss(self, train: EncodedBatch, labels: torch.Tensor, group: torch.Tensor,
                  rows: np.ndarray, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of one global batch ``rows``; under torchrun this rank scores its slice and the scores of
        all ranks are gathered with their gradients, so the loss is the one of the whole batch
        (harmonrank.distributed explains why the resulting gradient is exact). ``weights``: this step's
        objective weights (preference-conditioned training), fed to the network and the loss."""
        local, sizes = shard(rows, self.dist)
        batch = self._with_preference(train.index(torch.from_numpy(local)), weights)
        out = self.model(batch.to(self.device))
        out = gather_scores(out, sizes)
        idx = torch.from_numpy(rows).to(self.device)
        return self._loss(out, labels[idx], group[idx], weights)

    def predict(self, data: EncodedBatch) -> np.ndarray:
        """Outputs of the network on ``data``; under torchrun each rank scores a slice and all get the whole."""
        local, sizes = shard(np.arange(len(data)), self.dist)
        part = predict_net(self.net, data.index(torch.from_numpy(local)), self.config.eval_batch, self.device)
        return gather_rows(part, sizes)

    def epochs_without_improvement(self) -> int:
        """Epochs since the exponential moving average of the validation metric last rose by ``min_delta``.

        The raw validation AUC-sum moves by about +-0.005 from epoch to epoch on the default benchmark, the
        size of the gaps between rankers; a smoothed metric stops on the trend, not on one noisy epoch. The
        parameters kept are still those of the best raw epoch. Computed from the history, so a resumed run
        decides exactly like the uninterrupted one.
        """
        values = [h["valid_auc_sum"] for h in self.history if "valid_auc_sum" in h]
        if not values:
            return 0
        a = self.config.smoothing
        ema = best = values[0]
        since = 0
        for v in values[1:]:
            ema = a * v + (1 - a) * ema
            if ema > best + self.config.min_delta:
                best, since = ema, 0
            else:
                since += 1
        return since

    def _stopped(self) -> bool:
        return self.epochs_without_improvement() >= self.config.patience
