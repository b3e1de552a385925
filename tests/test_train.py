from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harmonrank.errors import HarmonRankError
from harmonrank.rankers import NeuralRanker
from harmonrank.train import TrainConfig, request_batches


def test_request_batches_cover_rows_once_and_keep_requests_whole() -> None:
    rng = np.random.default_rng(0)
    group = np.repeat(rng.permutation(50), rng.integers(1, 30, 50))
    rng.shuffle(group)
    batches = request_batches(group, 100, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(group)))
    seen: set[int] = set()
    for b in batches:
        groups = set(group[b].tolist())
        assert not groups & seen  # a request never spans two batches
        seen |= groups
        assert len(b) < 100 + 30
    again = request_batches(group, 100, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def _fit(splits, run_dir: Path | None, epochs: int, resume: bool = False) -> NeuralRanker:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    r = NeuralRanker(net="harmonrank", loss="rank",
                     train=TrainConfig(max_epochs=epochs, batch_size=2048, patience=10, seed=7))
    r.fit(train, valid=valid, run_dir=run_dir, resume=resume)
    return r


def test_same_seed_same_model(splits) -> None:  # type: ignore[no-untyped-def]
    a, b = _fit(splits, None, 2), _fit(splits, None, 2)
    for (ka, va), (kb, vb) in zip(a.net_.state_dict().items(), b.net_.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_resume_continues_exactly(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    straight = _fit(splits, tmp_path / "a", 3)
    _fit(splits, tmp_path / "b", 2)  # "killed" after epoch 2
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["epoch"] == 2 and len(meta["history"]) == 2
    assert meta["model"]["dataset_config"]["objectives"][0]["name"] == "click" and meta["model"]["encoder"]["vocab"]
    resumed = _fit(splits, tmp_path / "b", 3, resume=True)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    for h1, h2 in zip(straight.history_, resumed.history_, strict=True):
        assert h1["valid_auc_sum"] == pytest.approx(h2["valid_auc_sum"], abs=1e-9)
    for (k, va), (_, vb) in zip(straight.net_.state_dict().items(), resumed.net_.state_dict().items(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-6, msg=k)
    tensors = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))  # safetensors: no pickle anywhere
    assert any(k.startswith("opt.") for k in tensors) and any(k.startswith("best.") for k in tensors)


def test_bad_train_config() -> None:
    with pytest.raises(HarmonRankError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(HarmonRankError, match="lr"):
        TrainConfig(lr=-1.0)


def test_resume_refuses_what_it_cannot_continue_exactly(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    run = tmp_path / "r"
    NeuralRanker(net="one_step", loss="rank", train=TrainConfig(max_epochs=1, seed=1)).fit(train, valid=valid,
                                                                                          run_dir=run)
    other_seed = NeuralRanker(net="one_step", loss="rank", train=TrainConfig(max_epochs=2, seed=2))
    with pytest.raises(HarmonRankError, match="seed=1"):
        other_seed.fit(train, valid=valid, run_dir=run, resume=True)
    other_net = NeuralRanker(net="harmonrank", loss="rank", train=TrainConfig(max_epochs=2, seed=1))
    with pytest.raises(HarmonRankError, match="holds ranker 'one_step_rank', this run trains 'harmonrank_rank'"):
        other_net.fit(train, valid=valid, run_dir=run, resume=True)
    same_name = NeuralRanker(net="harmonrank", loss="rank", train=TrainConfig(max_epochs=2, seed=1),
                             name="one_step_rank")
    with pytest.raises(HarmonRankError, match="different model"):
        same_name.fit(train, valid=valid, run_dir=run, resume=True)
    meta = json.loads((run / "checkpoint.json").read_text())
    meta["epoch"] = 5  # as if the process died between writing the weights and the JSON
    (run / "checkpoint.json").write_text(json.dumps(meta))
    same = NeuralRanker(net="one_step", loss="rank", train=TrainConfig(max_epochs=2, seed=1))
    with pytest.raises(HarmonRankError, match="died between"):
        same.fit(train, valid=valid, run_dir=run, resume=True)


@pytest.mark.parametrize(("values", "smoothing", "expected"), [
    ([4.94, 4.82, 4.77], 1.0, 2),  # falling: the raw rule and the smoothed rule agree
    ([4.94, 4.82, 4.77], 0.5, 2),
    ([5.050, 5.045, 5.052, 5.046], 1.0, 1),  # raw: 5.052 counts as a new best, the next epoch does not
    ([5.050, 5.060, 5.050, 5.062, 5.049], 0.5, 1),  # noisy but rising: the EMA rose at epoch 4
])
def test_early_stopping_watches_a_smoothed_metric(values: list[float], smoothing: float, expected: int) -> None:
    from harmonrank.train import Trainer

    net = torch.nn.Linear(1, 1)
    trainer = Trainer(net, torch.nn.MSELoss(), TrainConfig(smoothing=smoothing, min_delta=1e-4, device="cpu"), (1.0,))
    trainer.history = [{"epoch": i + 1, "valid_auc_sum": v} for i, v in enumerate(values)]
    assert trainer.epochs_without_improvement() == expected


def _fit_compiled(splits, compile_: bool) -> NeuralRanker:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    r = NeuralRanker(net="harmonrank", loss="rank",
                     train=TrainConfig(max_epochs=1, batch_size=2048, patience=10, seed=7, compile=compile_))
    r.fit(train, valid=valid)
    return r


def test_compiled_training_matches_eager(splits) -> None:  # type: ignore[no-untyped-def]
    """torch.compile (inductor) computes the same step as eager up to float rounding; a compiled run trains.

    Whole runs are compared by their validation metric only: AdamW's normalised updates turn rounding-level
    gradient differences on near-zero gradients into lr-sized parameter differences within a few steps.
    """
    from harmonrank.features import EncodedBatch
    from harmonrank.models import make_loss
    from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet
    from harmonrank.train import CompiledOrEager

    torch.manual_seed(0)
    net = HarmonRankNet(EnsembleConfig(objectives=("a", "b", "c"), vocab_sizes=(4,), numeric_dim=2))
    g = torch.Generator().manual_seed(1)
    batch = EncodedBatch(torch.rand(300, 3, generator=g, dtype=torch.float64),
                         torch.randint(0, 4, (300, 1), generator=g), torch.randn(300, 2, generator=g))
    labels, group = (torch.rand(300, 3, generator=g) < 0.2).float(), torch.arange(300) // 10
    loss = make_loss("rank", (1.0, 1.0, 1.0))
    grads = []
    wrapper = CompiledOrEager(net)
    for model in (net, wrapper):
        out = model(batch)
        grads.append((out.detach(), torch.autograd.grad(loss(out, labels, group), list(net.parameters()))))
    assert wrapper.compiled  # it compiled (a swallowed failure would compare eager with eager)
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    eager, compiled = _fit_compiled(splits, False), _fit_compiled(splits, True)
    assert compiled.train.compile and compiled.history_[0]["valid_auc_sum"] == pytest.approx(
        eager.history_[0]["valid_auc_sum"], abs=0.02)


def test_compile_failure_falls_back_to_eager(splits, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                            caplog: pytest.LogCaptureFixture) -> None:
    def broken(module: torch.nn.Module, **_: object):  # type: ignore[no-untyped-def]
        def call(*args: object) -> None:
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING", logger="harmonrank.train"):
        fell_back = _fit_compiled(splits, True)
    assert "torch.compile failed (RuntimeError: no C++ compiler found); training eagerly" in caplog.text
    eager = _fit_compiled(splits, False)
    for (k, va), (_, vb) in zip(eager.net_.state_dict().items(), fell_back.net_.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
