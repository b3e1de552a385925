"""Batch scoring throughput: torch eager vs ONNX Runtime, HarmonRank vs the one-step net, same run and rows;
the arithmetic limit from each net's FLOP count; peak memory of `harmonrank predict` at 1M and 10M rows.

    python benchmarks/serving.py        # writes benchmarks/results/serving.{md,json}

Scoring rates: candidates/s of in-memory scoring of the same table (feature encoding included), median of
5 calls, at 1 and 2 threads: torch (`ranker.predict`: the network's inference form; for HarmonRank one fused
C++ kernel pass per tile of candidates), the same with the kernel switched off (HARMONRANK_FUSED_BLOCK=0:
PyTorch operators), and ONNX Runtime over the exported artifact. Arithmetic limit: this machine's float32
matmul rate (GFLOP/s of a 2048^3 torch.mm at 2 threads) divided by the net's FLOPs per candidate (torch's
FlopCounterMode on the trained network). Peak RSS: ru_maxrss of a `harmonrank predict` process (torch and
onnx engines) streaming a 1M-row and a 10M-row Parquet file, read, encode, score and write.
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
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from harmonrank import SimulatorConfig, TrainConfig, make_ranker, read_table, simulate, simulator_config
from harmonrank.data import concat_tables
from harmonrank.export import export_ranker, load_artifact
from harmonrank.threads import set_threads

RESULTS = Path(__file__).parent / "results"
EXE = str(Path(sys.executable).parent / "harmonrank")


def _median_rate(fn, rows: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return rows / statistics.median(times)


def _matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(5):
        torch.mm(a, b)
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def _peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a child process (run alone, so RUSAGE_CHILDREN's max is its own)."""
    code = ("import resource, subprocess, sys, time, json; t=time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(json.dumps([time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True).stdout
    secs, kib = json.loads(out)
    return float(secs), kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-rows", type=int, default=300_000)
    ap.add_argument("--score-rows", type=int, default=1_000_000)
    ap.add_argument("--rss-rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    args = ap.parse_args()
    set_threads(2)
    tmp = Path(tempfile.mkdtemp())
    simulate(tmp / "sim.parquet", SimulatorConfig(rows=args.train_rows, seed=0))
    table = read_table(tmp / "sim.parquet", simulator_config())
    train, valid, test = table.split_by_time((0.6, 0.2, 0.2))
    reps = -(-args.score_rows // len(test))
    big = concat_tables([test] * reps).take(np.arange(args.score_rows))
    gflops = _matmul_gflops()
    rows, arts = [], {}
    for name in ("harmonrank", "one_step_bce"):
        set_threads(2)
        ranker = make_ranker(name, TrainConfig(max_epochs=2, device="cpu")).fit(train, valid=valid)
        arts[name] = export_ranker(ranker, tmp / f"art_{name}")
        enc = ranker.encoder_.transform(big.take(np.arange(4096)))
        os.environ["HARMONRANK_FUSED_BLOCK"] = "0"  # PyTorch operators: the counter does not see into the kernel
        try:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                ranker.net_(enc)
        finally:
            del os.environ["HARMONRANK_FUSED_BLOCK"]
        flops = counter.get_total_flops() / 4096
        row = {"net": name, "flops_per_candidate": flops, "arithmetic_limit": gflops * 1e9 / flops}
        ranker.save(tmp / f"run_{name}")
        for threads in (1, 2):
            set_threads(threads)
            art = load_artifact(arts[name], threads=threads)
            row[f"torch @{threads}t"] = _median_rate(lambda r=ranker: r.predict(big), len(big))
            os.environ["HARMONRANK_FUSED_BLOCK"] = "0"
            try:
                row[f"torch, no kernel @{threads}t"] = _median_rate(lambda r=ranker: r.predict(big), len(big))
            finally:
                del os.environ["HARMONRANK_FUSED_BLOCK"]
            row[f"onnx @{threads}t"] = _median_rate(lambda a=art: a.score(big), len(big))
        set_threads(2)
        t0 = time.perf_counter()
        ranker.encoder_.transform(big)
        row["encode_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)
    rss = []
    for n in args.rss_rows:
        path = tmp / f"score_{n}.parquet"
        simulate(path, replace(SimulatorConfig(rows=n, seed=1)))
        for engine, model in (("torch", tmp / "run_harmonrank"), ("onnx", arts["harmonrank"])):
            secs, mib = _peak_rss_mib([EXE, "predict", "--engine", engine, "-m", str(model), "-d", str(path),
                                       "-o", str(tmp / "out.parquet"), "--threads", "2"])
            rss.append({"engine": engine, "rows": n, "seconds": secs, "peak_rss_mib": mib,
                        "candidates_per_s_end_to_end": n / secs})
            print(rss[-1], flush=True)
        path.unlink()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    meta = {"command": "python benchmarks/serving.py", "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}", "matmul_gflops_2t": gflops, "load_after": load,
            "score_rows": len(big)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps({"meta": meta, "scoring": rows, "peak_rss": rss}, indent=2) + "\n")
    lines = ["# Batch scoring: torch vs ONNX Runtime", "",
             f"`{meta['command']}` on {meta['machine']}; {len(big):,} candidates scored in memory (feature encoding "
             f"included), median of 5 calls; load average after: {load}. Arithmetic limit: {gflops:,.0f} GFLOP/s "
             "(float32 matmul, 2 threads) / FLOPs per candidate.", "",
             "| net | FLOPs / candidate | torch @1t | torch @2t | torch, no kernel @1t | torch, no kernel @2t | "
             "ONNX Runtime @1t | ONNX Runtime @2t | arithmetic limit | torch @2t / ONNX Runtime @2t |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['flops_per_candidate']:,.0f} | {r['torch @1t']:,.0f} | {r['torch @2t']:,.0f} "
                     f"| {r['torch, no kernel @1t']:,.0f} | {r['torch, no kernel @2t']:,.0f} "
                     f"| {r['onnx @1t']:,.0f} | {r['onnx @2t']:,.0f} | {r['arithmetic_limit']:,.0f} "
                     f"| {r['torch @2t'] / r['onnx @2t']:.2f}x |")
    lines += ["", "Candidates per second. Of each call, feature encoding (strings to vocabulary ids, numerics "
              "standardised) took " + ", ".join(f"{r['encode_seconds']:.2f} s ({r['net']})" for r in rows)
              + f" for the {len(big):,} rows.", "",
              "Streaming a Parquet file through `harmonrank predict --engine E --threads 2` (read, encode, score, "
              "write; torch from the run folder, onnx from the artifact):", "",
              "| engine | rows | seconds | candidates/s end to end | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['engine']} | {r['rows']:,} | {r['seconds']:.1f} | {r['candidates_per_s_end_to_end']:,.0f} | "
              f"{r['peak_rss_mib']:,.0f} |" for r in rss]
    (RESULTS / "serving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
