"""ONNX export: parity with PyTorch, artifact verification, what does not export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clihelp import run
from harmonrank import ConfigError, HarmonRankError, SimulatorConfig, TrainConfig, make_ranker, read_table, simulate
from harmonrank import simulator_config as sim_cfg
from harmonrank.export import export_ranker, load_artifact

FAST = TrainConfig(max_epochs=2, device="cpu")


@pytest.fixture(scope="module")
def parity_table(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """12,000 rows: a third with an unseen category, 200 rows with every score 0 and 200 with every score 1."""
    path = tmp_path_factory.mktemp("parity") / "sim.parquet"
    simulate(path, SimulatorConfig(rows=12_000, seed=9))
    table = read_table(path, sim_cfg())
    feats = dict(table.features)
    feats["u_device"] = np.where(np.arange(len(table)) % 3 == 0, "never-seen", feats["u_device"]).astype(object)
    scores = table.scores.copy()
    scores[:200], scores[200:400] = 0.0, 1.0
    return replace(table, features=feats, scores=scores)


def _same_order_within_requests(a: np.ndarray, b: np.ndarray, request: np.ndarray, tie: float) -> bool:
    """Every pair of candidates of one request is ordered alike by a and b, unless b ties them within tie."""
    for r in np.unique(request):
        i = np.flatnonzero(request == r)
        da, db = np.sign(a[i][:, None] - a[i][None, :]), b[i][:, None] - b[i][None, :]
        if np.any((da != np.sign(db)) & (np.abs(db) > tie)):
            return False
    return True


@pytest.mark.parametrize("name", ["harmonrank", "one_step_bce", "formula"])
def test_onnx_runtime_matches_pytorch(name: str, splits, parity_table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    ranker = make_ranker(name, FAST, **({"n_trials": 3} if name == "formula" else {})).fit(train, valid=valid)
    art = load_artifact(export_ranker(ranker, tmp_path / "art"))
    torch_scores, onnx_scores = ranker.predict(parity_table), art.score(parity_table)
    # float32 graph: 1e-5 absolute, or 2^-20 relative for the large |scores| of p = 0 rows (gate x log 1e-6)
    tol = np.maximum(1e-5, np.abs(torch_scores) * 2.0**-20)
    assert np.all(np.abs(onnx_scores - torch_scores) <= tol), np.abs(onnx_scores - torch_scores).max()
    assert _same_order_within_requests(torch_scores, onnx_scores, parity_table.request, tie=1e-4)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert [o["name"] for o in manifest["objectives"]] == list(parity_table.objectives)
    assert manifest["inputs"][0]["shape"] == ["batch", 6]
    if name == "formula":  # no network: no weights, so no torch engine; auto falls back to ONNX Runtime
        assert manifest["torch"] is None and load_artifact(tmp_path / "art", engine="auto").engine == "onnx"
        with pytest.raises(HarmonRankError, match="has none"):
            load_artifact(tmp_path / "art", engine="torch")
        return
    # the torch engine: the same weights through the network's inference form (its fused kernel on the CPU)
    eng = load_artifact(tmp_path / "art", engine="torch")
    assert eng.engine == "torch" and manifest["torch"]["net"] == ranker.net
    torch_engine = eng.score(parity_table)
    assert np.all(np.abs(torch_engine - torch_scores) <= tol), np.abs(torch_engine - torch_scores).max()
    assert _same_order_within_requests(torch_scores, torch_engine, parity_table.request, tie=1e-4)


def test_artifact_refuses_tampering_and_lambdamart_says_it_does_not_export(splits, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    train, valid, _ = splits
    formula = make_ranker("formula", FAST, n_trials=2).fit(train, valid=valid)
    path = export_ranker(formula, tmp_path / "art")
    onnx = path / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(HarmonRankError, match="sha256"):
        load_artifact(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format"] = 7
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HarmonRankError, match="format 7"):
        load_artifact(path)
    net = make_ranker("one_step_bce", FAST).fit(train, valid=valid)
    weights = export_ranker(net, tmp_path / "net") / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    load_artifact(tmp_path / "net", engine="onnx")  # ONNX Runtime does not read the weights
    with pytest.raises(HarmonRankError, match=r"model\.safetensors: sha256"):
        load_artifact(tmp_path / "net", engine="torch")
    manifest = json.loads((tmp_path / "net" / "manifest.json").read_text())
    manifest["torch"]["weights"] = "../model.safetensors"
    (tmp_path / "net" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HarmonRankError, match="plain file name"):
        load_artifact(tmp_path / "net", engine="torch")
    with pytest.raises(ConfigError, match="engine must be one of"):
        load_artifact(tmp_path / "net", engine="tensorrt")
    lm = make_ranker("lambdamart", FAST, n_estimators=10, group_sizes=(500,)).fit(train, valid=valid)
    with pytest.raises(HarmonRankError, match="does not export"):
        export_ranker(lm, tmp_path / "lm")
    run_dir = tmp_path / "run"
    lm.save(run_dir)
    assert run(["export", "-m", str(run_dir), "-o", str(tmp_path / "x")]) == 2
    assert "does not export" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_predict_with_the_onnx_engine_matches_torch(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    run_dir, art = tmp_path / "run", tmp_path / "art"
    assert run(["train", "-d", str(sim_path), "-r", "one_step_rank", "-o", str(run_dir), "--epochs", "1"]) == 0
    assert run(["export", "-m", str(run_dir), "-o", str(art)]) == 0
    assert run(["predict", "-m", str(run_dir), "-d", str(sim_path), "-o", str(tmp_path / "t.parquet")]) == 0
    assert run(["predict", "-m", str(art), "-d", str(sim_path), "-o", str(tmp_path / "o.parquet"),
                "--engine", "onnx", "--batch-rows", "7000"]) == 0
    t, o = pq.read_table(tmp_path / "t.parquet"), pq.read_table(tmp_path / "o.parquet")
    assert t.column_names == o.column_names
    np.testing.assert_allclose(o["score"].to_numpy(), t["score"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert run(["predict", "-m", str(run_dir), "-d", str(sim_path), "-o", str(tmp_path / "x.parquet"),
                "--engine", "onnx"]) == 2
    assert "harmonrank export" in capsys.readouterr().err
