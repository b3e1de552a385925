"""Training and scoring throughput: HarmonRank vs the one-step BCE ensemble, same data, same run.

Training: samples/s of one epoch through the real Trainer (batching whole requests, forward, loss,
backward, AdamW step; validation excluded) at equal batch sizes, median of ``--repeats`` epochs, the two
models alternating so machine noise hits both alike. Scoring: candidates/s of a trained model's batch
inference (eval mode, no grad, 65,536 rows per call) on the test slice, including feature encoding.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from harmonrank import SimulatorConfig, read_table, simulate, simulator_config
from harmonrank.rankers import NeuralRanker
from harmonrank.train import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results"
PAIRS = {"harmonrank (rank loss)": ("harmonrank", "rank"), "one_step_bce": ("one_step", "bce")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1024, 4096, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.parquet"
        simulate(path, SimulatorConfig(rows=args.rows, seed=0))
        table = read_table(path, simulator_config())
    train, _, test = table.split_by_time((0.6, 0.2, 0.2))
    rows = []
    for bs in args.batch_sizes:
        trainers = {}
        for label, (net, loss) in PAIRS.items():
            r = NeuralRanker(net=net, loss=loss, train=TrainConfig(batch_size=bs))
            net_m, loss_m = r.build(train)
            trainer = Trainer(net_m, loss_m, r.train, train.config.objective_weights)
            trainers[label] = (trainer, r.encoder_.transform(train))
        samples: dict[str, list[float]] = {k: [] for k in PAIRS}
        for _ in range(args.repeats):
            for label, (trainer, enc) in trainers.items():  # alternate: noise hits both
                trainer.config = replace(trainer.config, max_epochs=trainer.epoch + 1)  # exactly one more epoch
                trainer.fit(enc, train.labels, train.request, None, None)  # no validation pass
                samples[label].append(trainer.history[-1]["samples_per_s"])
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({"batch_size": bs, **{f"{k} samples/s": v for k, v in med.items()},
                     "ratio": med["harmonrank (rank loss)"] / med["one_step_bce"]})
        print(rows[-1], flush=True)
    # scoring throughput of a trained HarmonRank
    ranker = NeuralRanker(net="harmonrank", loss="rank", train=TrainConfig(max_epochs=2)).fit(train)
    ranker.predict(test)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        ranker.predict(test)
        times.append(time.perf_counter() - t0)
    scoring = {"rows": len(test), "candidates_per_s": len(test) / statistics.median(times)}
    one = NeuralRanker(net="one_step", loss="bce", train=TrainConfig(max_epochs=2)).fit(train)
    t1 = []
    for _ in range(5):
        t0 = time.perf_counter()
        one.predict(test)
        t1.append(time.perf_counter() - t0)
    scoring["one_step_candidates_per_s"] = len(test) / statistics.median(t1)
    meta = {"command": "python benchmarks/throughput.py", "train_rows": len(train),
            "machine": f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads, shared"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps({"meta": meta, "training": rows, "scoring": scoring},
                                                        indent=2) + "\n")
    lines = ["# Throughput", "", f"`{meta['command']}` on {meta['machine']}; {len(train):,} training rows "
             "(simulated, 6 objectives, 7 personalised features). Training: samples/s of full epochs through "
             "the Trainer (median of repeats, the two models alternating). Ratio = HarmonRank / one-step BCE.",
             "", "| batch size | HarmonRank samples/s | one-step BCE samples/s | ratio |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch_size']:,} | {r['harmonrank (rank loss)' + ' samples/s']:,.0f} | "
                     f"{r['one_step_bce samples/s']:,.0f} | {r['ratio']:.2f}x |")
    lines += ["", f"Scoring (batch inference of a trained model on {scoring['rows']:,} test rows, incl. feature "
              f"encoding): HarmonRank {scoring['candidates_per_s']:,.0f} candidates/s; one-step "
              f"{scoring['one_step_candidates_per_s']:,.0f} candidates/s.", ""]
    (RESULTS / "throughput.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
