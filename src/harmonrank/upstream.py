"""The first-stage multi-task model that produces the ``p_*`` scores an ensemble fuses.

A standard MMoE (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts"): feature embeddings -> ``experts`` shared expert MLPs -> one softmax gate
and one tower per objective -> a logit per objective, trained with the sum of per-objective BCE.
``experts=1`` is the shared-bottom model.

Predictions are **cross-fitted**: rows are split into ``folds`` by time (default: consecutive time blocks;
user and video ids are then learnable from the user's other blocks) or by user (every user's rows in one
fold: no id can be learned for a test user); each fold is scored by a model trained on the other folds, so
every impression the ensemble later sees has scores from a model that never saw its labels. Each fold's
model early-stops on the last 10% (by time) of its training rows.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError, DataError
from .features import FeatureEncoder
from .metrics import auc

__all__ = ["MMoE", "UpstreamConfig", "cross_fit", "score_file"]

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
    """(B, C) categorical ids + (B, D) numerics -> (B, K) logits."""

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

    def forward(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        x = torch.cat([e(categorical[:, k]) for k, e in enumerate(self.embeddings)] + [numeric], dim=1)
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


def _fit_one(cats: np.ndarray, nums: np.ndarray, y: np.ndarray, vocab: tuple[int, ...], cfg: UpstreamConfig,
             time: np.ndarray) -> MMoE:
    torch.manual_seed(cfg.seed)
    order = np.argsort(time, kind="stable")
    cut = int(len(order) * 0.9)
    tr, va = order[:cut], order[cut:]
    net = MMoE(vocab, nums.shape[1], y.shape[1], cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    c_t, n_t, y_t = torch.from_numpy(cats), torch.from_numpy(nums), torch.from_numpy(y.astype(np.float32))
    best, best_state, bad = np.inf, None, 0
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.epochs):
        net.train()
        perm = rng.permutation(tr)
        for a in range(0, len(perm), cfg.batch_size):
            idx = torch.from_numpy(perm[a:a + cfg.batch_size])
            loss: Tensor = F.binary_cross_entropy_with_logits(net(c_t[idx], n_t[idx]), y_t[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        net.eval()
        with torch.no_grad():
            vi = torch.from_numpy(va)
            vloss = float(F.binary_cross_entropy_with_logits(net(c_t[vi], n_t[vi]), y_t[vi]))
        if vloss < best - 1e-6:
            best, bad = vloss, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
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
        net.eval()
        with torch.no_grad():
            out[test] = torch.sigmoid(net(torch.from_numpy(c_te), torch.from_numpy(n_te))).double().numpy()
        per_fold.append({o: auc(out[test, m], y[test, m]) for m, o in enumerate(objectives)})
        log.info("fold %d/%d: %s", k + 1, cfg.folds, per_fold[-1])
    report = {
        "config": asdict(cfg),
        "auc": {o: auc(out[:, m], y[:, m]) for m, o in enumerate(objectives)},
        "positives": {o: int(y[:, m].sum()) for m, o in enumerate(objectives)},
        "per_fold": per_fold,
    }
    return out, report


def score_file(path: str, out: str, cfg: UpstreamConfig | None = None) -> dict[str, Any]:
    """Cross-fit the upstream model on a labelled file and write it back with a ``p_<name>`` per ``y_<name>``.

    Objectives are all ``y_*`` columns; features all ``u_*``, ``v_*``, ``c_*`` and ``id_*`` columns
    (strings are categorical, numbers numeric). Returns the report (per-head AUC, positives, folds).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import write_parquet
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
