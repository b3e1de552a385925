"""Scale: streamed training memory at 2M vs 20M rows, and 1 vs 2 processes (torchrun, gloo) on this machine.

    python benchmarks/scale.py      # writes benchmarks/results/scale.{md,json}

1. Memory: simulated data written as files of 2M rows (request ids shifted per file so they stay unique),
   then one epoch of `harmonrank train -d DIR --valid V --epochs 1 --threads 1` (HarmonRank, streamed: the
   scan pass, the epoch, the exact validation) on 1 file (2M rows) and on 10 files (20M rows); peak RSS of
   the training process (ru_maxrss of the child).
2. Processes: one epoch on the 2M-row file with 1 process (batch 4,096) and with `torchrun --nproc-per-node 2`
   (batch 2,048 per process: the same global batch), 1 thread each; samples/s from the run's history.
3. Communication share: under torchrun with 2 processes, the time of one step's collectives (all-gather of
   the scores with their backward, labels and request ids, the row counts, DDP's all-reduce of the
   gradients) measured alone, against the measured 2-process step time.
"""

from __future__ import annotations

import argparse
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
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _peak(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MiB of the largest child) of a command run alone."""
    code = ("import resource, subprocess, sys, time, json; t=time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True); "
            "print(json.dumps([time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True,
                         env=env).stdout
    secs, kib = json.loads(out.strip().splitlines()[-1])
    return float(secs), kib / 1024


def _write_files(folder: Path, files: int, rows: int) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from harmonrank import SimulatorConfig, simulate

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        tmp = folder.parent / f"tmp_{k}.parquet"
        simulate(tmp, SimulatorConfig(rows=rows, seed=100 + k, chunk_rows=250_000))
        src = pq.ParquetFile(tmp)
        with pq.ParquetWriter(folder / f"part_{k:02d}.parquet", src.schema_arrow) as w:
            for g in range(src.metadata.num_row_groups):
                t = src.read_row_group(g)
                col = t.schema.get_field_index("request_id")
                w.write_table(t.set_column(col, "request_id", pc.add(t.column(col), k * 10**9)))
        tmp.unlink()
        print(f"wrote {folder / f'part_{k:02d}.parquet'}", flush=True)


def _history(run: Path) -> dict[str, float]:
    return dict(json.loads((run / "model.json").read_text())["history"][-1])


def comm_probe() -> None:
    """Run under torchrun: time one step's collectives alone (2 processes)."""
    import torch
    import torch.distributed as dist

    from harmonrank.distributed import all_sizes, any_rank, gather_scores, gather_tensor, init_from_env
    from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet

    torch.set_num_threads(1)
    info = init_from_env(torch.device("cpu"))
    net = HarmonRankNet(EnsembleConfig(objectives=tuple("abcdef"), vocab_sizes=(7, 3, 5, 5, 4), numeric_dim=4))
    params = sum(p.numel() for p in net.parameters())
    b = 2048
    grads = torch.zeros(params)
    times = []
    for k in range(60):
        t0 = time.perf_counter()
        any_rank(True)
        sizes = all_sizes(b)
        s = torch.zeros(b, requires_grad=True)
        g = gather_scores(s, sizes)
        gather_tensor(torch.zeros(b, 6), sizes)
        gather_tensor(torch.zeros(b, dtype=torch.int64), sizes)
        g.sum().backward()
        dist.all_reduce(grads)  # what DDP all-reduces per step (in buckets)
        if k >= 10:
            times.append(time.perf_counter() - t0)
    if info.main:
        times.sort()
        print(json.dumps({"comm_ms": 1000 * times[len(times) // 2], "params": params,
                          "bytes_per_step": 4 * (2 * 2 * b + 2 * b * 6 + 2 * 2 * b) + 4 * params}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file-rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--comm-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.comm_probe:
        comm_probe()
        return
    from harmonrank import SimulatorConfig, simulate

    tmp = Path(tempfile.mkdtemp())
    _write_files(tmp / "big", args.files, args.file_rows)
    (tmp / "small").mkdir()
    (tmp / "small" / "part_00.parquet").symlink_to(tmp / "big" / "part_00.parquet")
    simulate(tmp / "valid.parquet", SimulatorConfig(rows=200_000, seed=7, chunk_rows=50_000))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARMONRANK_THREADS": "1"}
    base = ["train", "--ranker", "harmonrank", "--epochs", "1", "--valid", str(tmp / "valid.parquet")]
    memory = []
    for name, folder in (("small", tmp / "small"), ("big", tmp / "big")):
        rows = args.file_rows * (1 if name == "small" else args.files)
        secs, mib = _peak([EXE, *base, "-d", str(folder), "-o", str(tmp / f"run_{name}"), "--threads", "1"], env)
        h = _history(tmp / f"run_{name}")
        memory.append({"rows": rows, "files": 1 if name == "small" else args.files, "seconds": secs,
                       "peak_rss_mib": mib, "samples_per_s": h["samples_per_s"], "valid_auc_sum": h["valid_auc_sum"]})
        print(memory[-1], flush=True)
    procs = []
    secs1, _ = _peak([EXE, *base, "-d", str(tmp / "small"), "-o", str(tmp / "p1"), "--batch-size", "4096"], env)
    procs.append({"processes": 1, "batch_per_process": 4096, "seconds": secs1, **_history(tmp / "p1")})
    cmd2 = [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", "29533", "-m",
            "harmonrank", *base, "-d", str(tmp / "small"), "-o", str(tmp / "p2"), "--batch-size", "2048"]
    secs2, _ = _peak(cmd2, env)
    procs.append({"processes": 2, "batch_per_process": 2048, "seconds": secs2, **_history(tmp / "p2")})
    print(procs, flush=True)
    probe = subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", "29534",
                            __file__, "--comm-probe"], check=True, capture_output=True, text=True, env=env).stdout
    comm = json.loads([line for line in probe.splitlines() if line.startswith("{")][-1])
    step_ms = 1000 * 4096 / procs[1]["samples_per_s"]
    comm["step_ms_2_processes"] = step_ms
    comm["share"] = comm["comm_ms"] / step_ms
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_after": load}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps({"meta": meta, "memory": memory, "processes": procs,
                                                    "communication": comm}, indent=1))
    lines = ["# Scale: streamed training memory, and processes", "",
             f"`python benchmarks/scale.py` on {meta['machine']}, torch threads 1 per process; load average after: "
             f"{load}. HarmonRank (default net), one epoch, data streamed from Parquet files of "
             f"{args.file_rows:,} rows (row groups of 250,000), validation on 200,000 rows computed exactly.", "",
             "| rows | files | peak RSS MiB | seconds (scan + epoch + validation) | samples/s | valid AUC-sum |",
             "|---:|---:|---:|---:|---:|---:|"]
    for m in memory:
        lines.append(f"| {m['rows']:,} | {m['files']} | {m['peak_rss_mib']:,.0f} | {m['seconds']:,.0f} | "
                     f"{m['samples_per_s']:,.0f} | {m['valid_auc_sum']:.4f} |")
    ratio = memory[1]["peak_rss_mib"] / memory[0]["peak_rss_mib"]
    lines += ["", f"Peak RSS at {memory[1]['rows']:,} rows is {ratio:.2f}x the one at {memory[0]['rows']:,} rows.", "",
              "| processes | batch per process | global batch | samples/s | seconds |", "|---:|---:|---:|---:|---:|"]
    for p in procs:
        lines.append(f"| {p['processes']} | {p['batch_per_process']:,} | {p['processes'] * p['batch_per_process']:,} "
                     f"| {p['samples_per_s']:,.0f} | {p['seconds']:,.0f} |")
    lines += ["", f"2 processes run at {procs[1]['samples_per_s'] / procs[0]['samples_per_s']:.2f}x the samples/s of "
              "1 on this 2-core machine (core-bound: the 2 processes share the cores the 1 process used with 1 "
              f"thread plus the idle one). One step's collectives alone take {comm['comm_ms']:.2f} ms "
              f"({comm['bytes_per_step']:,} bytes per rank: scores and their gradients, labels, request ids, "
              f"{comm['params']:,} gradient values), {comm['share']:.0%} of the 2-process step "
              f"({step_ms:.1f} ms).", ""]
    (RESULTS / "scale.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
