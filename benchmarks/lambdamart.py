"""LambdaMART set up four ways against the equal-weight product, on the default simulated data, one run.

gain "count" (graded label sum_m w_m y_m) or "auc" (sum_m w_m y_m / (pi_m (1 - pi_m)), the AUC-sum's own
pair weights); groups = requests or random groups spanning requests. Same data split, features and
early stopping as the benchmark; test AUC-sum over 3 seeds (mean ± std).

    python benchmarks/lambdamart.py      # writes benchmarks/results/lambdamart.{md,json}
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonrank import SimulatorConfig, auc_sum, read_table, simulate, simulator_config, weighted_product
from harmonrank.rankers import LambdaMARTRanker
from harmonrank.threads import set_threads

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.parquet"
        simulate(path, SimulatorConfig(rows=args.rows, seed=0))
        table = read_table(path, simulator_config())
    train, valid, test = table.split_by_time((0.6, 0.2, 0.2))
    equal = np.ones(len(test.objectives))
    rows = [{"setup": "equal-weight product (no training)", "test AUC-sum": auc_sum(weighted_product(test.scores,
             equal), test.labels), "std": 0.0, "valid AUC-sum": auc_sum(weighted_product(valid.scores, equal),
             valid.labels), "fit s": 0.0}]
    for gain in ("count", "auc"):
        for grouping in ("request", "random"):
            tests, valids, secs = [], [], []
            for seed in args.seeds:
                t0 = time.perf_counter()
                r = LambdaMARTRanker(gain=gain, grouping=grouping, seed=seed).fit(train, valid=valid)  # type: ignore[arg-type]
                secs.append(time.perf_counter() - t0)
                tests.append(r.score(test))
                valids.append(r.score(valid))
            rows.append({"setup": f"gain={gain}, groups={grouping}", "test AUC-sum": statistics.mean(tests),
                         "std": statistics.pstdev(tests), "valid AUC-sum": statistics.mean(valids),
                         "fit s": statistics.mean(secs)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"command": "python benchmarks/lambdamart.py", "rows": args.rows, "seeds": args.seeds,
            "threads": args.threads, "split": [len(train), len(valid), len(test)]}
    (RESULTS / "lambdamart.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# LambdaMART: label gains and grouping", "",
             f"`{meta['command']}`: default simulated data ({args.rows:,} rows, simulator seed 0), time split "
             f"{len(train):,} / {len(valid):,} / {len(test):,}; seeds {', '.join(map(str, args.seeds))}; "
             f"{args.threads} thread(s). Early stopping on the validation AUC-sum; random groups of 500 or 2,000 "
             "rows, the size chosen on valid.", "",
             "| setup | test AUC-sum (mean) | ± std over seeds | valid AUC-sum | fit s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['setup']} | {r['test AUC-sum']:.4f} | {r['std']:.4f} | {r['valid AUC-sum']:.4f} | "
              f"{r['fit s']:.0f} |" for r in rows]
    (RESULTS / "lambdamart.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
