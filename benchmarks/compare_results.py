"""Compare the per-ranker, per-seed test AUC-sums of two benchmark results.json files (bitwise and in value).

    python benchmarks/compare_results.py OLD/results.json NEW/results.json --out benchmarks/results/X.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Per-ranker test AUC-sum: before vs after")
    args = ap.parse_args()
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    key = {(r["ranker"], r["seed"]): r for r in old["per_seed"]}
    lines = [f"# {args.title}", "", f"`python benchmarks/compare_results.py {args.old} {args.new}`", "",
             "| ranker | seed | before | after | identical bits | difference |", "|---|---:|---:|---:|:---:|---:|"]
    same = 0
    for r in new["per_seed"]:
        o = key.get((r["ranker"], r["seed"]))
        if o is None:
            continue
        eq = o["auc_sum"] == r["auc_sum"]
        same += eq
        lines.append(f"| {r['ranker']} | {r['seed']} | {o['auc_sum']!r} | {r['auc_sum']!r} | {'yes' if eq else 'no'} "
                     f"| {r['auc_sum'] - o['auc_sum']:+.2e} |")
    sweep_old = {s["weight"]: s["auc_sum"] for s in old.get("sweep", [])}
    for s in new.get("sweep", []):
        if s["weight"] in sweep_old:
            eq = sweep_old[s["weight"]] == s["auc_sum"]
            same += eq
            lines.append(f"| sweep weight {s['weight']:g} | first | {sweep_old[s['weight']]!r} | {s['auc_sum']!r} | "
                         f"{'yes' if eq else 'no'} | {s['auc_sum'] - sweep_old[s['weight']]:+.2e} |")
    total = len(lines) - 6
    lines += ["", f"{same} of {total} values identical to the last bit.", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
