"""Does the faster HarmonRank step change what the default benchmark measures? Before vs after, same run.

    python benchmarks/step_quality.py     # writes benchmarks/results/step_quality.{md,json}

Runs the default benchmark's HarmonRank row (benchmarks/configs/default.toml: 600k simulated rows, lr picked
on valid from the grid, seeds 0, 1, 2; no weight sweep) three times, one after another, each in its own
process: the step-1 block in PyTorch operators (``HARMONRANK_FUSED_BLOCK=0``: the step as it was before the
fused kernel), the fused block (the default), and the fused block with ``[train] compile = true``. Each run's
per-seed test AUC-sum and fit seconds go into one table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "benchmarks" / "configs" / "default.toml"


def run_one(out: Path, compile_: bool) -> None:
    """Run the HarmonRank row with whatever ``harmonrank`` is importable (this is also the subprocess body)."""
    from harmonrank.study.benchmark import load_benchmark_config, run_benchmark
    from harmonrank.threads import set_threads

    set_threads(1)
    overrides = {"rankers": ("harmonrank",), "sweep_weights": ()}
    if compile_:
        overrides["compile"] = True
    cfg = load_benchmark_config(CONFIG, **overrides)
    run_benchmark(cfg, out, on_event=lambda msg: print(msg, flush=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--_child", nargs=2, metavar=("OUT", "COMPILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_one(Path(args._child[0]), args._child[1] == "1")
        return
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    runs = {"PyTorch block, eager": ("0", False), "fused block, eager": ("1", False),
            "fused block, compiled": ("1", True)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        for name, (fused, compile_) in runs.items():
            out = Path(tmp_s) / name.replace(" ", "_").replace(",", "")
            env = {**os.environ, "HARMONRANK_FUSED_BLOCK": fused}
            subprocess.run([sys.executable, __file__, "--_child", str(out), "1" if compile_ else "0"], env=env,
                           check=True)
            results[name] = json.loads((out / "results.json").read_text())
    rows = []
    for name, res in results.items():
        per = [r for r in res["per_seed"] if r["ranker"] == "harmonrank"]
        aucs = [r["auc_sum"] for r in per]
        rows.append({"code": name, "lr": res["chosen_lr"]["harmonrank"], "auc_sum_per_seed": aucs,
                     "auc_sum_mean": statistics.mean(aucs), "auc_sum_std": statistics.pstdev(aucs),
                     "fit_seconds": [r["fit_seconds"] for r in per], "best_epochs": [r.get("best_epoch") for r in per]})
    lines = ["# The fused HarmonRank step and the default benchmark's HarmonRank row", "",
             f"`python benchmarks/step_quality.py` on {platform.machine()}, {os.cpu_count()} cores, 1 thread; "
             f"benchmarks/configs/default.toml, HarmonRank only, no weight sweep; runs one after another. \"PyTorch "
             "block\": `HARMONRANK_FUSED_BLOCK=0`, the step as it was before the fused kernel. Load "
             f"average before: {load_before}; after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
             "| code | lr chosen | test AUC-sum, seeds 0 / 1 / 2 | mean ± std | fit seconds per seed |",
             "|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['code']} | {r['lr']:g} | " + " / ".join(f"{a:.4f}" for a in r["auc_sum_per_seed"])
                     + f" | {r['auc_sum_mean']:.4f} ± {r['auc_sum_std']:.4f} | "
                     + " / ".join(f"{s:.0f}" for s in r["fit_seconds"]) + " |")
    base = rows[0]["auc_sum_mean"]
    lines += ["", "Mean difference to the PyTorch block: " + ", ".join(
        f"{r['code']} {r['auc_sum_mean'] - base:+.4f}" for r in rows[1:]) + " (seed spread with the PyTorch "
        f"block: ± {rows[0]['auc_sum_std']:.4f}).", ""]
    (RESULTS / "step_quality.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / "step_quality.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
