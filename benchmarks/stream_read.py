"""Streamed training: what reading costs, and what `--read-workers` buys, on this machine.

    python benchmarks/stream_read.py      # writes benchmarks/results/stream_read.{md,json}

One epoch of `harmonrank train --ranker harmonrank -d FILE --stream --epochs 1 --threads 1` on a 2M-row
simulated Parquet file (row groups of 250,000; exact validation on 200,000 rows), with `--read-workers`
0 (read, decode and encode in the training process), 1 and 2 (worker processes read ahead), and once more
with 0 workers and the step-1 block in PyTorch operators (`HARMONRANK_FUSED_BLOCK=0`), so the share of the
training step in an epoch shows. Samples/s are the epoch's (the run's history); seconds are the whole
command (scan pass, epoch, validation). Runs one after another, the same file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
EXE = str(Path(sys.executable).parent / "harmonrank")


def main() -> None:
    from harmonrank import SimulatorConfig, simulate

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        simulate(tmp / "train.parquet", SimulatorConfig(rows=2_000_000, seed=100, chunk_rows=250_000))
        simulate(tmp / "valid.parquet", SimulatorConfig(rows=200_000, seed=7, chunk_rows=50_000))
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        runs = [("0 (fused block)", "0", "1"), ("1 (fused block)", "1", "1"), ("2 (fused block)", "2", "1"),
                ("0 (PyTorch block)", "0", "0")]
        rows = []
        for name, workers, fused in runs:
            out = tmp / f"run_{len(rows)}"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HARMONRANK_FUSED_BLOCK": fused}
            t0 = time.perf_counter()
            subprocess.run([EXE, "train", "--ranker", "harmonrank", "-d", str(tmp / "train.parquet"), "--stream",
                            "--epochs", "1", "--threads", "1", "--read-workers", workers,
                            "--valid", str(tmp / "valid.parquet"), "-o", str(out)], check=True, env=env)
            secs = time.perf_counter() - t0
            h = json.loads((out / "model.json").read_text())["history"][-1]
            rows.append({"read_workers": name, "seconds": secs, "samples_per_s": h["samples_per_s"],
                         "epoch_seconds": h["seconds"], "valid_auc_sum": h["valid_auc_sum"]})
            print(rows[-1], flush=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_read.json").write_text(json.dumps({"load_before": load_before, "load_after": load_after,
                                                          "runs": rows}, indent=1))
    base = rows[0]["samples_per_s"]
    lines = ["# Streamed training: reading and `--read-workers`", "",
             f"`python benchmarks/stream_read.py` on {platform.machine()}, {os.cpu_count()} cores, torch threads 1; "
             "HarmonRank, one epoch streamed from a 2,000,000-row Parquet file (row groups of 250,000), exact "
             f"validation on 200,000 rows; runs one after another. Load average before: {load_before}; after: "
             f"{load_after}.", "",
             "| --read-workers | epoch samples/s | vs 0 workers, fused | epoch seconds | command seconds | "
             "valid AUC-sum |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['read_workers']} | {r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f}x | "
                     f"{r['epoch_seconds']:,.1f} | {r['seconds']:,.0f} | {r['valid_auc_sum']:.4f} |")
    lines.append("")
    (RESULTS / "stream_read.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
