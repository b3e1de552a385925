"""Data-parallel training: 2 processes on loopback (gloo) against 1 process on the same rows.

The global rank loss gathers every rank's scores with their gradients; with DDP's averaging the gradient
must equal the one-process gradient of the whole batch (the factor-of-world-size trap would show here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from clihelp import free_port
from harmonrank.distributed import DistInfo, shard

N_ROWS = 1001  # odd: the two ranks' slices differ in length (padding and masking are exercised)


def _setup(loss_name: str):  # type: ignore[no-untyped-def]
    """The same net, loss, rows and labels in every process."""
    from harmonrank.features import EncodedBatch
    from harmonrank.models import make_loss
    from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet
    from harmonrank.train import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(N_ROWS, 3, generator=g, dtype=torch.float64) * 0.5
    batch = EncodedBatch(scores, torch.randint(0, 4, (N_ROWS, 2), generator=g), torch.randn(N_ROWS, 2, generator=g))
    labels = (torch.rand(N_ROWS, 3, generator=g) < torch.tensor([0.3, 0.1, 0.05])).float()
    group = torch.arange(N_ROWS) // 7  # requests of 7 rows, contiguous
    torch.manual_seed(1)
    net = HarmonRankNet(EnsembleConfig(objectives=("a", "b", "c"), vocab_sizes=(4, 4), numeric_dim=2))
    net.standardize.set_moments([-1.0, -1.5, -2.0], [1.0, 1.2, 0.8])
    loss = make_loss(loss_name, (1.0, 2.0, 0.5))
    trainer = Trainer(net, loss, TrainConfig(device="cpu", batch_size=N_ROWS // 2), (1.0, 2.0, 0.5))
    return trainer, batch, labels, group


def _gradients(loss_name: str) -> dict[str, torch.Tensor]:
    trainer, batch, labels, group = _setup(loss_name)
    loss = trainer.step_loss(batch, labels, group, np.arange(N_ROWS))
    loss.backward()
    grads = {f"net.{k}": p.grad.detach().clone() for k, p in trainer.net.named_parameters() if p.grad is not None}
    grads.update({f"loss.{k}": p.grad.detach().clone() for k, p in trainer.loss.named_parameters()
                  if p.grad is not None})
    grads["value"] = loss.detach().reshape(1)
    return grads


def _worker(rank: int, world: int, port: int, out: str, loss_name: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from harmonrank.distributed import init_from_env

    info = init_from_env(torch.device("cpu"))
    assert info == DistInfo(rank, world, rank)
    grads = _gradients(loss_name)
    save_file(grads, f"{out}.rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.parametrize("loss_name", ["rank", "bce"])
def test_two_processes_give_the_one_process_gradient_of_the_global_batch(loss_name: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = _gradients(loss_name)
    out = str(tmp_path / "grads")
    mp.spawn(_worker, args=(2, free_port(), out, loss_name), nprocs=2, join=True)
    for rank in (0, 1):
        multi = load_file(f"{out}.rank{rank}.safetensors")
        assert multi.keys() == single.keys()
        for k, v in single.items():
            torch.testing.assert_close(multi[k], v, rtol=0, atol=1e-6, msg=k)
        # and it is not the trap: a local-only loss averaged by DDP would differ by far more than 1e-6
        assert float(multi["value"][0]) == pytest.approx(float(single["value"][0]), abs=1e-6)


def test_shards_cover_every_row_once() -> None:
    rows = np.random.default_rng(0).permutation(1003)
    for size in (1, 2, 3, 8):
        parts = [shard(rows, DistInfo(r, size, r)) for r in range(size)]
        sizes = parts[0][1]
        assert all(p[1] == sizes for p in parts) and sum(sizes) == len(rows) and max(sizes) - min(sizes) <= 1
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), rows)


def _torchrun_train(sim_path: Path, out: Path, epochs: int, *extra: str) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARMONRANK_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                           "--master-port", str(free_port()), "-m", "harmonrank", "train", "-d", str(sim_path),
                           "--ranker", "harmonrank", "--epochs", str(epochs), "--batch-size", "2048", "-o", str(out),
                           *extra], capture_output=True, text=True, timeout=240, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_is_reproducible_resumes_exactly_and_only_rank_0_writes(sim_path: Path, tmp_path: Path) -> None:
    whole = _torchrun_train(sim_path, tmp_path / "whole", 2)
    assert whole.stdout.count("saved to") == 1  # rank 0 alone reports and writes
    assert "2 processes, global batch 4,096 rows" in " ".join(whole.stderr.split())
    assert "Warning" not in whole.stderr, whole.stderr
    _torchrun_train(sim_path, tmp_path / "killed", 1)  # a run stopped after epoch 1 ...
    _torchrun_train(sim_path, tmp_path / "killed", 2, "--resume")  # ... resumed by both ranks to epoch 2
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    for k, v in a.items():
        assert torch.equal(v, b[k]), k  # same seed and world size, and an exact resume: the same model


def test_torchrun_trains_on_streamed_files(tmp_path: Path) -> None:
    """Two ranks, each reading its own row groups of a directory of Parquet files."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from harmonrank import SimulatorConfig, simulate

    simulate(tmp_path / "train" / "a.parquet", SimulatorConfig(rows=8_000, seed=5, chunk_rows=2_000))
    simulate(tmp_path / "b.parquet", SimulatorConfig(rows=8_000, seed=6, chunk_rows=2_000))
    source = pq.ParquetFile(tmp_path / "b.parquet")  # its request ids restart at 0: shift them, row group by group
    with pq.ParquetWriter(tmp_path / "train" / "b.parquet", source.schema_arrow) as w:
        for g in range(source.metadata.num_row_groups):
            t = source.read_row_group(g)
            col = t.schema.get_field_index("request_id")
            w.write_table(t.set_column(col, "request_id", pc.add(t.column(col), 10**9)))
    simulate(tmp_path / "valid.parquet", SimulatorConfig(rows=4_000, seed=7, chunk_rows=1_000))  # 4 row groups
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARMONRANK_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                           "--master-port", str(free_port()), "-m", "harmonrank", "train", "-d",
                           str(tmp_path / "train"), "--valid", str(tmp_path / "valid.parquet"), "--epochs", "1",
                           "--batch-size", "1024", "-r", "auto", "-o", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=240, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in " ".join(proc.stderr.split()) and (tmp_path / "run" / "model.json").exists()
    assert "terminate" not in proc.stderr
    # auto decided on the whole validation data gathered from both ranks: the same
    # decision as one process computing it from the saved candidates on the file read in memory
    import json

    from harmonrank import load_ranker, read_table, simulator_config
    from harmonrank.rankers import choose_two_step, request_keys

    sel = json.loads((tmp_path / "run" / "model.json").read_text())["selection"]
    valid = read_table(tmp_path / "valid.parquet", simulator_config())
    hr, os_ = (load_ranker(tmp_path / "run" / "candidates" / c).predict(valid) for c in ("harmonrank", "one_step_rank"))
    ref = choose_two_step(hr, os_, valid.labels, request_keys(valid.request), weights=valid.config.objective_weights)
    assert (sel["chosen"], sel["valid_rows"], sel["valid_requests"]) == (ref.chosen, ref.valid_rows, ref.valid_requests)
    for k in ("gain", "low", "high"):
        assert sel[k] == pytest.approx(getattr(ref, k), abs=1e-9), k
