"""Load on the HTTP ranking service: latency percentiles and throughput at 100 / 500 / 2,000 candidates per
request and 1 / 8 / 32 concurrent connections, plus a saturation run that must shed, not fail.

    python benchmarks/serving_http.py      # writes benchmarks/results/serving_http.{md,json}

A HarmonRank net (default architecture) is trained on simulated data and exported; `harmonrank serve` runs
as a child process on a free loopback port. The client is a lean asyncio HTTP/1.1 keep-alive client in this
process (pre-encoded bodies built from real simulated candidates and users), so it costs the server as
little CPU as possible; it shares the machine's 2 cores with the server, which the report says. Every cell
is bounded: at most --requests requests or --seconds seconds after a warm-up. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harmonrank import SimulatorConfig, TrainConfig, make_ranker, read_table, simulate, simulator_config
from harmonrank.export import export_ranker
from harmonrank.threads import set_threads

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(artifact: Path, threads: int, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "harmonrank", "serve", "-a", str(artifact), "--port", str(port),
                             "--threads", str(threads), "--log-level", "warning", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready in 120 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], concurrency: int, max_requests: int, seconds: float,
               warmup: int = 20) -> dict[str, Any]:
    """Closed-loop load: ``concurrency`` connections, each sending its next request when the last answers."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors = 0
    sent = 0
    stop_at = 0.0

    async def worker(k: int) -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(warmup // concurrency + 1):
                await _one(reader, writer, requests[(k + i) % len(requests)])
            while sent < max_requests and time.perf_counter() < stop_at:
                sent += 1
                req = requests[(k * 7 + sent) % len(requests)]
                t0 = time.perf_counter()
                try:
                    code = await _one(reader, writer, req)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t0)
                codes[code] = codes.get(code, 0) + 1
        finally:
            writer.close()

    stop_at = time.perf_counter() + 3600
    t0 = time.perf_counter()
    stop_at = t0 + seconds + 30  # generous until warm-up is done; reset below
    tasks = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    await asyncio.sleep(0)
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies), "codes": {str(k): v for k, v in sorted(codes.items())},
            "transport_errors": errors, "seconds": wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "requests_per_s": len(latencies) / wall}


def bodies(table: Any, size: int, count: int, rng: random.Random) -> list[bytes]:
    """``count`` HTTP requests of ``size`` real candidates each (rows of one random user's features)."""
    out = []
    n = len(table)
    names = table.objectives
    for _ in range(count):
        rows = rng.sample(range(n), size)
        u = rows[0]
        user = {c: (v[u] if isinstance(v[u], str) else float(v[u])) for c, v in table.features.items()}
        cands = [{"id": f"c{r}", "scores": dict(zip(names, table.scores[r].tolist(), strict=True))} for r in rows]
        body = json.dumps({"user": user, "candidates": cands}).encode()
        out.append(b"POST /v1/rank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-rows", type=int, default=100_000)
    ap.add_argument("--sizes", type=int, nargs="*", default=[100, 500, 2000])
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="server scoring threads")
    ap.add_argument("--engines", nargs="*", default=["torch", "onnx"], choices=["torch", "onnx"],
                    help="server scoring engines, each run over the whole grid")
    ap.add_argument("--requests", type=int, default=3000, help="most requests per cell")
    ap.add_argument("--seconds", type=float, default=6.0, help="most seconds per cell")
    ap.add_argument("--out", type=Path, default=RESULTS / "serving_http")
    args = ap.parse_args()
    set_threads(1)
    tmp = Path(tempfile.mkdtemp())
    simulate(tmp / "sim.parquet", SimulatorConfig(rows=args.train_rows, seed=0))
    table = read_table(tmp / "sim.parquet", simulator_config())
    train, valid, test = table.split_by_time((0.6, 0.2, 0.2))
    ranker = make_ranker("harmonrank", TrainConfig(max_epochs=2, device="cpu", seed=0)).fit(train, valid=valid)
    artifact = export_ranker(ranker, tmp / "artifact")
    rng = random.Random(0)
    reqs = {size: bodies(test, size, 16, rng) for size in args.sizes}
    rows: list[dict[str, Any]] = []
    for engine, threads in [(e, t) for e in args.engines for t in args.threads]:
        proc, port = start_server(artifact, threads, "--engine", engine)
        try:
            for size in args.sizes:
                for conc in args.concurrency:
                    cpu0 = os.times()
                    r = asyncio.run(load(port, reqs[size], conc, args.requests, args.seconds))
                    cpu1 = os.times()
                    r.update(engine=engine, threads=threads, candidates=size, concurrency=conc,
                             candidates_per_s=r["requests_per_s"] * size,
                             client_cpu_share=((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / r["seconds"])
                    rows.append(r)
                    print(f"{engine} threads {threads} size {size:5d} conc {conc:3d}: p50 {r['p50_ms']:.2f} p95 "
                          f"{r['p95_ms']:.2f} p99 {r['p99_ms']:.2f} ms, {r['requests_per_s']:.0f} req/s, "
                          f"codes {r['codes']}, errors {r['transport_errors']}", flush=True)
        finally:
            stop_server(proc)
    # saturation: more connections than the admission limit; the excess must be shed with 503, nothing else
    proc, port = start_server(artifact, 1, "--max-queue", "8", "--engine", args.engines[0])
    try:
        sat = asyncio.run(load(port, reqs[max(args.sizes)], 64, args.requests, args.seconds))
    finally:
        stop_server(proc)
    print("saturation:", sat, flush=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "load_after": os.getloadavg(), "train_rows": args.train_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "saturation": sat}, indent=1))
    lines = [
        "# HTTP ranking service under load",
        "",
        f"`python benchmarks/serving_http.py` on {meta['machine']}; a default HarmonRank net served by "
        "`harmonrank serve --engine E --threads T` (uvicorn, one process; T scoring threads. Engine torch: the "
        "network's inference form, one fused-kernel call per request split over T torch threads. Engine onnx: one "
        "single-threaded ONNX Runtime call per request, a request of >= 512 candidates split over the T threads); "
        "client: asyncio HTTP/1.1 keep-alive in "
        "this benchmark's process on the same 2 cores "
        "(its CPU share is given: it competes with the server). Each cell: at most "
        f"{args.requests:,} requests or {args.seconds:g} s after a warm-up. Load average after: "
        + " ".join(f"{x:.2f}" for x in meta["load_after"]) + ".",
        "",
        "| engine | server threads | candidates | concurrency | requests | non-200 | p50 ms | p95 ms | p99 ms "
        "| requests/s | candidates/s | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bad = r["requests"] - r["codes"].get("200", 0) + r["transport_errors"]
        lines.append(f"| {r['engine']} | {r['threads']} | {r['candidates']:,} | {r['concurrency']} | "
                     f"{r['requests']:,} | {bad} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_s']:,.0f} | "
                     f"{r['candidates_per_s']:,.0f} | {r['client_cpu_share']:.0%} |")
    lines += ["", f"Saturation: {max(args.sizes):,} candidates, 64 connections, server `--max-queue 8 --threads 1 "
              f"--engine {args.engines[0]}`: "
              f"{sat['requests']:,} responses, status codes {sat['codes']}, transport errors "
              f"{sat['transport_errors']}; p50 {sat['p50_ms']:.2f} ms, p99 {sat['p99_ms']:.2f} ms. "
              "Requests over the admission limit are answered 503 with Retry-After at once (shed), the rest "
              "queue and are answered 200.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
