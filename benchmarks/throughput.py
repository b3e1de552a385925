"""Training and scoring throughput: HarmonRank vs the one-step BCE ensemble, at 1 and 2 threads, same run.

Training: samples/s of one epoch through the real Trainer (batching whole requests, forward, loss,
backward, AdamW step; validation excluded), median of ``--repeats`` epochs, the models and thread counts
alternating so machine noise hits all alike. Scoring: candidates/s of a trained model's batch inference
(eval mode, no grad, 65,536 rows per call) on the test slice, including feature encoding.

The thread study runs twice: on the machine as it is, and with ``--busy`` extra busy-looping processes
(default 1, the load of a shared machine), each killed when the study ends.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.{json,md}
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

import torch

from harmonrank import SimulatorConfig, read_table, simulate, simulator_config
from harmonrank.rankers import NeuralRanker
from harmonrank.threads import set_threads
from harmonrank.train import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results"
PAIRS = {"harmonrank (rank loss)": ("harmonrank", "rank"), "one_step_bce": ("one_step", "bce")}
THREADS = (1, 2)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def train_study(train, batch_sizes: list[int], repeats: int) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    for bs in batch_sizes:
        trainers = {}
        for label, (net, loss) in PAIRS.items():
            r = NeuralRanker(net=net, loss=loss, train=TrainConfig(batch_size=bs, device="cpu"))
            net_m, loss_m = r.build(train)
            trainer = Trainer(net_m, loss_m, r.train, train.config.objective_weights)
            trainers[label] = (trainer, r.encoder_.transform(train))
        samples: dict[tuple[str, int], list[float]] = {(k, t): [] for k in PAIRS for t in THREADS}
        for _ in range(repeats):
            for t in THREADS:
                set_threads(t)
                for label, (trainer, enc) in trainers.items():  # alternate: noise hits all alike
                    trainer.config = replace(trainer.config, max_epochs=trainer.epoch + 1)  # exactly one more epoch
                    trainer.fit(enc, train.labels, train.request, None, None)  # no validation pass
                    samples[(label, t)].append(trainer.history[-1]["samples_per_s"])
        row: dict = {"batch_size": bs}
        for (label, t), v in samples.items():
            row[f"{label} @{t}t"] = statistics.median(v)
        for label in PAIRS:
            row[f"{label} 2t/1t"] = row[f"{label} @2t"] / row[f"{label} @1t"]
        row["harmonrank/one_step @1t"] = row["harmonrank (rank loss) @1t"] / row["one_step_bce @1t"]
        rows.append(row)
        print(row, flush=True)
    return rows


def score_study(train, test) -> dict:  # type: ignore[no-untyped-def]
    out: dict = {"rows": len(test)}
    for label, (net, loss) in PAIRS.items():
        ranker = NeuralRanker(net=net, loss=loss, train=TrainConfig(max_epochs=2, device="cpu")).fit(train)
        for t in THREADS:
            set_threads(t)
            ranker.predict(test)  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                ranker.predict(test)
                times.append(time.perf_counter() - t0)
            out[f"{label} @{t}t candidates/s"] = len(test) / statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, default=1, help="busy-looping processes in the second condition")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.parquet"
        simulate(path, SimulatorConfig(rows=args.rows, seed=0))
        table = read_table(path, simulator_config())
    train, _, test = table.split_by_time((0.6, 0.2, 0.2))
    conditions = {}
    for cond in ("as is", f"+{args.busy} busy process"):
        burners = []
        if cond != "as is":
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            load_before = _load()
            training = train_study(train, args.batch_sizes, args.repeats)
            scoring = score_study(train, test)
            conditions[cond] = {"load_before": load_before, "load_after": _load(), "training": training,
                                "scoring": scoring}
        finally:
            for b in burners:
                b.kill()
                b.wait()
    meta = {"command": "python benchmarks/throughput.py", "train_rows": len(train),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                       f"torch {torch.__version__}, shared"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps({"meta": meta, "conditions": conditions}, indent=2) + "\n")
    lines = ["# Throughput", "", f"`{meta['command']}` on {meta['machine']}; {len(train):,} training rows "
             "(simulated, 6 objectives, 7 personalised features). Training: samples/s of full epochs through "
             "the Trainer (median of repeats; models and thread counts alternating). `@1t`/`@2t`: "
             "`set_threads(1)`/`set_threads(2)` (torch intra-op, BLAS). Load averages (1, 5, 15 min) are "
             "read before and after each condition.", ""]
    for cond, res in conditions.items():
        lines += [f"## Machine {cond} (load before {res['load_before']}, after {res['load_after']})", "",
                  "| batch size | HarmonRank @1t | HarmonRank @2t | 2t/1t | one-step BCE @1t | one-step BCE @2t "
                  "| 2t/1t | HarmonRank / one-step @1t |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["training"]:
            h, o = "harmonrank (rank loss)", "one_step_bce"
            lines.append(f"| {r['batch_size']:,} | {r[h + ' @1t']:,.0f} | {r[h + ' @2t']:,.0f} | "
                         f"{r[h + ' 2t/1t']:.2f}x | {r[o + ' @1t']:,.0f} | {r[o + ' @2t']:,.0f} | "
                         f"{r[o + ' 2t/1t']:.2f}x | {r['harmonrank/one_step @1t']:.2f}x |")
        s = res["scoring"]
        lines += ["", f"Scoring {s['rows']:,} test rows (candidates/s, incl. feature encoding): " + "; ".join(
            f"{k.replace(' candidates/s', '')} {v:,.0f}" for k, v in s.items() if k != "rows") + ".", ""]
    (RESULTS / "throughput.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
