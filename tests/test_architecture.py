"""The seams of the package: registry, public API errors, old model formats, devices, import direction."""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import harmonrank
from clihelp import run
from harmonrank import (
    ConfigError,
    FormulaRanker,
    HarmonRankError,
    NeuralRanker,
    RankerSpec,
    SimulatorConfig,
    TrainConfig,
    load_config,
    load_ranker,
    make_ranker,
    read_table,
    register_ranker,
    score_file,
    simulate,
    simulator_config,
)
from harmonrank.rankers import RANKERS, default_rankers, ranker_table
from harmonrank.study.benchmark import load_benchmark_config, run_benchmark
from harmonrank.train import resolve_device

SRC = Path(harmonrank.__file__).parent
FORMAT1 = Path(__file__).parent / "data" / "format1"


@pytest.fixture
def toy_ranker() -> Iterator[str]:
    """A ranker added through the public registry API (removed afterwards)."""
    spec = register_ranker(RankerSpec("toy_pairwise", NeuralRanker, "toy: small one-step net, pairwise loss",
                                      net="one_step", loss="pairwise", options={"net_options": {"hidden": (8,)}}))
    yield spec.name
    RANKERS.pop(spec.name)


def test_registered_ranker_reaches_cli_help_training_and_the_benchmark(toy_ranker: str, sim_path: Path,
                                                                       tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["train", "--help"]) == 0
    assert toy_ranker in capsys.readouterr().out
    assert toy_ranker in default_rankers() and any(r["ranker"] == toy_ranker for r in ranker_table())
    assert run(["train", "-d", str(sim_path), "-r", toy_ranker, "-o", str(tmp_path / "run"), "--epochs", "1"]) == 0
    loaded = load_ranker(tmp_path / "run")
    assert loaded.name == toy_ranker and isinstance(loaded, NeuralRanker) and loaded.net_config_.hidden == (8,)
    cfg = load_benchmark_config(None, rows=6000, seeds=(0,), rankers=("formula", toy_ranker), max_epochs=1,
                                lr_grid=(), formula_trials=2, n_boot=10, sweep_weights=(), observable_oracle=False,
                                baseline="formula")
    res = run_benchmark(cfg, tmp_path / "bench")
    assert [r["ranker"] for r in res["summary"]] == ["formula", toy_ranker]
    assert toy_ranker in (tmp_path / "bench" / "report.md").read_text()


def test_registry_refuses_duplicates_and_non_rankers() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_ranker(RankerSpec("harmonrank", NeuralRanker, "again", net="harmonrank", loss="rank"))
    with pytest.raises(ConfigError, match="Ranker subclass"):
        register_ranker(RankerSpec("bad", dict, "not a ranker"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="identifier"):
        register_ranker(RankerSpec("has space", FormulaRanker, "bad name"))


@pytest.mark.parametrize("call", [
    lambda: make_ranker("nope"),
    lambda: make_ranker("formula", colour=1),
    lambda: TrainConfig(device="tpu"),  # type: ignore[arg-type]
    lambda: TrainConfig(loss_method="hinge"),  # type: ignore[arg-type]
    lambda: TrainConfig(temperature=0.0),
    lambda: TrainConfig(batch_by="user"),  # type: ignore[arg-type]
    lambda: NeuralRanker(net="transformer"),
    lambda: NeuralRanker(loss="hinge"),
    lambda: harmonrank.EnsembleConfig(objectives=("a",), d_model=15, n_heads=2),
    lambda: harmonrank.models.make_loss("hinge", [1.0]),
    lambda: harmonrank.soft_auc(torch.arange(4), torch.ones(4)),
    lambda: harmonrank.weighted_product(np.ones((3, 2)), [1.0]),
    lambda: FormulaRanker(n_trials=0),
    lambda: read_table("no/such/file.parquet", simulator_config()),
    lambda: load_config("no/such/config.toml"),
    lambda: load_ranker("no/such/run"),
    lambda: resolve_device("cuda") if not torch.cuda.is_available() else resolve_device("gpu"),
])
def test_bad_arguments_raise_the_root_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HarmonRankError):
        call()


def test_public_api_is_sorted_and_complete() -> None:
    names = harmonrank.__all__
    assert list(names) == sorted(names)
    for name in ("make_ranker", "load_ranker", "Ranker", "TrainConfig", "HarmonRankNet", "OneStepNet", "soft_auc",
                 "soft_auc_loss", "read_table", "HarmonRankError", "ConfigError", "DataError", "score_file"):
        assert name in names and hasattr(harmonrank, name)


def test_product_path_never_imports_the_study_path() -> None:
    """Dependencies point one way: data/models/train/rankers/... never import harmonrank.study."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("study", "cli") or (rel.name in ("__init__.py", "__main__.py") and len(rel.parts) == 1):
            continue  # the study path, the CLI and the package facade sit above both
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "study" in node.module.split("."):
                offenders.append(f"{rel}: from {'.' * node.level}{node.module}")
            if isinstance(node, ast.Import) and any("study" in a.name.split(".") for a in node.names):
                offenders.append(f"{rel}: import {', '.join(a.name for a in node.names)}")
    assert not offenders
    code = "import sys, harmonrank.rankers, harmonrank.scoring; print(any('study' in m for m in sys.modules))"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # importing the product path loads nothing of the study path


def _format1_table():  # type: ignore[no-untyped-def]
    meta = json.loads((FORMAT1 / "harmonrank" / "expected_scores.json").read_text())
    return meta, harmonrank.simulate_table(SimulatorConfig(rows=meta["rows"], seed=meta["seed"], users=meta["users"],
                                                           streamers=meta["streamers"]))


@pytest.mark.parametrize("name", ["harmonrank", "formula"])
def test_format1_models_still_load_and_score_the_same(name: str, tmp_path: Path) -> None:
    """Models written before the restructure (model.json without "format") load and give the same scores."""
    path = tmp_path / "sim.parquet"
    meta, _ = _format1_table()
    simulate(path, SimulatorConfig(rows=meta["rows"], seed=meta["seed"], users=meta["users"],
                                   streamers=meta["streamers"]))
    table = read_table(path, simulator_config())
    expected = np.array(json.loads((FORMAT1 / name / "expected_scores.json").read_text())["scores"])
    ranker = load_ranker(FORMAT1 / name)
    np.testing.assert_allclose(ranker.predict(table)[: len(expected)], expected, rtol=1e-6, atol=1e-6)
    again = load_ranker(ranker.save(tmp_path / "v2"))  # re-saved in the current format
    assert json.loads((tmp_path / "v2" / "model.json").read_text())["format"] == 2
    np.testing.assert_allclose(again.predict(table)[: len(expected)], expected, rtol=1e-6, atol=1e-6)


def test_format1_checkpoint_refuses_resume_naming_the_version(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    shutil.copytree(FORMAT1 / "one_step_run", run_dir)
    train, valid, _ = splits
    r = NeuralRanker(net="one_step", loss="rank", train=TrainConfig(max_epochs=2, batch_size=1024, seed=3))
    with pytest.raises(HarmonRankError, match="format version 1"):
        r.fit(train, valid=valid, run_dir=run_dir, resume=True)
    model = json.loads((run_dir / "model.json").read_text())
    model["format"] = 99
    (run_dir / "model.json").write_text(json.dumps(model))
    with pytest.raises(HarmonRankError, match="format version 99"):
        load_ranker(run_dir)


def test_device_option_and_explicit_cpu_agree(splits) -> None:  # type: ignore[no-untyped-def]
    train, valid, test = splits
    auto = make_ranker("one_step_rank", TrainConfig(max_epochs=1, seed=2, device="auto")).fit(train, valid=valid)
    cpu = make_ranker("one_step_rank", TrainConfig(max_epochs=1, seed=2, device="cpu")).fit(train, valid=valid)
    if resolve_device("auto").type == "cpu":
        np.testing.assert_array_equal(auto.predict(test), cpu.predict(test))
    assert isinstance(cpu, NeuralRanker) and next(cpu.net_.parameters()).device.type == "cpu"


def test_loss_method_and_temperature_from_cli_and_benchmark_toml(sim_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    assert run(["train", "-d", str(sim_path), "-r", "one_step_rank", "-o", str(run_dir), "--epochs", "1",
                "--loss-method", "logistic", "--temperature", "0.2"]) == 0
    tc = json.loads((run_dir / "model.json").read_text())["train_config"]
    assert tc["loss_method"] == "logistic" and tc["temperature"] == 0.2
    assert run(["train", "-d", str(sim_path), "-o", str(run_dir), "--loss-method", "hinge"]) == 2
    toml = tmp_path / "b.toml"
    toml.write_text('[train]\nloss_method = "projection"\ntemperature = 0.5\n')
    cfg = load_benchmark_config(toml)
    assert cfg.train_config().loss_method == "projection" and cfg.train_config().temperature == 0.5
    toml.write_text('[train]\nloss_method = "hinge"\n')
    with pytest.raises(ConfigError, match="loss_method"):
        load_benchmark_config(toml)


def test_score_file_streams_like_predict(sim_path: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    train, valid = read_table(sim_path, simulator_config()).split_by_time((0.8, 0.2))
    ranker = make_ranker("formula", TrainConfig(), n_trials=2).fit(train, valid=valid)
    seen: list[int] = []
    n = score_file(ranker, sim_path, tmp_path / "s.parquet", batch_rows=6000, progress=seen.append)
    assert n == 20_000 and seen[-1] == n and len(seen) >= 4 and seen == sorted(seen)
    direct = ranker.predict(read_table(sim_path, simulator_config()))
    np.testing.assert_allclose(pq.read_table(tmp_path / "s.parquet")["score"].to_numpy(), direct, rtol=1e-12)
    with pytest.raises(ConfigError, match="must end in"):
        score_file(ranker, sim_path, tmp_path / "s.txt")
    assert run(["predict", "-m", str(tmp_path), "-d", str(sim_path), "-o", str(tmp_path / "p.parquet"),
                "--batch-rows", "0"]) == 2


def test_docs_ranker_table_is_the_registry(capsys) -> None:  # type: ignore[no-untyped-def]
    doc = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    table = doc.split("<!-- rankers:begin -->\n")[1].split("\n<!-- rankers:end -->")[0]
    assert run(["rankers", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == table.strip()


def test_threads_option_sets_torch_blas_and_lightgbm(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_info

    from harmonrank.threads import get_threads

    assert run(["rankers", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1 and get_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    monkeypatch.setenv("HARMONRANK_THREADS", "many")
    assert run(["rankers"]) == 2
    assert "HARMONRANK_THREADS must be a positive integer" in capsys.readouterr().err
    assert run(["rankers", "--threads", "0"]) == 2
