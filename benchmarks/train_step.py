"""Where a HarmonRank training step spends its time, against the one-step net; and what torch.compile buys.

    python benchmarks/train_step.py      # writes benchmarks/results/train_step.md

One training step = forward, loss, backward, AdamW step on a synthetic batch (6 objectives, 5 categorical
and 2 numeric features), 1 thread. Samples/s: median of 5 timings of 20 steps each, the variants
alternating; each net eager and through the Trainer's `compile=True` wrapper (torch.compile, inductor).
Then torch.profiler's top operators of 10 HarmonRank steps, eager and compiled.
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
from harmonrank.train import CompiledOrEager

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


def _nets() -> dict[str, tuple[torch.nn.Module, str, bool]]:
    """name -> (net, loss, compiled); every variant gets its own net, initialised alike."""
    out: dict[str, tuple[torch.nn.Module, str, bool]] = {}
    variants = (("HarmonRank, rank loss", "rank", False), ("HarmonRank, rank loss, compiled", "rank", True),
                ("HarmonRank, BCE", "bce", False), ("one-step, BCE", "bce", False),
                ("one-step, BCE, compiled", "bce", True), ("one-step, rank loss", "rank", False))
    for name, loss, compiled in variants:
        torch.manual_seed(0)
        if name.startswith("HarmonRank"):
            net: torch.nn.Module = HarmonRankNet(EnsembleConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB,
                                                                numeric_dim=4))
        else:
            net = OneStepNet(OneStepConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB, numeric_dim=4))
        out[name] = (net, loss, compiled)
    return out


def _top_ops(step, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | share | calls |", "|---|---:|---:|"]
    for e in events[:n]:
        lines.append(f"| `{e.key[:70]}` | {e.self_cpu_time_total / total:.1%} | {e.count} |")
    return lines


def main() -> None:
    torch.set_num_threads(1)
    names = list(_nets())
    lines = ["# A training step: HarmonRank vs the one-step net", "",
             f"`python benchmarks/train_step.py` on {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, 1 thread; synthetic batch, forward + loss + backward + AdamW step; median of "
             "5 timings of 20 steps, variants alternating. \"compiled\": the Trainer's `compile=True` "
             "(`torch.compile(net, dynamic=True)`, inductor), timed after its first (compiling) step. Load average "
             "before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
             "Samples/s:", "",
             "| batch | " + " | ".join(names) + " | HarmonRank / one-step BCE, both eager | HarmonRank compiled / "
             "one-step BCE eager | both compiled |",
             "|---:|" + "---:|" * (len(names) + 3)]
    compile_s: dict[str, float] = {}
    for b in (4096, 16384):
        steps = {}
        for name, (net, loss, compiled) in _nets().items():
            steps[name] = _stepper(net, loss, b, model=CompiledOrEager(net) if compiled else None)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            compile_s.setdefault(name, time.perf_counter() - t0)
            fn()
        for _ in range(5):
            for name, fn in steps.items():
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                times[name].append(20 * b / (time.perf_counter() - t0))
        rate = {k: statistics.median(v) for k, v in times.items()}
        one = rate["one-step, BCE"]
        ratios = (rate["HarmonRank, rank loss"] / one, rate["HarmonRank, rank loss, compiled"] / one,
                  rate["HarmonRank, rank loss, compiled"] / rate["one-step, BCE, compiled"])
        lines.append(f"| {b:,} | " + " | ".join(f"{v:,.0f}" for v in rate.values()) + " | "
                     + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
        print(lines[-1], flush=True)
    lines += ["", "First (compiling) step at batch 4,096: " + ", ".join(
        f"{k} {v:.0f} s" for k, v in compile_s.items() if _nets()[k][2]) + " (inductor's on-disk cache from "
        "earlier runs on this machine shortens it).", ""]
    nets = _nets()
    for name in ("HarmonRank, rank loss", "HarmonRank, rank loss, compiled"):
        net, loss, compiled = nets[name]
        lines += [f"torch.profiler, 10 steps of {name} (batch 4,096), top operators by self CPU time:", ""]
        lines += [*_top_ops(_stepper(net, loss, 4096, model=CompiledOrEager(net) if compiled else None), 8), ""]
    (RESULTS / "train_step.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
