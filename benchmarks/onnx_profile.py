"""Where the exported HarmonRank graph spends its time: ONNX Runtime's per-operator profile.

    python benchmarks/onnx_profile.py      # writes benchmarks/results/onnx_profile.md

Trains a default HarmonRank net briefly on simulated data, exports it (the folded inference form), and
runs ONNX Runtime's profiler over 50 calls of 4,096 rows at one thread. Reports each operator type's share
of kernel time and the tensor shapes it worked on, so the next optimisation targets what costs.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from harmonrank import SimulatorConfig, TrainConfig, make_ranker, read_table, simulate, simulator_config
from harmonrank.export import export_ranker
from harmonrank.threads import set_threads

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    import onnxruntime as ort

    set_threads(1)
    tmp = Path(tempfile.mkdtemp())
    simulate(tmp / "sim.parquet", SimulatorConfig(rows=60_000, seed=0))
    train, valid, test = read_table(tmp / "sim.parquet", simulator_config()).split_by_time((0.6, 0.2, 0.2))
    ranker = make_ranker("harmonrank", TrainConfig(max_epochs=1, device="cpu", seed=0)).fit(train, valid=valid)
    art = export_ranker(ranker, tmp / "art")
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "profile")
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(art / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    n = 4096
    enc = ranker.encoder_.transform(test.take(np.arange(n)))
    feeds = {"scores": enc.scores.float().numpy(), "categorical": enc.categorical.numpy(),
             "numeric": enc.numeric.numpy()}
    calls = 50
    for _ in range(calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    shapes: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            by_op[op] += e["dur"]
            count[op] += 1
            out = e["args"].get("output_type_shape") or []
            if out:
                shapes[op].add("x".join(str(d) for d in next(iter(out[0].values()))))
    total = sum(by_op.values())
    lines = ["# Where the exported HarmonRank graph spends its time", "",
             f"`python benchmarks/onnx_profile.py` on {platform.machine()}, {os.cpu_count()} cores; ONNX Runtime "
             f"{ort.__version__} profiler, {calls} calls of {n:,} rows at 1 thread, graph optimisations on; kernel "
             f"time {total / calls / 1000:.2f} ms per call = {n * calls / (total / 1e6):,.0f} candidates/s "
             "(profiling adds overhead). Load average after: "
             + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
             "| operator | share of kernel time | nodes | output shapes |", "|---|---:|---:|---|"]
    for op, dur in by_op.most_common():
        lines.append(f"| {op} | {dur / total:.1%} | {count[op] // calls} | {', '.join(sorted(shapes[op])[:3])} |")
    (RESULTS / "onnx_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
