"""Time and peak memory of `harmonrank simulate` at scale (default 10 M rows).

Runs the installed CLI as a child process (as a user would) and reads its peak resident memory from
getrusage(RUSAGE_CHILDREN). Writes benchmarks/results/simulate_scale.{json,md}.

    python benchmarks/simulate_scale.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    exe = shutil.which("harmonrank") or str(Path(sys.executable).parent / "harmonrank")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.parquet"
        cmd = [exe, "simulate", "--out", str(out), "--rows", str(args.rows), "--seed", str(args.seed),
               "--no-summary"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        secs = time.perf_counter() - t0
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        meta = pq.ParquetFile(out).metadata
        size_mib = out.stat().st_size / 2**20
        result = {
            "command": " ".join(["harmonrank", *cmd[1:3], "sim.parquet", *cmd[4:]]),
            "rows": meta.num_rows,
            "row_groups": meta.num_row_groups,
            "columns": meta.num_columns,
            "seconds": round(secs, 1),
            "rows_per_second": round(meta.num_rows / secs),
            "peak_rss_mib": round(peak_mib),
            "file_mib": round(size_mib),
            "machine": f"{platform.machine()}, {platform.python_version()}, 2 cores shared",
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "simulate_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# `harmonrank simulate` at scale", "",
          f"Produced by `python benchmarks/simulate_scale.py --rows {args.rows}`.", "",
          "| metric | value |", "|---|---:|"]
    md += [f"| {k} | {v:,} |" if isinstance(v, int | float) else f"| {k} | {v} |" for k, v in result.items()]
    (RESULTS / "simulate_scale.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
