"""The benchmark: every ranker on the same time-split data, several seeds, one report.

``run_benchmark`` fits each ranker on train (early stopping / tuning on valid), scores the test slice, and
writes a results folder: per-objective AUC / GAUC, AUC-sum with mean and spread over seeds, paired bootstrap
CIs of each ranker's AUC-sum difference vs the baseline (the one-step BCE ensemble), the oracle rows and the
replay on simulated data, a trade-off plot, the learned attention beside the label correlations, training
curves, and ``report.md``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_keys, load_config, read_toml, simulator_config
from ..data import Table, read_table
from ..errors import ConfigError, DataError, MissingDependencyError
from ..features import logit
from ..metrics import auc, gauc, oracle_scores, paired_bootstrap_seeds
from ..rankers import RANKERS, NeuralRanker, choose_two_step, default_rankers, make_ranker, tree_matrix, tree_vocab
from ..rankers.auto import CANDIDATES, keeps, request_keys
from ..rankers.base import labels_of
from ..ranking import Method
from ..threads import get_threads
from ..train import Device, TrainConfig
from .simulate import SimulatorConfig, simulate

__all__ = ["BenchmarkConfig", "load_benchmark_config", "observable_oracle", "run_benchmark"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to compare on which data (TOML sections [data], [train], [benchmark]; see docs/benchmark.md)."""

    # data: either simulate (rows > 0) or read `path` with its dataset `config`
    rows: int = 300_000
    sim_seed: int = 0
    rates: dict[str, float] = field(default_factory=dict)
    sim_options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    dataset_config: str | None = None
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    objectives: tuple[str, ...] = ()  # simulated data: the objectives to fuse, in order (default: all simulated)
    # training (shared by every neural ranker)
    max_epochs: int = 10
    batch_size: int = 4096
    lr: float = 3e-3
    lr_grid: tuple[float, ...] = (1e-3, 3e-3)  # each neural ranker picks its lr on valid (first seed)
    patience: int = 3
    weight_decay: float = 1e-4
    smoothing: float = 0.5  # early stopping on an EMA of the validation AUC-sum (1: raw)
    min_delta: float = 1e-4
    loss_method: Method = "pl"  # soft-AUC operator of the rank losses
    temperature: float | None = None  # its relative temperature (None: the operator's default)
    device: Device = "auto"
    compile: bool = False  # torch.compile the neural rankers' training step
    # comparison (default: every registered ranker marked for the benchmark)
    rankers: tuple[str, ...] = field(default_factory=default_rankers)
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline: str = "one_step_bce"
    n_boot: int = 200
    replay_k: int = 10
    formula_trials: int = 100
    sweep_objective: str = "buy"
    sweep_weights: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)
    segment_feature: str | None = "u_activity"
    trade_off: tuple[str, ...] = ("buy", "follow", "comment")
    observable_oracle: bool = True

    def __post_init__(self) -> None:
        unknown = [r for r in self.rankers if r not in RANKERS]
        if unknown:
            raise ConfigError(f"benchmark: unknown ranker(s) {', '.join(unknown)}; known: {', '.join(RANKERS)}")
        if not self.seeds:
            raise ConfigError("benchmark: seeds must name at least one seed")
        if self.n_boot < 1:
            raise ConfigError(f"benchmark: n_boot must be >= 1. Got {self.n_boot} instead.")
        if self.path is None and self.rows < 1000:
            raise ConfigError(f"benchmark: rows must be >= 1000 to simulate. Got {self.rows} instead.")
        self.train_config()  # checks loss_method, temperature, device, epochs ... at construction
        if self.path is None:  # and the simulator's options (rates, sim_options), before any work
            try:
                sim = SimulatorConfig(rows=self.rows, seed=self.sim_seed, rates=dict(self.rates), **self.sim_options)
            except TypeError as err:
                raise ConfigError(f"benchmark: sim_options: {err}") from err
            check_keys(self.objectives, sim.objectives, "benchmark: objectives", what="objective")
        elif self.objectives:
            raise ConfigError("benchmark: objectives picks simulated objectives; with path, list the objectives in "
                              "the dataset config instead")

    def train_config(self, **changes: Any) -> TrainConfig:
        """The TrainConfig every neural ranker of this benchmark starts from (``changes``: seed, lr ...)."""
        base = TrainConfig(max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr,
                           patience=self.patience, weight_decay=self.weight_decay, smoothing=self.smoothing,
                           min_delta=self.min_delta, loss_method=self.loss_method,
                           temperature=self.temperature, device=self.device, compile=self.compile)
        return replace(base, **changes)


def load_benchmark_config(config_path: str | Path | None, /, **overrides: Any) -> BenchmarkConfig:
    """Read a benchmark TOML ([data], [train], [benchmark] tables); keyword overrides win."""
    raw: dict[str, Any] = {}
    if config_path is not None:
        p = Path(config_path)
        doc = read_toml(p, "benchmark config")
        base = p.parent
        for section in ("data", "train", "benchmark"):
            raw.update(doc.pop(section, {}))
        check_keys(doc, ("data", "train", "benchmark"), str(p), what="section")
        if "seed" in raw:
            raw["sim_seed"] = raw.pop("seed")
        for key in ("path", "dataset_config"):
            if raw.get(key) and not Path(raw[key]).is_absolute():
                raw[key] = str((base / raw[key]).resolve())
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = set(BenchmarkConfig.__dataclass_fields__) - {"sim_seed"} | {"seed"}
    check_keys(["seed" if k == "sim_seed" else k for k in raw], known, "benchmark config")
    check_keys(raw.get("sim_options", {}), set(SimulatorConfig.__dataclass_fields__) - {"rows", "seed", "rates"},
               "benchmark config: sim_options")
    for key in ("split", "rankers", "seeds", "sweep_weights", "trade_off", "lr_grid", "objectives"):
        if key in raw:
            raw[key] = tuple(raw[key])
    return BenchmarkConfig(**raw)


def _load_data(cfg: BenchmarkConfig, tmp: Path) -> tuple[Table, dict[str, Any]]:
    if cfg.path is not None:
        dcfg = load_config(cfg.dataset_config)
        return read_table(cfg.path, dcfg), {"path": cfg.path, "dataset_config": dcfg.to_dict()}
    sim = SimulatorConfig(rows=cfg.rows, seed=cfg.sim_seed, rates=dict(cfg.rates), **cfg.sim_options)
    path = tmp / "sim.parquet"
    simulate(path, sim)
    return read_table(path, simulator_config(cfg.objectives or sim.objectives)), {"simulator": sim.to_dict()}


def observable_oracle(train: Table, test: Table) -> np.ndarray:
    """The best AUC-sum ranking reachable from the ensemble's inputs, estimated (simulated data only).

    LightGBM regressors learn logit(true_m) from the same inputs the rankers see (the scores' logits and the
    personalised features) on train; their predictions go into the Bayes-optimal AUC-sum formula. Any
    ensemble's gap to the full oracle below this line is upstream noise no ensemble can remove.
    """
    try:
        import lightgbm as lgb
    except ModuleNotFoundError as err:
        raise MissingDependencyError("the observable oracle needs lightgbm: pip install 'harmonrank[baselines]' "
                                     "(or observable_oracle = false)") from err
    if train.truth is None or test.truth is None or test.labels is None:
        raise DataError("the observable oracle needs true_* columns (simulated data) and test labels")
    vocab = tree_vocab(train)
    xtr, xte = tree_matrix(train, vocab), tree_matrix(test, vocab)  # the inputs every ranker sees
    preds = []
    for m in range(train.truth.shape[1]):
        reg = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.08, num_leaves=63, verbose=-1,
                                n_jobs=get_threads(), random_state=0)
        reg.fit(xtr, logit(train.truth[:, m]))
        preds.append(1.0 / (1.0 + np.exp(-np.asarray(reg.predict(xte), dtype=np.float64))))
    return oracle_scores(np.stack(preds, 1), test.labels, test.config.objective_weights)


def _metrics(table: Table, score: np.ndarray) -> dict[str, float]:
    if table.labels is None:
        raise DataError("benchmark metrics need labels")
    row: dict[str, float] = {}
    total = gtotal = 0.0
    for m, obj in enumerate(table.objectives):
        a = auc(score, table.labels[:, m])
        g = gauc(score, table.labels[:, m], table.user)
        row[f"auc_{obj}"], row[f"gauc_{obj}"] = a, g
        w = table.config.objective_weights[m]
        total += w * (0.0 if np.isnan(a) else a)
        gtotal += w * (0.0 if np.isnan(g) else g)
    row["auc_sum"], row["gauc_sum"] = total, gtotal
    return row


def run_benchmark(
    cfg: BenchmarkConfig,
    out_dir: str | Path,
    *,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole comparison and write ``out_dir`` (results.json, report.md, PNG plots)."""
    from .report import write_benchmark_report

    say = on_event or (lambda msg: log.info(msg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        table, data_info = _load_data(cfg, Path(tmp))
    train, valid, test = table.split_by_time(cfg.split)
    if test.labels is None:
        raise DataError("benchmark data needs labels")
    say(f"data: {len(table):,} rows -> train {len(train):,} / valid {len(valid):,} / test {len(test):,}")
    weights = test.config.objective_weights
    base_train = cfg.train_config()
    scores: dict[str, dict[int, np.ndarray]] = {}
    per_seed: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, float]]] = {}
    attention: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    chosen_lr: dict[str, float] = {}
    valid_scores: dict[str, dict[int, np.ndarray]] = {}
    for seed in cfg.seeds:
        for name in cfg.rankers:
            t0 = time.perf_counter()
            opts: dict[str, Any] = {"n_trials": cfg.formula_trials} if name == "formula" else {}
            ranker = make_ranker(name, replace(base_train, seed=seed), **opts)
            if isinstance(ranker, NeuralRanker) and cfg.lr_grid and name not in chosen_lr:
                # fair tuning: every neural ranker gets the same learning-rate grid, judged on valid
                tried = []
                for lr in cfg.lr_grid:
                    t_lr = time.perf_counter()
                    cand = make_ranker(name, replace(base_train, seed=seed, lr=lr)).fit(train, valid=valid)
                    tried.append((cand.score(valid), lr, cand, time.perf_counter() - t_lr))
                best = max(tried, key=lambda x: x[0])
                chosen_lr[name] = best[1]
                ranker = best[2]
                t0 = time.perf_counter() - best[3]  # fit time of the kept model alone, like the other seeds
                say(f"{name}: lr {best[1]:g} chosen on valid from {', '.join(f'{lr:g}' for lr in cfg.lr_grid)}")
            elif isinstance(ranker, NeuralRanker):
                lr = chosen_lr.get(name, cfg.lr)
                ranker = make_ranker(name, replace(base_train, seed=seed, lr=lr)).fit(train, valid=valid)
            else:
                ranker.fit(train, valid=valid)
            secs = time.perf_counter() - t0
            s = ranker.predict(test)
            scores.setdefault(name, {})[seed] = s
            if name in CANDIDATES:  # for the auto rule below
                valid_scores.setdefault(name, {})[seed] = ranker.predict(valid)
            row = {"ranker": name, "seed": seed, "fit_seconds": secs, **_metrics(test, s),
                   "valid_auc_sum": ranker.score(valid)}
            if isinstance(ranker, NeuralRanker):  # the model kept is the best validation epoch's
                row["best_epoch"], row["epochs"] = ranker.best_epoch_, len(ranker.history_)
            per_seed.append(row)
            say(f"seed {seed} {name:<20} test AUC-sum {row['auc_sum']:.4f}  ({secs:.0f}s)")
            if seed == cfg.seeds[0]:
                fitted[name] = ranker
                if isinstance(ranker, NeuralRanker):
                    histories[name] = ranker.history_
    # aggregate over seeds
    summary = []
    metric_keys = [k for k in per_seed[0] if k.startswith(("auc_", "gauc_"))]
    for name in cfg.rankers:
        rows = [r for r in per_seed if r["ranker"] == name]
        agg: dict[str, Any] = {"ranker": name}
        for k in metric_keys:
            vals = np.array([r[k] for r in rows], dtype=float)
            agg[k] = float(np.nanmean(vals))
            agg[f"{k}_std"] = float(np.nanstd(vals))
        agg["fit_seconds"] = float(np.mean([r["fit_seconds"] for r in rows]))
        agg["deterministic"] = len(rows) > 1 and len({r["auc_sum"] for r in rows}) == 1  # seed changes nothing
        if all("best_epoch" in r for r in rows):
            agg["best_epochs"] = [r["best_epoch"] for r in rows]
            agg["epochs_run"] = [r["epochs"] for r in rows]
        summary.append(agg)
    # paired bootstrap vs the baseline over every seed: requests resampled within each seed, pooled
    seed0 = cfg.seeds[0]

    test_labels = test.labels

    def compare(a: str, b: str) -> dict[str, Any]:
        res = paired_bootstrap_seeds([scores[a][s] for s in cfg.seeds], [scores[b][s] for s in cfg.seeds],
                                     test_labels, test.request, weights=weights, n_boot=cfg.n_boot,
                                     random_state=seed0)
        return asdict(res) | {"excludes_zero": res.excludes_zero, "p_text": res.p_text}

    boot: dict[str, Any] = {}
    if cfg.baseline in scores:
        boot = {name: compare(name, cfg.baseline) for name in cfg.rankers if name != cfg.baseline}
    # HarmonRank against every other ranker, the same way
    versus: dict[str, Any] = {}
    if "harmonrank" in scores:
        versus = {name: compare("harmonrank", name) for name in cfg.rankers if name != "harmonrank"}
    # the sweep objective (default buy) on its own, against the baseline: its AUC and, on simulated data, its
    # replayed outcome, each with a paired request-bootstrap CI over every seed (the label-skew study reads it)
    focus: dict[str, Any] = {}
    if cfg.baseline in scores and cfg.sweep_objective in test.objectives:
        from .replay import replay_gain_bootstrap

        m = test.objectives.index(cfg.sweep_objective)
        for name in cfg.rankers:
            if name == cfg.baseline:
                continue
            a_s, b_s = [scores[name][s] for s in cfg.seeds], [scores[cfg.baseline][s] for s in cfg.seeds]
            res = paired_bootstrap_seeds(a_s, b_s, test_labels[:, [m]], test.request, n_boot=cfg.n_boot,
                                         random_state=seed0)
            focus[name] = {"auc": asdict(res) | {"excludes_zero": res.excludes_zero}}
            if test.truth is not None:
                rg = replay_gain_bootstrap(a_s, b_s, test.truth[:, m], test.request, k=cfg.replay_k,
                                           n_boot=cfg.n_boot, random_state=seed0)
                focus[name]["replay_gain"] = asdict(rg) | {"excludes_zero": rg.excludes_zero}
    # what the `auto` ranker would have kept, per seed: its rule on these very runs (no extra training)
    selection: list[dict[str, Any]] = []
    if all(c in valid_scores for c in CANDIDATES):
        valid_labels, keys = labels_of(valid, "benchmark"), request_keys(valid.request)
        for seed in cfg.seeds:
            sel = choose_two_step(valid_scores["harmonrank"][seed], valid_scores["one_step_rank"][seed], valid_labels,
                                  keys, weights=weights, random_state=seed)
            test_sum = {c: next(r["auc_sum"] for r in per_seed if r["ranker"] == c and r["seed"] == seed)
                        for c in CANDIDATES}
            chosen_ci = keeps("ci", sel.gain, sel.low)  # rule "ci" on the same numbers
            selection.append({"seed": seed, **asdict(sel), "chosen_ci": chosen_ci, "test_auc_sum": test_sum,
                              "auto_test_auc_sum": test_sum[sel.chosen], "auto_ci_test_auc_sum": test_sum[chosen_ci]})
            say(f"seed {seed} auto would keep {sel.chosen} (valid gain {sel.gain:+.4f} [{sel.low:+.4f}, "
                f"{sel.high:+.4f}])")
    # oracle rows and replay (simulated data only)
    oracle: dict[str, Any] = {}
    replay_rows: list[dict[str, Any]] = []
    if test.truth is not None:
        from .replay import replay

        per_obj = {f"auc_{o}": auc(test.truth[:, m], test.labels[:, m]) for m, o in enumerate(test.objectives)}
        oracle["per_objective"] = per_obj | {"auc_sum": float(sum(
            w * np.nan_to_num(a) for w, a in zip(weights, per_obj.values(), strict=True)))}
        oracle["auc_sum_oracle"] = _metrics(test, oracle_scores(test.truth, test.labels, weights))
        if cfg.observable_oracle and train.truth is not None:
            oracle["observable_oracle"] = _metrics(test, observable_oracle(train, test))
        rankings = {name: scores[name][seed0] for name in cfg.rankers}
        rankings["oracle (AUC-sum)"] = oracle_scores(test.truth, test.labels, weights)
        for name, s in rankings.items():
            replay_rows.append({"ranker": name, **replay(s, test.truth, test.request, test.objectives,
                                                         cfg.replay_k)})
        base_row = next((r for r in replay_rows if r["ranker"] == cfg.baseline), None)
        if base_row is not None:
            for r in replay_rows:
                for o in test.objectives:
                    r[f"gain_{o}"] = r[o] / base_row[o] - 1.0 if base_row[o] else float("nan")
    # HarmonRank across a sweep of one objective's weight (trade-off curve), first seed
    sweep = []
    if "harmonrank" in cfg.rankers and cfg.sweep_weights and cfg.sweep_objective in test.objectives:
        for wgt in cfg.sweep_weights:
            tcfg = test.config.with_objective_weights({cfg.sweep_objective: wgt})
            tr_w, va_w = replace(train, config=tcfg), replace(valid, config=tcfg)
            lr = chosen_lr.get("harmonrank", cfg.lr)
            ranker = make_ranker("harmonrank", replace(base_train, seed=seed0, lr=lr)).fit(tr_w, valid=va_w)
            s = ranker.predict(replace(test, config=tcfg))
            sweep.append({"weight": wgt, **_metrics(test, s)})
            say(f"sweep {cfg.sweep_objective} weight {wgt:g}: test AUC-sum {sweep[-1]['auc_sum']:.4f}")
        if 1.0 not in cfg.sweep_weights:  # the main run is the weight-1 point (same first seed)
            main = next(r for r in per_seed if r["ranker"] == "harmonrank" and r["seed"] == seed0)
            sweep.append({"weight": 1.0, **{k: v for k, v in main.items() if k.startswith(("auc_", "gauc_"))}})
        sweep.sort(key=lambda r: r["weight"])
    # what the alignment step learned: attention per user segment, beside the label correlations
    if "harmonrank" in fitted:
        attn = fitted["harmonrank"].attention(test)
        if attn is not None:
            seg = cfg.segment_feature if cfg.segment_feature in test.features else None
            groups = {"all users": np.ones(len(test), bool)}
            if seg:  # the (at most) four largest segments
                vals, counts = np.unique(test.features[seg].astype(str), return_counts=True)
                for v in sorted(vals[np.argsort(-counts, kind="stable")][:4].tolist()):
                    groups[f"{seg}={v}"] = test.features[seg].astype(str) == v
            attention = {k: attn[mask].mean(0).tolist() for k, mask in groups.items() if mask.any()}
    with np.errstate(invalid="ignore", divide="ignore"):
        label_corr = np.nan_to_num(np.corrcoef(test.labels.T.astype(float))).tolist()
    results = {
        "config": asdict(cfg),
        "data": data_info,
        "split_rows": {"train": len(train), "valid": len(valid), "test": len(test)},
        "test_positives": {o: int(test.labels[:, m].sum()) for m, o in enumerate(test.objectives)},
        "objectives": list(test.objectives),
        "weights": list(weights),
        "per_seed": per_seed,
        "summary": summary,
        "bootstrap_vs_baseline": boot,
        "harmonrank_vs": versus,
        "focus": {"objective": cfg.sweep_objective, "vs": cfg.baseline, "rankers": focus},
        "oracle": oracle,
        "replay": replay_rows,
        "sweep": sweep,
        "attention": attention,
        "label_correlation": label_corr,
        "histories": histories,
        "chosen_lr": chosen_lr,
        "selection": selection,
        "seconds": time.perf_counter() - t_start,
    }
    write_benchmark_report(results, out)
    say(f"report: {out / 'report.md'}")
    return results
