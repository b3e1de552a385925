"""Summary of the label-skew sweep: each ranker's AUC-sum, buy AUC and replayed purchases as buy gets rarer.

    bash benchmarks/label_skew_sweep.sh        # runs the three settings, then this
    python benchmarks/label_skew_sweep.py      # just this: results/label_skew_sweep/summary.{md,json}, skew.png

Reads benchmarks/results/label_skew_sweep/buy_1e{2,3,4}/results.json (whichever exist). Differences are
against one_step_bce (the binary-classification ensemble), with the benchmark's paired request-bootstrap 95%
CIs pooled over the 3 seeds; replayed purchases come from the simulator's ground truth (top 10 exposed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent / "results" / "label_skew_sweep"
SETTINGS = ("1e2", "1e3", "1e4")


def _ci(b: dict[str, Any], pct: bool = False) -> str:
    if pct:
        return f"{b['difference']:+.2%} [{b['low']:+.2%}, {b['high']:+.2%}]"
    return f"{b['difference']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"


def main() -> None:
    global HERE
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=HERE, help="folder holding buy_1e2/ buy_1e3/ buy_1e4/")
    HERE = ap.parse_args().dir
    runs = {s: json.loads((HERE / f"buy_{s}" / "results.json").read_text())
            for s in SETTINGS if (HERE / f"buy_{s}" / "results.json").exists()}
    if not runs:
        raise SystemExit(f"no runs under {HERE}; run bash benchmarks/label_skew_sweep.sh first")
    lines = ["# Label-skew sweep: buy's base rate 1:10^2, 1:10^3, 1:10^4", "",
             "Produced by `bash benchmarks/label_skew_sweep.sh` (each setting: `harmonrank benchmark -c "
             "benchmarks/configs/label_skew_sweep/buy_1eN.toml`, then `python benchmarks/label_skew_sweep.py`). "
             "3M simulated rows per setting, split by time 50/10/40 (train/valid/test); only buy's base rate "
             "differs. Each neural ranker picks its lr on valid from {0.001, 0.003} (first seed), 3 seeds; "
             "the formula is tuned on valid (100 trials). Δ: against one_step_bce, paired bootstrap over test "
             "requests with 95% CIs, 3 seeds pooled. Replayed purchases: expected purchases with each "
             "request's top 10 exposed (1/log2(1 + position)), from the simulator's ground truth.", ""]
    missing = [s for s in SETTINGS if s not in runs]
    if missing:
        lines += [f"Not run yet: {', '.join('1:' + s.replace('1e', '10^') for s in missing)}.", ""]
    lines += ["| buy rate | test rows | test buys | run time |", "|---|---:|---:|---:|"]
    for s, res in runs.items():
        lines.append(f"| 1:{s.replace('1e', '10^')} | {res['split_rows']['test']:,} | "
                     f"{res['test_positives']['buy']:,} | {res['seconds'] / 60:.0f} min |")
    lines += ["", "| buy rate | ranker | AUC-sum (mean ± std) | Δ AUC-sum | buy AUC (mean ± std) | Δ buy AUC | "
              "replayed purchases, gain |", "|---|---|---:|---:|---:|---:|---:|"]
    summary: list[dict[str, Any]] = []
    for s, res in runs.items():
        base = res["config"]["baseline"]
        focus = res.get("focus", {}).get("rankers", {})
        for row in res["summary"]:
            name = row["ranker"]
            boot = res["bootstrap_vs_baseline"].get(name)
            f = focus.get(name, {})
            entry = {"setting": s, "ranker": name, "auc_sum": row["auc_sum"], "auc_sum_std": row["auc_sum_std"],
                     "auc_buy": row["auc_buy"], "auc_buy_std": row["auc_buy_std"],
                     "delta_auc_sum": boot, "delta_auc_buy": f.get("auc"), "replay_buy_gain": f.get("replay_gain")}
            summary.append(entry)
            lines.append(
                f"| 1:{s.replace('1e', '10^')} | {name} | {row['auc_sum']:.4f} ± {row['auc_sum_std']:.4f} | "
                + (_ci(boot) if boot else f"({base})") + f" | {row['auc_buy']:.4f} ± {row['auc_buy_std']:.4f} | "
                + (_ci(f["auc"]) if "auc" in f else "—") + " | "
                + (_ci(f["replay_gain"], pct=True) if "replay_gain" in f else "—") + " |")
    lines += ["", "![metrics vs skew](skew.png)", ""]
    _plot(summary, list(runs))
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1))
    (HERE / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _plot(summary: list[dict[str, Any]], settings: list[str]) -> None:
    x = {s: float(s.replace("1e", "")) for s in settings}
    rankers = [r for r in dict.fromkeys(e["ranker"] for e in summary) if r != "one_step_bce"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = (("delta_auc_sum", "Δ AUC-sum vs one_step_bce", 1.0), ("delta_auc_buy", "Δ buy AUC vs one_step_bce", 1.0),
              ("replay_buy_gain", "replayed purchases vs one_step_bce (%)", 100.0))
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        for k, name in enumerate(rankers):
            pts = [(x[e["setting"]], e[key]) for e in summary if e["ranker"] == name and e.get(key)]
            if not pts:
                continue
            xs = [p[0] + (k - len(rankers) / 2) * 0.04 for p in pts]  # small dodge so the bars do not overlap
            ys = [p[1]["difference"] * scale for p in pts]
            err = [[(p[1]["difference"] - p[1]["low"]) * scale for p in pts],
                   [(p[1]["high"] - p[1]["difference"]) * scale for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(sorted(x.values()), [f"1:10^{int(v)}" for v in sorted(x.values())])
        ax.set_xlabel("buy base rate")
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(HERE / "skew.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
