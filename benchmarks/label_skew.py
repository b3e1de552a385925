"""Label-skew study: the same comparison as buy's base rate falls 10x (the paper's v3 claim).

Reads the two committed benchmark runs and writes benchmarks/results/label_skew_summary.md:
    harmonrank benchmark --config benchmarks/configs/default.toml    --out benchmarks/results/default
    harmonrank benchmark --config benchmarks/configs/label_skew.toml --out benchmarks/results/label_skew
    python benchmarks/label_skew.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    runs = {}
    for name in ("default", "label_skew"):
        runs[name] = json.loads((RESULTS / name / "results.json").read_text())
    lines = ["# Label-skew study: buy's base rate 0.3% vs 0.03%", "",
             "Produced by `python benchmarks/label_skew.py` from "
             "[default](default/report.md) and [label_skew](label_skew/report.md) (same simulator, same "
             "rankers and protocol; only buy's rate differs).", ""]
    for name, res in runs.items():
        rate = res["data"]["simulator"]["rates"]["buy"]
        lines.append(f"- {name}: buy rate {rate:g}, test buy positives {res['test_positives']['buy']:,}")
    lines += ["", "| ranker | AUC-sum (0.3%) | AUC-sum (0.03%) | buy AUC (0.3%) | buy AUC (0.03%) | "
              "Δ AUC-sum vs one_step_bce (0.3%) | Δ AUC-sum vs one_step_bce (0.03%) | replay buy gain (0.3%) | "
              "replay buy gain (0.03%) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    a, b = runs["default"], runs["label_skew"]
    sa = {r["ranker"]: r for r in a["summary"]}
    sb = {r["ranker"]: r for r in b["summary"]}
    ra = {r["ranker"]: r for r in a["replay"]}
    rb = {r["ranker"]: r for r in b["replay"]}

    def delta(res: dict, name: str) -> str:  # type: ignore[type-arg]
        bt = res["bootstrap_vs_baseline"].get(name)
        return f"{bt['difference']:+.4f} [{bt['low']:+.4f}, {bt['high']:+.4f}]" if bt else "—"

    def gain(rep: dict, name: str) -> str:  # type: ignore[type-arg]
        r = rep.get(name, {})
        return f"{r['gain_buy']:+.2%}" if "gain_buy" in r else "—"

    for name in sa:
        if name not in sb:
            continue
        lines.append(f"| {name} | {sa[name]['auc_sum']:.4f} | {sb[name]['auc_sum']:.4f} | {sa[name]['auc_buy']:.4f} | "
                     f"{sb[name]['auc_buy']:.4f} | {delta(a, name)} | {delta(b, name)} | {gain(ra, name)} | "
                     f"{gain(rb, name)} |")
    out = RESULTS / "label_skew_summary.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
