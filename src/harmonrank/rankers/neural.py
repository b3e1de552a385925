"""Neural rankers: an ensemble network + a loss, trained by :class:`~harmonrank.train.Trainer`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import DatasetConfig
from ..data import Table
from ..errors import ConfigError
from ..features import EncodedBatch, FeatureEncoder, logit_moments
from ..io import atomic_write
from ..models import LOSSES, NETWORKS, make_loss
from ..models.common import LogitStandardizer
from ..train import Device, TrainConfig, Trainer, predict_net, resolve_device
from .base import BatchCallback, EpochCallback, Ranker, labels_of

if TYPE_CHECKING:
    from ..stream import ParquetSource

__all__ = ["NeuralRanker"]

log = logging.getLogger(__name__)


class NeuralRanker(Ranker):
    """A torch ensemble network (``net``, see :data:`harmonrank.models.NETWORKS`) trained with a loss
    (``loss``, see :data:`harmonrank.models.LOSSES`). ``train`` holds the training knobs, including the
    soft-AUC operator of the rank losses (``loss_method``, ``temperature``) and the device.

    Examples
    --------
    >>> ranker = NeuralRanker(net="harmonrank", loss="rank", train=TrainConfig(max_epochs=2))  # doctest: +SKIP
    >>> ranker.fit(train_table, valid=valid_table).predict(test_table)  # doctest: +SKIP
    """

    kind = "neural"
    net_: nn.Module

    def __init__(self, *, net: str = "harmonrank", loss: str = "rank", net_options: dict[str, Any] | None = None,
                 train: TrainConfig | None = None, name: str | None = None,
                 preference_alpha: float | None = None, max_vocab: int = 10_000, min_count: int = 1) -> None:
        if net not in NETWORKS:
            raise ConfigError(f"net must be one of {', '.join(NETWORKS)}. Got {net!r} instead.")
        if loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}. Got {loss!r} instead.")
        self.net = net
        self.loss = loss
        self.net_options = dict(net_options or {})
        self.train = train or TrainConfig()
        if preference_alpha is not None:  # preference-conditioned: w is an input, drawn per batch in training
            self.net_options["preference"] = True
            self.train = replace(self.train, preference_alpha=preference_alpha)
        self.name = name or f"{net}_{loss}"
        if max_vocab < 1 or min_count < 1:
            raise ConfigError(f"max_vocab and min_count must be >= 1. Got {max_vocab} and {min_count} instead.")
        self.max_vocab, self.min_count = max_vocab, min_count  # categorical vocabularies (FeatureEncoder.fit)

    @classmethod
    def from_spec(cls, name: str, train: TrainConfig, options: Mapping[str, Any]) -> Ranker:
        opts = dict(options)
        return cls(net=opts.pop("net"), loss=opts.pop("loss"), net_options=opts.pop("net_options", None),
                   train=train, name=name, **opts)

    def build(self, table: Table) -> tuple[nn.Module, nn.Module]:
        """Fit the feature encoder and the logit statistics on ``table``; create the untrained net and loss."""
        encoder = FeatureEncoder.fit(table, max_vocab=self.max_vocab, min_count=self.min_count)
        return self._create(table.config, encoder, *logit_moments(table.scores))

    def _create(self, config: DatasetConfig, encoder: FeatureEncoder, logit_mean: Sequence[float],
                logit_std: Sequence[float]) -> tuple[nn.Module, nn.Module]:
        """The untrained net (seeded, logit statistics and default preference installed) and loss."""
        self.encoder_ = encoder
        cls, cfg_cls = NETWORKS[self.net]
        try:
            self.net_config_ = cfg_cls(objectives=tuple(config.names), vocab_sizes=encoder.vocab_sizes,
                                       numeric_dim=encoder.numeric_dim, **self.net_options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"net_options for {self.net!r}: {err}") from err
        torch.manual_seed(self.train.seed)
        self.net_ = cls(self.net_config_)
        standardize = self.net_.get_submodule("standardize")
        if not isinstance(standardize, LogitStandardizer):
            raise ConfigError(f"network {self.net!r} must have a LogitStandardizer named 'standardize'")
        standardize.set_moments(logit_mean, logit_std)
        if self.net_options.get("preference"):
            self.net_.set_default_preference(  # type: ignore[operator]
                torch.tensor(config.objective_weights, dtype=torch.float32))
        self.loss_ = make_loss(self.loss, config.objective_weights, method=self.train.loss_method,
                               temperature=self.train.temperature)
        return self.net_, self.loss_

    def _metadata(self, config: DatasetConfig) -> dict[str, Any]:
        """What every checkpoint.json records about the model."""
        return {"ranker": self.name, "net": self.net, "loss": self.loss, "net_config": self.net_config_.to_dict(),
                "dataset_config": config.to_dict(), "encoder": self.encoder_.to_dict()}

    def _fit(self, train: Table, valid: Table | None, *, run_dir: str | Path | None, resume: bool,
             on_epoch: EpochCallback | None, on_batch: BatchCallback | None) -> None:
        net, loss = self.build(train)
        trainer = Trainer(net, loss, self.train, train.config.objective_weights, run_dir=run_dir,
                          metadata=self._metadata(train.config))
        self.history_ = trainer.fit(
            self.encoder_.transform(train), labels_of(train, "fit"), train.request,
            self.encoder_.transform(valid) if valid is not None else None,
            labels_of(valid, "validation") if valid is not None else None, resume=resume, on_epoch=on_epoch,
            on_batch=on_batch,
        )
        self.best_epoch_ = trainer.best_epoch

    def fit_stream(self, train: ParquetSource, valid: ParquetSource, config: DatasetConfig, *,
                   run_dir: str | Path | None = None, resume: bool = False, on_epoch: EpochCallback | None = None,
                   on_batch: BatchCallback | None = None, buffer_rows: int = 262_144,
                   max_vocab: int | None = None, min_count: int | None = None,
                   read_workers: int = 0) -> NeuralRanker:
        """Fit on Parquet data streamed from disk (a file, directory or glob: :mod:`harmonrank.stream`).

        One pass over ``train`` fits the encoder and logit statistics (bounded memory: vocabularies, moments,
        request ids); training then reads row groups through a shuffle buffer of ``buffer_rows`` rows.
        Under torchrun each rank reads its own row groups (with ``read_workers`` threads reading ahead, each
        its share of them). ``valid`` is scored in full each epoch. ``max_vocab``/``min_count`` default to the
        ranker's own.
        """
        from ..distributed import world
        from ..stream import StreamLoader, scan

        info = world()
        if len(train.fragments) < info.size:
            raise ConfigError(f"{train.path} has {len(train.fragments)} row groups for {info.size} processes: "
                              "each process needs at least one (write smaller row groups)")
        stats = scan(train, config, max_vocab=self.max_vocab if max_vocab is None else max_vocab,
                     min_count=self.min_count if min_count is None else min_count)
        self.config_ = config
        net, loss = self._create(config, stats.encoder, stats.logit_mean, stats.logit_std)
        metadata = {**self._metadata(config), "stream": {"rows": stats.rows, "requests": stats.requests}}
        trainer = Trainer(net, loss, self.train, config.objective_weights, run_dir=run_dir, metadata=metadata)
        loader = StreamLoader(train, config, self.encoder_, self.train.batch_size, self.train.seed, info, buffer_rows,
                              read_workers)
        valid_loader = StreamLoader(valid, config, self.encoder_, self.train.batch_size, self.train.seed, info,
                                    read_workers=read_workers)

        def valid_batches() -> Iterator[tuple[EncodedBatch, np.ndarray]]:
            for t in valid_loader.tables(None):
                yield self.encoder_.transform(t), labels_of(t, "validation")

        per_epoch = -(-stats.rows // (self.train.batch_size * info.size))
        self.history_ = trainer.fit_stream(loader.epoch, valid_batches, batches_per_epoch=per_epoch, resume=resume,
                                           on_epoch=on_epoch, on_batch=on_batch)
        self.best_epoch_ = trainer.best_epoch
        return self

    @property
    def conditioned(self) -> bool:
        """True when the network takes objective weights as an input (docs/preference.md)."""
        return bool(getattr(self.net_config_, "preference", False))

    def preference_vector(self, weights: Mapping[str, float]) -> torch.Tensor:
        """(M,) objective weights on the simplex from ``{"buy": 2, ...}``; objectives not named keep their
        training weights (the dataset config's). Checked: known names, finite, >= 0, not all zero."""
        if not self.conditioned:
            raise ConfigError(f"ranker {self.name!r} is not preference-conditioned: its objective weights are fixed "
                              "at training (train harmonrank_pref to choose them at prediction)")
        names = tuple(self.config_.names)
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ConfigError(f"weights: unknown objective(s) {', '.join(map(repr, unknown))}; "
                              f"the model's objectives are {', '.join(names)}")
        w = np.array([float(weights.get(m, d)) for m, d in zip(names, self.config_.objective_weights, strict=True)])
        bad = [m for m, v in zip(names, w, strict=True) if not np.isfinite(v) or v < 0]
        if bad:
            raise ConfigError(f"weights: {', '.join(bad)} must be finite and >= 0")
        if w.sum() <= 0:
            raise ConfigError("weights: at least one objective weight must be > 0")
        return torch.as_tensor(w / w.sum(), dtype=torch.float32)

    def predict(self, table: Table, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """One ensemble score per row, shape (n,). ``weights`` (preference-conditioned rankers only): the
        objective weights to rank for, e.g. ``{"buy": 2, "comment": 1}``; others keep their training weights."""
        self.check_table(table)
        return self._predict(table, None if weights is None else self.preference_vector(weights))

    def _predict(self, table: Table, weights: torch.Tensor | None = None) -> np.ndarray:
        enc = self.encoder_.transform(table)
        if weights is not None:
            enc = EncodedBatch(enc.scores, enc.categorical, enc.numeric, weights.expand(len(enc), -1))
        device = resolve_device(self.train.device)
        return predict_net(self.net_.to(device), enc, self.train.eval_batch, device)

    def attention(self, table: Table) -> np.ndarray | None:
        """Step-1 objective-to-objective attention per row, (n, M, M) averaged over heads (None for MLPs)."""
        self.check_table(table)
        if not hasattr(self.net_, "attention"):
            return None
        device = resolve_device(self.train.device)
        enc = self.encoder_.transform(table).to(device)
        self.net_.to(device).eval()
        attention: Callable[[EncodedBatch], torch.Tensor] = self.net_.attention  # type: ignore[assignment]
        with torch.no_grad():
            attn = attention(enc)
        return np.asarray(attn.cpu().double().numpy())

    def _save(self, d: Path) -> dict[str, Any]:
        with atomic_write(d / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}, str(tmp))
        return {"net": self.net, "loss": self.loss, "net_config": self.net_config_.to_dict(),
                "train_config": asdict(self.train), "encoder": self.encoder_.to_dict(),
                "history": getattr(self, "history_", []), "best_epoch": getattr(self, "best_epoch_", None)}

    @classmethod
    def _load(cls, d: Path, meta: dict[str, Any]) -> NeuralRanker:
        train_cfg = dict(meta["train_config"])
        if meta.get("format", 1) == 1:  # version 1 kept the soft-AUC options beside the train config
            train_cfg.setdefault("loss_method", meta.get("method", "pl"))
            train_cfg.setdefault("temperature", meta.get("temperature"))
        r = cls(net=meta["net"], loss=meta["loss"], train=TrainConfig(**train_cfg), name=meta["ranker"])
        net_cls, cfg_cls = NETWORKS[meta["net"]]
        r.net_config_ = cfg_cls(**meta["net_config"])
        r.net_ = net_cls(r.net_config_)
        state = load_file(str(d / "model.safetensors"))
        if meta.get("format", 1) == 1:  # version 1: the logit statistics lived in the encoder, not the net
            enc = meta["encoder"]
            state["standardize.mean"] = torch.tensor(enc["logit_mean"], dtype=torch.float64)
            state["standardize.std"] = torch.tensor(enc["logit_std"], dtype=torch.float64)
        r.net_.load_state_dict(state)
        r.encoder_ = FeatureEncoder.from_dict(meta["encoder"])
        r.history_ = meta.get("history", [])
        return r

    def with_device(self, device: Device) -> NeuralRanker:
        """Predict on ``device`` from now on (checked when used); returns self."""
        resolve_device(device)
        self.train = replace(self.train, device=device)
        return self
