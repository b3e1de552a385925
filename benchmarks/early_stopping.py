"""Early stopping, raw vs smoothed rule: epochs run, best epoch and the spread of test AUC-sum over seeds.

Reads two committed runs of the same data, seeds and code, differing only in the rule:
    harmonrank benchmark --config benchmarks/configs/default.toml            --out benchmarks/results/default
    harmonrank benchmark --config benchmarks/configs/early_stopping_raw.toml --out benchmarks/results/early_stopping_raw
    python benchmarks/early_stopping.py     # writes benchmarks/results/early_stopping.md
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    smooth = json.loads((RESULTS / "default" / "results.json").read_text())
    raw = json.loads((RESULTS / "early_stopping_raw" / "results.json").read_text())
    lines = ["# Early stopping: raw vs smoothed validation AUC-sum", "",
             "`python benchmarks/early_stopping.py`, from [default](default/report.md) (smoothed: EMA weight "
             f"{smooth['config']['smoothing']:g}, min rise {smooth['config']['min_delta']:g}) and "
             "[early_stopping_raw](early_stopping_raw/report.md) (raw metric, any rise of "
             f"{raw['config']['min_delta']:g}); same data, seeds, learning-rate grid and patience "
             f"({smooth['config']['patience']}). Epochs: best epoch / epochs run, per seed.", "",
             "| ranker | raw: AUC-sum mean ± std | raw: best/run | smoothed: AUC-sum mean ± std | smoothed: best/run |",
             "|---|---:|---:|---:|---:|"]
    spreads = {"raw": [], "smoothed": []}
    for name in raw["config"]["rankers"]:
        cells = []
        for label, res in (("raw", raw), ("smoothed", smooth)):
            rows = [r for r in res["per_seed"] if r["ranker"] == name]
            vals = [r["auc_sum"] for r in rows]
            sd = statistics.pstdev(vals)
            spreads[label].append(sd)
            cells += [f"{statistics.mean(vals):.4f} ± {sd:.4f}",
                      " ".join(f"{r.get('best_epoch', '?')}/{r.get('epochs', '?')}" for r in rows)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over rankers of the std over seeds: raw "
              f"{statistics.mean(spreads['raw']):.4f}, smoothed {statistics.mean(spreads['smoothed']):.4f}.", ""]
    (RESULTS / "early_stopping.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
