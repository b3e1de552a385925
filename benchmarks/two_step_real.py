"""What does the two-step structure learn on the real log that the one-step net does not?

    python benchmarks/two_step_real.py          # -> benchmarks/results/two_step_real/{report.md,results.json,*.png}

KuaiRand-Pure's standard log (../shared/data/kuairand-pure, read in place), prepared exactly as
benchmarks/kuairand_pure.sh does (user-day requests, cross-fitted MMoE scores), fusing six objectives. HarmonRank
and its one-step ablation (one_step_rank: same rank loss, no objective tokens/alignment/fusion) are trained with
5 seeds at the lr each chose in the committed six-objective benchmark, then compared on the test days:

* gain per objective and per user segment (``user_active_degree``), seed means, with a paired bootstrap over
  test requests (seeds pooled) for each segment's AUC-sum;
* the upstream scores' miscalibration per segment (mean predicted p / observed rate) and their ranking
  quality per segment (AUC of p_m for label m);
* the label dependence per segment (correlation of the labels) beside HarmonRank's step-1 attention per segment.

It answers "what ingredient of the real log might the simulator lack", for docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harmonrank import load_config, make_ranker, read_table
from harmonrank.metrics import auc, auc_sum, paired_bootstrap_seeds
from harmonrank.rankers import choose_two_step, request_keys
from harmonrank.rankers.auto import keeps
from harmonrank.threads import set_threads
from harmonrank.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "two_step_real"
SEG = "u_user_active_degree"
RANKERS = ("harmonrank", "one_step_rank")
SEEDS = (0, 1, 2, 3, 4)
LR = {"harmonrank": 0.003, "one_step_rank": 0.003}  # chosen on valid in benchmarks/results/kuairand_pure/six


def prepare(src: Path, work: Path) -> tuple[Path, Path]:
    """The six-objective dataset of benchmarks/kuairand_pure.sh: (scored parquet, dataset config)."""
    hr = [os.environ.get("HARMONRANK", str(ROOT / ".venv" / "bin" / "harmonrank"))]
    subprocess.run([*hr, "data", "kuairand", "--src", str(src), "--log", "standard", "--requests", "user-day",
                    "--out", str(work)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*hr, "upstream", "--data", str(work / "kuairand.parquet"), "--out", str(work / "scored.parquet"),
                    "--folds", "5", "--by", "time"], check=True, stdout=subprocess.DEVNULL)
    text = (work / "kuairand.toml").read_text()
    extra = '\n[[objectives]]\nname = "comment"\n\n[[objectives]]\nname = "follow"\n'
    text = text.replace('name = "profile_enter"\n', 'name = "profile_enter"\n' + extra)
    (work / "kuairand6.toml").write_text(text)
    return work / "scored.parquet", work / "kuairand6.toml"


def _corr(y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.corrcoef(y.T.astype(float)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "kuairand-pure")
    ap.add_argument("--scored", type=Path, default=None, help="reuse a scored parquet (then give --dataset-config)")
    ap.add_argument("--dataset-config", type=Path, default=None)
    ap.add_argument("--render", action="store_true", help="only rewrite report.md and the plot from results.json")
    args = ap.parse_args()
    if args.render:
        res = json.loads((OUT / "results.json").read_text())
        _plot(res)
        _report(res)
        return
    set_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.scored is None:
            scored, dcfg_path = prepare(args.src, Path(tmp))
        else:
            scored, dcfg_path = args.scored, args.dataset_config
        cfg = load_config(dcfg_path)
        table = read_table(scored, cfg)
    train, valid, test = table.split_by_time((0.6, 0.2, 0.2))
    objs = list(test.objectives)
    y = test.labels
    seg = test.features[SEG].astype(str)
    segments = [s for s in sorted(set(seg.tolist())) if (seg == s).sum() >= 500]
    scores: dict[str, list[np.ndarray]] = {r: [] for r in RANKERS}
    valid_scores: dict[str, list[np.ndarray]] = {r: [] for r in RANKERS}
    attention = None
    for name in RANKERS:
        for s in SEEDS:
            tcfg = TrainConfig(max_epochs=20, batch_size=2048, patience=4, weight_decay=1e-3, lr=LR[name], seed=s)
            ranker = make_ranker(name, tcfg).fit(train, valid=valid)
            scores[name].append(ranker.predict(test))
            valid_scores[name].append(ranker.predict(valid))
            if name == "harmonrank" and s == SEEDS[0]:
                attention = ranker.attention(test)
            print(f"{name} seed {s}: test AUC-sum {auc_sum(scores[name][-1], y):.4f}", flush=True)
    res: dict[str, Any] = {"objectives": objs, "test_rows": len(test), "segments": {}, "seconds": 0.0}
    per_obj = {name: {o: float(np.mean([auc(sc, y[:, m]) for sc in scores[name]])) for m, o in enumerate(objs)}
               for name in RANKERS}
    res["per_objective"] = per_obj
    res["overall"] = {name: float(np.mean([auc_sum(sc, y) for sc in scores[name]])) for name in RANKERS}
    # the auto ranker's rule (train's default) on each seed's pair of runs: what it keeps, and its test AUC-sum
    keys, res["auto"] = request_keys(valid.request), []
    for k, s in enumerate(SEEDS):
        sel = choose_two_step(valid_scores["harmonrank"][k], valid_scores["one_step_rank"][k], valid.labels, keys,
                              random_state=s)
        res["auto"].append({"seed": s, "valid_gain": sel.gain, "low": sel.low, "high": sel.high,
                            "test_auc_sum": {n: auc_sum(scores[n][k], y) for n in RANKERS}})
    for s in segments:
        mask = seg == s
        reqs = test.request[mask]
        info: dict[str, Any] = {"rows": int(mask.sum()), "positives": {o: int(y[mask, m].sum())
                                                                        for m, o in enumerate(objs)}}
        for name in RANKERS:
            info[f"auc_{name}"] = {o: float(np.nanmean([auc(sc[mask], y[mask, m]) for sc in scores[name]]))
                                   for m, o in enumerate(objs)}
        boot = paired_bootstrap_seeds([sc[mask] for sc in scores["harmonrank"]],
                                      [sc[mask] for sc in scores["one_step_rank"]], y[mask], reqs, n_boot=300)
        info["gain_auc_sum"] = {"difference": boot.difference, "low": boot.low, "high": boot.high}
        p = test.scores[mask]
        info["calibration"] = {o: float(p[:, m].mean() / y[mask, m].mean()) if y[mask, m].any() else None
                               for m, o in enumerate(objs)}
        info["upstream_auc"] = {o: float(auc(p[:, m], y[mask, m])) for m, o in enumerate(objs)}
        info["label_corr"] = _corr(y[mask]).tolist()
        if attention is not None:
            info["attention"] = attention[mask].mean(0).tolist()
        res["segments"][s] = info
    res["seconds"] = time.perf_counter() - t0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    _plot(res)
    _report(res)


def _plot(res: dict[str, Any]) -> None:
    segs = list(res["segments"])
    objs = res["objectives"]
    fig, axes = plt.subplots(2, len(segs), figsize=(3.4 * len(segs), 6.4))
    for j, s in enumerate(segs):
        info = res["segments"][s]
        for i, (key, title) in enumerate((("attention", "attention"), ("label_corr", "label correlation"))):
            ax = axes[i, j]
            mat = np.asarray(info.get(key, np.zeros((len(objs), len(objs)))))
            if key == "label_corr":  # off-diagonal dependence only (an objective without positives has none)
                mat = np.abs(mat)
                np.fill_diagonal(mat, 0.0)
            ax.imshow(mat, cmap="viridis")
            ax.set_xticks(range(len(objs)), objs, rotation=90, fontsize=7)
            ax.set_yticks(range(len(objs)), objs, fontsize=7)
            ax.set_title(f"{s}\n{title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "attention_vs_labels.png", dpi=100)
    plt.close(fig)


def _report(res: dict[str, Any]) -> None:
    objs = res["objectives"]
    lines = ["# Two-step vs one-step on KuaiRand-Pure: where the difference is", "",
             f"`python benchmarks/two_step_real.py` ({res['seconds'] / 60:.0f} min, 1 thread). HarmonRank vs "
             f"one_step_rank, {len(SEEDS)} seeds each, {res['test_rows']:,} test rows (the last 20% of days); "
             "six objectives; seed means. Segment gain CIs: paired bootstrap over test requests, seeds pooled. "
             "\"—\": the segment has no test positive of that objective.", "",
             "## Per objective (test AUC)", "",
             "| ranker | " + " | ".join(objs) + " | AUC-sum |", "|---|" + "---:|" * (len(objs) + 1)]
    for name in RANKERS:
        lines.append(f"| {name} | " + " | ".join(f"{res['per_objective'][name][o]:.4f}" for o in objs)
                     + f" | {res['overall'][name]:.4f} |")
    lines.append("| gain | " + " | ".join(
        f"{res['per_objective']['harmonrank'][o] - res['per_objective']['one_step_rank'][o]:+.4f}" for o in objs)
        + f" | {res['overall']['harmonrank'] - res['overall']['one_step_rank']:+.4f} |")
    if res.get("auto"):
        lines += ["", "## What `auto` (train's default) keeps, per seed", "",
                  "Rule `gain` (the default): HarmonRank if its validation AUC-sum is higher than one_step_rank's. "
                  "Rule `ci`: only if the paired request-bootstrap 95% interval of that gain is above zero.", "",
                  "| seed | valid gain [95% CI] | kept (gain) | kept (ci) | test AUC-sum HarmonRank | one_step_rank |",
                  "|---:|---|---|---|---:|---:|"]
        for r in res["auto"]:  # each rule's decision from the recorded validation gain and interval
            r["chosen"], r["chosen_ci"] = (keeps(rule, r["valid_gain"], r["low"]) for rule in ("gain", "ci"))
            t = r["test_auc_sum"]
            lines.append(f"| {r['seed']} | {r['valid_gain']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] | "
                         f"{r['chosen']} | {r['chosen_ci']} | {t['harmonrank']:.4f} | {t['one_step_rank']:.4f} |")
        for rule, key in (("gain", "chosen"), ("ci", "chosen_ci")):
            auto = np.mean([r["test_auc_sum"][r[key]] for r in res["auto"]])
            lines.append(f"\nRule `{rule}`: seed-mean test AUC-sum {auto:.4f}, "
                         f"{auto - res['overall']['harmonrank']:+.4f} against always HarmonRank, "
                         f"{auto - res['overall']['one_step_rank']:+.4f} against always one_step_rank.")
    lines += ["", f"## Per user segment ({SEG})", "",
              "| segment | rows | HarmonRank - one-step, AUC-sum [95% CI] | per-objective gain (" + ", ".join(objs)
              + ") |", "|---|---:|---|---|"]
    for s, info in res["segments"].items():
        g = info["gain_auc_sum"]
        per = ", ".join(_fmt(info["auc_harmonrank"][o] - info["auc_one_step_rank"][o], "+.3f") for o in objs)
        lines.append(f"| {s} | {info['rows']:,} | {g['difference']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}] | "
                     f"{per} |")
    lines += ["", "## Upstream scores per segment: calibration (mean p / observed rate) and AUC of p", "",
              "| segment | " + " | ".join(f"{o} cal." for o in objs) + " | " + " | ".join(f"{o} AUC" for o in objs)
              + " |", "|---|" + "---:|" * (2 * len(objs))]
    for s, info in res["segments"].items():
        lines.append(f"| {s} | " + " | ".join(_fmt(info["calibration"][o], ".2f") for o in objs) + " | "
                     + " | ".join(_fmt(info["upstream_auc"][o], ".3f") for o in objs) + " |")
    lines += ["", "## Label dependence per segment (correlation between two objectives' labels)", "",
              "| segment | " + " | ".join(f"{a}~{b}" for a, b in _PAIRS) + " |", "|---|" + "---:|" * len(_PAIRS)]
    for s, info in res["segments"].items():
        c = np.asarray(info["label_corr"])
        lines.append(f"| {s} | " + " | ".join(f"{c[objs.index(a), objs.index(b)]:.3f}" for a, b in _PAIRS
                                               if a in objs and b in objs) + " |")
    lines += ["", "![attention vs label correlation per segment](attention_vs_labels.png)", ""]
    (OUT / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _fmt(v: float | None, spec: str) -> str:
    """A number, or "—" when it is undefined (no positives of that objective in the segment)."""
    return "—" if v is None or v != v else format(v, spec)


_PAIRS = (("click", "long_view"), ("click", "like"), ("like", "comment"), ("like", "follow"), ("comment", "follow"),
          ("profile_enter", "follow"))


if __name__ == "__main__":
    main()
