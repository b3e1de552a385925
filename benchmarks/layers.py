"""Files and lines per layer of src/harmonrank at two git revisions (the restructure's before/after note).

    python benchmarks/layers.py a391497 HEAD    # writes benchmarks/results/layers.md
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# module (path below src/harmonrank, without .py) -> layer; a folder name maps all its files
LAYERS = {
    "errors": "package (facade, errors)", "__init__": "package (facade, errors)",
    "__main__": "package (facade, errors)",
    "ranking": "ops (soft AUC, metrics)", "metrics": "ops (soft AUC, metrics)",
    "config": "data (config, tables, features, io)", "data": "data (config, tables, features, io)",
    "features": "data (config, tables, features, io)", "io": "data (config, tables, features, io)",
    "summary": "data (config, tables, features, io)",
    "models": "models (networks, losses, formula)",
    "train": "train (Trainer)",
    "estimator": "rankers (estimators, registry, scoring)", "rankers": "rankers (estimators, registry, scoring)",
    "scoring": "rankers (estimators, registry, scoring)",
    "cli": "cli",
    "study": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "simulate": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "replay": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "kuairand": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "upstream": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "benchmark": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
    "report": "study (simulator, replay, KuaiRand, upstream, benchmark, report)",
}


def count(rev: str) -> dict[str, tuple[int, int, int]]:
    """layer -> (files, lines, largest file's lines) of the Python files at ``rev``."""
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "src/harmonrank"], check=True,
                           capture_output=True, text=True).stdout.split()
    out: dict[str, list[int]] = {}
    for f in files:
        if not f.endswith(".py"):
            continue
        key = Path(f).relative_to("src/harmonrank").parts[0].removesuffix(".py")
        layer = LAYERS.get(key, "other")
        n = len(subprocess.run(["git", "show", f"{rev}:{f}"], check=True, capture_output=True,
                               text=True).stdout.splitlines())
        out.setdefault(layer, []).append(n)
    return {k: (len(v), sum(v), max(v)) for k, v in out.items()}


def main() -> None:
    before, after = (sys.argv[1:3] + ["a391497", "HEAD"][len(sys.argv[1:3]):])[:2]
    a, b = count(before), count(after)
    rows = ["| layer | files before | lines before | files after | lines after | largest file after |",
            "|---|---:|---:|---:|---:|---:|"]
    for layer in sorted(set(a) | set(b)):
        fa, la, _ = a.get(layer, (0, 0, 0))
        fb, lb, mb = b.get(layer, (0, 0, 0))
        rows.append(f"| {layer} | {fa} | {la:,} | {fb} | {lb:,} | {mb:,} |")
    tot = [sum(x[i] for x in d.values()) for d in (a, b) for i in (0, 1)]
    rows.append(f"| **total** | {tot[0]} | {tot[1]:,} | {tot[2]} | {tot[3]:,} | |")
    sha = {r: subprocess.run(["git", "rev-parse", "--short", r], check=True, capture_output=True,
                             text=True).stdout.strip() for r in (before, after)}
    text = "\n".join([f"# Lines per layer: {sha[before]} (before the restructure) vs {sha[after]}", "",
                      f"`python benchmarks/layers.py {before} {after}`; Python files under src/harmonrank, "
                      "physical lines.", "", *rows, ""])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layers.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
