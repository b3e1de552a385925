"""The first-stage multi-task model that produces the ``p_*`` scores an ensemble fuses.

A standard MMoE (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts"): feature embeddings -> ``experts`` shared expert MLPs -> one softmax gate
and one tower per objective -> a logit per objective, trained with the sum of per-objective BCE.
``experts=1`` is the shared-bottom model.

Predictions are **cross-fitted**: rows are split into ``folds`` by time (default: consecutive time blocks;
user and video ids are then learnable from the user's other blocks) or by user (every user's rows in one
fold: no id can be learned for a test user); each fold is scored by a model trained on the other folds, so
every impression the ensemble later sees has scores from a model that never saw its labels. Each fold's
model trains through the shared :class:`~harmonrank.train.Trainer` (random row batches, AdamW) and
early-stops on the validation BCE of the last 10% (by time) of its training rows.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..features import EncodedBatch, FeatureEncoder
from ..io import write_parquet
from ..metrics import auc
from ..models.losses import MultiLabelBCELoss
from ..train import TrainConfig, Trainer, predict_net

__all__ = ["MMoE", "UpstreamConfig", "cross_fit", "cross_fit_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamConfig:
    experts: int = 4
    expert_dim: int = 32
    tower_dim: int = 16
    emb_dim: int = 8
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 3
    folds: int = 5
    fold_by: Literal["user", "time"] = "time"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"upstream: folds must be >= 2. Got {self.folds} instead.")
        if self.fold_by not in ("user", "time"):
            raise ConfigError(f"upstream: fold_by must be 'user' or 'time'. Got {self.fold_by!r} instead.")
        if self.experts < 1:
            raise ConfigError(f"upstream: experts must be >= 1. Got {self.experts} instead.")


class MMoE(nn.Module):
    """An :class:`EncodedBatch`'s (B, C) categorical ids + (B, D) numerics -> (B, K) logits (scores unused)."""

    def __init__(self, vocab_sizes: tuple[int, ...], numeric_dim: int, tasks: int, cfg: UpstreamConfig) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(v, cfg.emb_dim) for v in vocab_sizes)
        width = cfg.emb_dim * len(vocab_sizes) + numeric_dim
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(width, cfg.expert_dim), nn.ReLU(), nn.Linear(cfg.expert_dim, cfg.expert_dim),
                          nn.ReLU()) for _ in range(cfg.experts))
        self.gates = nn.Linear(width, tasks * cfg.experts)
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.expert_dim, cfg.tower_dim), nn.ReLU(), nn.Linear(cfg.tower_dim, 1))
            for _ in range(tasks))
        self.tasks, self.n_experts = tasks, cfg.experts

    def forward(self, batch: EncodedBatch) -> Tensor:
        cat, num = batch.categorical, batch.numeric
        x = torch.cat([e(cat[:, k]) for k, e in enumerate(self.embeddings)] + [num], dim=1)
        ex = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, H)
        gate = torch.softmax(self.gates(x).view(-1, self.tasks, self.n_experts), dim=-1)  # (B, K, E)
        mixed = gate @ ex  # (B, K, H)
        return torch.cat([t(mixed[:, k]) for k, t in enumerate(self.towers)], dim=1)


def _folds(user: np.ndarray, time: np.ndarray, cfg: UpstreamConfig) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    if cfg.fold_by == "user":
        users = np.unique(user)
        fold_of = dict(zip(users.tolist(), rng.permutation(len(users)) % cfg.folds, strict=True))
        return np.array([fold_of[u] for u in user.tolist()])
    rank = np.argsort(np.argsort(time, kind="stable"), kind="stable")
    return (rank * cfg.folds // len(time)).astype(int)


def _batch(cats: np.ndarray, nums: np.ndarray) -> EncodedBatch:
    return EncodedBatch(torch.zeros(len(cats), 0), torch.from_numpy(cats), torch.from_numpy(nums))


def _neg_bce(logits: np.ndarray, labels: np.ndarray) -> float:
    """Minus the mean BCE of (n, K) logits: the validation metric (higher is better)."""
    z, y = torch.from_numpy(logits), torch.from_numpy(labels.astype(np.float64))
    return -float(F.binary_cross_entropy_with_logits(z, y))


def _fit_one(cats: np.ndarray, nums: np.ndarray, y: np.ndarray, vocab: tuple[int, ...], cfg: UpstreamConfig,
             time: np.ndarray) -> MMoE:
    torch.manual_seed(cfg.seed)
    order = np.argsort(time, kind="stable")
    cut = int(len(order) * 0.9)
    tr, va = np.sort(order[:cut]), np.sort(order[cut:])
    net = MMoE(vocab, nums.shape[1], y.shape[1], cfg)
    train_cfg = TrainConfig(max_epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=cfg.weight_decay, patience=cfg.patience, seed=cfg.seed, grad_clip=0.0,
                            batch_by="row", device="cpu", smoothing=1.0, min_delta=1e-6)
    trainer = Trainer(net, MultiLabelBCELoss(), train_cfg, objective_weights=(), metric=_neg_bce)
    trainer.fit(_batch(cats[tr], nums[tr]), y[tr], np.arange(len(tr)), _batch(cats[va], nums[va]), y[va])
    return net


def cross_fit(
    features: dict[str, np.ndarray],
    categorical: list[str],
    numeric: list[str],
    labels: np.ndarray,
    objectives: list[str],
    user: np.ndarray,
    time: np.ndarray,
    cfg: UpstreamConfig | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold predicted probabilities (n, K) and a report with each head's AUC (overall and per fold)."""
    cfg = cfg or UpstreamConfig()
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape[1] != len(objectives):
        raise DataError(f"labels must be (n, {len(objectives)}). Got {y.shape} instead.")
    fold = _folds(np.asarray(user), np.asarray(time), cfg)
    out = np.zeros(y.shape, dtype=np.float64)
    per_fold = []
    for k in range(cfg.folds):
        test = fold == k
        train = ~test
        if not test.any() or not train.any():
            raise DataError(f"fold {k} is empty: too few {cfg.fold_by}s for {cfg.folds} folds")
        tr_feat = {c: np.asarray(v)[train] for c, v in features.items()}
        enc = FeatureEncoder.fit_columns(tr_feat, categorical, numeric)
        c_tr, n_tr = enc.encode_columns(tr_feat, int(train.sum()))
        net = _fit_one(c_tr, n_tr, y[train], enc.vocab_sizes, cfg, np.asarray(time)[train])
        te_feat = {c: np.asarray(v)[test] for c, v in features.items()}
        c_te, n_te = enc.encode_columns(te_feat, int(test.sum()))
        out[test] = 1.0 / (1.0 + np.exp(-predict_net(net, _batch(c_te, n_te))))
        per_fold.append({o: auc(out[test, m], y[test, m]) for m, o in enumerate(objectives)})
        log.info("fold %d/%d: %s", k + 1, cfg.folds, per_fold[-1])
    report = {
        "config": asdict(cfg),
        "auc": {o: auc(out[:, m], y[:, m]) for m, o in enumerate(objectives)},
        "positives": {o: int(y[:, m].sum()) for m, o in enumerate(objectives)},
        "per_fold": per_fold,
    }
    return out, report


def cross_fit_file(path: str, out: str, cfg: UpstreamConfig | None = None) -> dict[str, Any]:
    """Cross-fit the upstream model on a labelled file and write it back with a ``p_<name>`` per ``y_<name>``.

    Objectives are all ``y_*`` columns; features all ``u_*``, ``v_*``, ``c_*`` and ``id_*`` columns
    (strings are categorical, numbers numeric). Returns the report (per-head AUC, positives, folds).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .kuairand import feature_columns

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read {path} as Parquet: {err}") from err
    objectives = [c[2:] for c in table.column_names if c.startswith("y_")]
    if not objectives:
        raise DataError(f"{path}: no label columns y_<objective>")
    for need in ("user_id", "time"):
        if need not in table.column_names:
            raise DataError(f"{path}: required column {need!r} missing")
    cat, num = feature_columns(table)
    if not cat and not num:
        raise DataError(f"{path}: no feature columns (u_*, v_*, c_*, id_*)")
    feats = {c: table[c].to_numpy(zero_copy_only=False) for c in cat + num}
    y = np.stack([table[f"y_{o}"].to_numpy() for o in objectives], 1)
    preds, report = cross_fit(feats, cat, num, y, objectives, table["user_id"].to_numpy(),
                              table["time"].to_numpy(), cfg)
    for m, o in enumerate(objectives):
        name = f"p_{o}"
        if name in table.column_names:
            table = table.drop([name])
        table = table.append_column(name, pa.array(np.clip(preds[:, m], 1e-7, 1 - 1e-7)))
    write_parquet(table, out)
    report["features"] = {"categorical": cat, "numeric": num}
    return report
