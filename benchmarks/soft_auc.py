"""Soft-AUC operators at industrial batch sizes: forward+backward time, peak memory, accuracy, gradient share.

For N in {4,096; 65,536; 262,144; 1,048,576} x M = 6 objectives (positive rates 10%, 5%, 2%, 1%, 0.5%,
0.3%), float32 scores, every operator of harmonrank.ranking at its default temperature, plus
``torchsort.soft_rank`` (when installed) used the same way: one soft rank of the scores shared by the six
objectives, then the rank-sum AUC, with torchsort's regularization scaled by our rule (2.5 * std / N) and,
to show the trap, at its default strength 1.0. O(N^2)-memory or O(|P| N)-time operators run only up to the
N where they fit in a few seconds.

Each (operator, N) runs in a fresh child process: peak memory is the child's peak RSS during the first
forward+backward minus its RSS just before; time is the median of repeated forward+backward calls.

    python benchmarks/soft_auc.py            # writes benchmarks/results/soft_auc.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
SIZES = (4_096, 65_536, 262_144, 1_048_576)
RATES = (0.10, 0.05, 0.02, 0.01, 0.005, 0.003)
OPERATORS = {  # name -> largest N it runs at
    "pl": SIZES[-1],
    "projection": SIZES[-1],
    "torchsort": SIZES[-1],
    "torchsort (strength 1.0)": SIZES[-1],
    "logistic": 65_536,
    "softsort": 4_096,
}


def make_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ~ N(0, 1); labels ~ Bernoulli(sigmoid(1.5 s + b_m)) with b_m hitting each positive rate."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    cols = []
    for rate in RATES:
        lo, hi = -30.0, 30.0
        for _ in range(60):
            b = 0.5 * (lo + hi)
            lo, hi = (b, hi) if torch.sigmoid(1.5 * s + b).mean() < rate else (lo, b)
        cols.append((torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(1.5 * s + b)).long())
    return s.float(), torch.stack(cols, 1)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def operator_fn(name: str):  # type: ignore[no-untyped-def]
    from harmonrank.ranking import soft_auc

    if name.startswith("torchsort"):
        import torchsort

        def rank_sum(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            n = s.shape[0]
            strength = 1.0 if "1.0" in name else float(2.5 * s.detach().std() / n)
            r = torchsort.soft_rank(s[None], regularization_strength=strength)[0]
            yf = y.to(s.dtype)
            p = yf.sum(0)
            return (yf.T @ r - p * (p + 1) / 2) / (p * (n - p))

        return rank_sum
    return lambda s, y: soft_auc(s, y, method=name)


def run_case(name: str, n: int) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    s, y = make_batch(n)
    fn = operator_fn(name)
    from harmonrank.metrics import auc

    exact = np.array([auc(s.numpy(), y[:, m].numpy()) for m in range(y.shape[1])])
    ws, wy = make_batch(256, seed=1)  # warm-up on a tiny batch: imports and lazy initialisation
    fn(ws.requires_grad_(True), wy).sum().backward()
    before = _rss_mib()
    x = s.clone().requires_grad_(True)
    t0 = time.perf_counter()
    val = fn(x, y)
    val.sum().backward()
    first = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert x.grad is not None
    err = float(np.abs(val.detach().double().numpy() - exact).max())
    share = float((x.grad != 0).float().mean())
    repeats = 7 if n <= 65_536 else 5
    times = []
    for _ in range(repeats if first < 3 else 1):
        x = s.clone().requires_grad_(True)
        t0 = time.perf_counter()
        fn(x, y).sum().backward()
        times.append(time.perf_counter() - t0)
    return {"operator": name, "n": n, "ms": 1000 * statistics.median(times), "peak_mib": max(peak, 0.0),
            "max_abs_err": err, "grad_share": share, "repeats": len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=2, metavar=("OPERATOR", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return
    try:
        import torchsort  # noqa: F401

        have_torchsort = True
    except ImportError:
        have_torchsort = False
    rows = []
    for n in args.sizes:
        for name, limit in OPERATORS.items():
            if n > limit or (name.startswith("torchsort") and not have_torchsort):
                continue
            out = subprocess.run([sys.executable, __file__, "--case", name, str(n)], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"case {name} N={n} failed")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"N={n:>9,}  {name:<26} {row['ms']:9.1f} ms  peak {row['peak_mib']:8.1f} MiB  "
                  f"|soft-exact| {row['max_abs_err']:.5f}  grad share {row['grad_share']:.3f}", flush=True)
    for row in rows:
        ref = [r for r in rows if r["n"] == row["n"] and r["operator"] == "torchsort"]
        row["time_vs_torchsort"] = row["ms"] / ref[0]["ms"] if ref else None
    from harmonrank.ranking import DEFAULT_TEMPERATURE

    meta = {
        "command": "python benchmarks/soft_auc.py",
        "machine": f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, shared and noisy",
        "torchsort": have_torchsort,
        "default_temperature": DEFAULT_TEMPERATURE,
        "objectives": 6,
        "positive_rates": list(RATES),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soft_auc.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Soft-AUC operators: time, memory, accuracy",
        "",
        f"`{meta['command']}` on {meta['machine']}. M = 6 objectives (positive rates 10% to 0.3%), float32,",
        "forward + backward of the six soft AUCs of one score, median of repeats, each case in its own",
        "process. Peak = peak RSS during the first call minus RSS before it. Default relative temperatures: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_TEMPERATURE.items()) + ".",
        "torchsort rows: `torchsort.soft_rank` of the scores, shared by the six objectives, then the rank-sum;",
        "regularization 2.5 std/N (our scale rule) or torchsort's default 1.0.",
        "",
        "| N | operator | fwd+bwd ms | time / torchsort | peak MiB | max abs(soft - exact AUC) | grad non-zero share |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['time_vs_torchsort']:.2f}x" if r["time_vs_torchsort"] else "n/a"
        lines.append(f"| {r['n']:,} | {r['operator']} | {r['ms']:.1f} | {ratio} | {r['peak_mib']:.1f} | "
                     f"{r['max_abs_err']:.5f} | {r['grad_share']:.3f} |")
    (RESULTS / "soft_auc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
