"""Where a HarmonRank training step spends its time, against the one-step net; what the fused step-1 block
(harmonrank/kernels) and torch.compile buy.

    python benchmarks/train_step.py      # writes benchmarks/results/train_step.md

One training step = forward, loss, backward, AdamW step on a synthetic batch (6 objectives, 5 categorical
and 2 numeric features), 1 thread. Samples/s: median of 5 timings of 20 steps each, the variants
alternating; each net eager and through the Trainer's `compile=True` wrapper (torch.compile, inductor);
HarmonRank with its step-1 block in PyTorch (``HARMONRANK_FUSED_BLOCK=0``) and through the fused kernel
(the default). Then torch.profiler's top operators of 10 HarmonRank steps.
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


def _stepper(net: torch.nn.Module, loss_name: str, b: int, model: torch.nn.Module | None = None,  # type: ignore[no-untyped-def]
             fused: bool = True):
    batch, y, group = _data(b)
    flag = "1" if fused else "0"
    loss = make_loss(loss_name, (1.0,) * 6)
    fwd = model if model is not None else net
    opt = torch.optim.AdamW(list(net.parameters()) + list(loss.parameters()), lr=1e-3)

    def step() -> None:
        os.environ["HARMONRANK_FUSED_BLOCK"] = flag  # read at every forward: the variants alternate
        value = loss(fwd(batch), y, group)
        opt.zero_grad()
        value.backward()
        opt.step()

    return step


PT, PTC = "HarmonRank, PyTorch block", "HarmonRank, PyTorch block, compiled"
FU, FUC = "HarmonRank, fused block", "HarmonRank, fused block, compiled"
ONE, ONEC = "one-step, BCE", "one-step, BCE, compiled"


def _nets() -> dict[str, tuple[torch.nn.Module, str, bool, bool]]:
    """name -> (net, loss, compiled, fused block); every variant gets its own net, initialised alike.
    HarmonRank variants train with the rank loss."""
    out: dict[str, tuple[torch.nn.Module, str, bool, bool]] = {}
    variants = ((PT, "rank", False, False), (PTC, "rank", True, False), (FU, "rank", False, True),
                (FUC, "rank", True, True), (ONE, "bce", False, False), (ONEC, "bce", True, False),
                ("one-step, rank loss", "rank", False, False))
    for name, loss, compiled, fused in variants:
        torch.manual_seed(0)
        if name.startswith("HarmonRank"):
            net: torch.nn.Module = HarmonRankNet(EnsembleConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB,
                                                                numeric_dim=4))
        else:
            net = OneStepNet(OneStepConfig(objectives=tuple("abcdef"), vocab_sizes=VOCAB, numeric_dim=4))
        out[name] = (net, loss, compiled, fused)
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
    from harmonrank import kernels

    if not kernels.available():
        raise SystemExit(f"the fused block is unavailable: {kernels.load_error()}")
    names = list(_nets())
    lines = ["# A training step: HarmonRank vs the one-step net", "",
             f"`python benchmarks/train_step.py` on {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, 1 thread; synthetic batch, forward + loss + backward + AdamW step; median of "
             "5 timings of 20 steps, variants alternating. \"compiled\": the Trainer's `compile=True` "
             "(`torch.compile(net, dynamic=True)`, inductor), timed after its first (compiling) step. "
             "HarmonRank trains with the rank loss; \"PyTorch block\": its step-1 block in PyTorch operators "
             "(`HARMONRANK_FUSED_BLOCK=0`); "
             "\"fused block\": the block through harmonrank/kernels (the default). Load average before: "
             + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".", "",
             "Samples/s:", "",
             "| batch | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    ratio_lines = ["HarmonRank's samples/s over the one-step BCE net's (same run):", "",
                   "| batch | PyTorch block / one-step, both eager | PyTorch block compiled / one-step eager | "
                   "fused / one-step, both eager | fused compiled / one-step eager | fused compiled / one-step "
                   "compiled | fused / PyTorch block, eager | fused compiled / PyTorch block compiled |",
                   "|---:|" + "---:|" * 7]
    compile_s: dict[str, float] = {}
    for b in (4096, 16384):
        steps = {}
        for name, (net, loss, compiled, fused) in _nets().items():
            steps[name] = _stepper(net, loss, b, model=CompiledOrEager(net) if compiled else None, fused=fused)
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
        one = rate[ONE]
        ratios = (rate[PT] / one, rate[PTC] / one, rate[FU] / one, rate[FUC] / one, rate[FUC] / rate[ONEC],
                  rate[FU] / rate[PT], rate[FUC] / rate[PTC])
        lines.append(f"| {b:,} | " + " | ".join(f"{v:,.0f}" for v in rate.values()) + " |")
        ratio_lines.append(f"| {b:,} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
        print(lines[-1], ratio_lines[-1], sep="\n", flush=True)
    lines += ["", *ratio_lines]
    lines += ["", "First (compiling) step at batch 4,096: " + ", ".join(
        f"{k} {v:.0f} s" for k, v in compile_s.items() if _nets()[k][2]) + " (inductor's on-disk cache from "
        "earlier runs on this machine shortens it).", ""]
    nets = _nets()
    for name in (PT, FU, FUC):
        net, loss, compiled, fused = nets[name]
        lines += [f"torch.profiler, 10 steps of {name} (batch 4,096), top operators by self CPU time:", ""]
        lines += [*_top_ops(_stepper(net, loss, 4096, model=CompiledOrEager(net) if compiled else None,
                                     fused=fused), 8), ""]
    (RESULTS / "train_step.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
