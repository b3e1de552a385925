"""Where a HarmonRank training step spends its time, against the one-step net; and what torch.compile buys.

    python benchmarks/train_step.py      # writes benchmarks/results/train_step.md

One training step = forward, loss, backward, AdamW step on a synthetic batch (6 objectives, 5 categorical
and 2 numeric features), 1 thread. Samples/s: median of 5 timings of 20 steps each, the variants
alternating. Then torch.profiler's top operators of 10 HarmonRank steps (rank loss, eager), and one
`torch.compile(net, dynamic=True)` run (compile time of the first step, then samples/s).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from harmonrank.features import EncodedBatch
from harmonrank.models import make_loss
from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet
from harmonrank.models.one_step import OneStepConfig, OneStepNet

RESULTS = Path(__file__).parent / "results"
VOCAB = (5, 5, 5, 5, 5)


def _data(b: int) -> tuple[EncodedBatch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = EncodedBatch(torch.rand(b, 6, generator=g, dtype=torch.float64) * 0.5,
                         torch.randint(0, 5, (b, 5), generator=g), torch.randn(b, 4, generator=g))
    return batch, (torch.rand(b, 6, generator=g) < 0.1).float(), torch.arange(b) // 20


def _stepper(net: torch.nn.Module, loss_name: str, b: int, model: torch.nn.Module | None = None):  # type: ignore[no-untyped-def]
    batch, y, group = _data(b)
    loss = make_loss(loss_name, (1.0,) * 6)
    fwd = model if model is not None else net
    opt = torch.optim.AdamW(list(net.parameters()) + list(loss.parameters()), lr=1e-3)

    def step() -> None:
        value = loss(fwd(batch), y, group)
        opt.zero_grad()
        value.backward()
        opt.step()

    return step


def _nets() -> dict[str, tuple[torch.nn.Module, str]]:
    torch.manual_seed(0)
    hr = HarmonRankNet(EnsembleConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB, numeric_dim=4))
    torch.manual_seed(0)
    one = OneStepNet(OneStepConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB, numeric_dim=4))
    return {"HarmonRank, rank loss": (hr, "rank"), "HarmonRank, BCE": (hr, "bce"), "one-step, BCE": (one, "bce"),
            "one-step, rank loss": (one, "rank")}


def main() -> None:
    torch.set_num_threads(1)
    lines = ["# A training step: HarmonRank vs the one-step net", "",
             f"`python benchmarks/train_step.py` on {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, 1 thread; synthetic batch, forward + loss + backward + AdamW step; median of "
             "5 timings of 20 steps, variants alternating. Load average before: "
             + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
             "| batch | " + " | ".join(_nets()) + " | HarmonRank rank / one-step BCE |",
             "|---:|" + "---:|" * (len(_nets()) + 1)]
    for b in (4096, 16384):
        steps = {name: _stepper(net, loss, b) for name, (net, loss) in _nets().items()}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for fn in steps.values():
            fn()
        for _ in range(5):
            for name, fn in steps.items():
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                times[name].append(20 * b / (time.perf_counter() - t0))
        rate = {k: statistics.median(v) for k, v in times.items()}
        ratio = rate["HarmonRank, rank loss"] / rate["one-step, BCE"]
        lines.append(f"| {b:,} | " + " | ".join(f"{v:,.0f}" for v in rate.values()) + f" | {ratio:.2f}x |")
        print(lines[-1], flush=True)
    from torch.profiler import ProfilerActivity, profile

    net, _ = _nets()["HarmonRank, rank loss"]
    step = _stepper(net, "rank", 4096)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines += ["", "torch.profiler, 10 HarmonRank steps (rank loss, batch 4,096), top operators by self CPU time:", "",
              "| operator | share | calls |", "|---|---:|---:|"]
    for e in events[:10]:
        lines.append(f"| `{e.key[:70]}` | {e.self_cpu_time_total / total:.1%} | {e.count} |")
    net, _ = _nets()["HarmonRank, rank loss"]
    compiled = torch.compile(net, dynamic=True)
    step = _stepper(net, "rank", 4096, model=compiled)
    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        step()
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20):
            step()
        rates.append(20 * 4096 / (time.perf_counter() - t0))
    lines += ["", f"`torch.compile(net, dynamic=True)` (inductor, CPU): first step {compile_s:.0f} s (compilation; "
              "inductor's on-disk cache from earlier runs on this machine shortens it), "
              f"then {statistics.median(rates):,.0f} samples/s for HarmonRank with the rank loss at batch 4,096.", ""]
    (RESULTS / "train_step.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
