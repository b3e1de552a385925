from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clihelp import EXE, run
from harmonrank import load_config, read_table
from harmonrank.rankers import load_ranker


def test_train_predict_evaluate_agree(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    assert run(["train", "-d", str(sim_path), "-r", "harmonrank", "-o", str(run_dir), "--epochs", "2"]) == 0
    assert (run_dir / "model.safetensors").exists() and (run_dir / "checkpoint.json").exists()
    out = tmp_path / "pred.parquet"
    assert run(["predict", "-m", str(run_dir), "-d", str(sim_path), "-o", str(out), "--batch-rows", "7000"]) == 0
    pred = pq.read_table(out)
    assert pred.column_names == ["request_id", "user_id", "streamer_id", "score"] and pred.num_rows == 20_000
    table = read_table(sim_path, load_config(None))
    np.testing.assert_array_equal(pred["request_id"].to_numpy(), table.request)
    direct = load_ranker(run_dir).predict(table)
    np.testing.assert_allclose(pred["score"].to_numpy(), direct, rtol=1e-6, atol=1e-6)  # streamed == in-memory
    res = tmp_path / "ev.json"
    assert run(["evaluate", "-d", str(sim_path), "-m", str(run_dir), "--json", str(res)]) == 0
    from harmonrank.metrics import auc_sum

    assert json.loads(res.read_text())["auc_sum"] == pytest.approx(auc_sum(direct, table.labels), abs=1e-9)


def test_train_formula_with_weights_and_resume(sim_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "f"
    assert run(["train", "-d", str(sim_path), "-r", "formula", "-o", str(run_dir), "--weights", "buy=3"]) == 0
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["kind"] == "formula" and meta["dataset_config"]["objectives"][-1]["weight"] == 3.0
    nn_dir = tmp_path / "n"
    assert run(["train", "-d", str(sim_path), "-r", "one_step_rank", "-o", str(nn_dir), "--epochs", "1"]) == 0
    assert run(["train", "-d", str(sim_path), "-r", "one_step_rank", "-o", str(nn_dir), "--epochs", "2",
                "--resume"]) == 0
    assert [h["epoch"] for h in json.loads((nn_dir / "model.json").read_text())["history"]] == [1, 2]


def test_cli_errors(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["train", "-d", str(sim_path), "-r", "xgb", "-o", str(tmp_path / "x")]) == 2
    assert "unknown ranker 'xgb'" in capsys.readouterr().err
    assert run(["predict", "-m", str(tmp_path), "-d", str(sim_path), "-o", str(tmp_path / "p.parquet")]) == 2
    assert "no model.json" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    t = pq.read_table(sim_path).drop(["p_buy"])
    pq.write_table(t, bad)
    run_dir = tmp_path / "f"
    assert run(["train", "-d", str(sim_path), "-r", "formula", "-o", str(run_dir)]) == 0
    assert run(["predict", "-m", str(run_dir), "-d", str(bad), "-o", str(tmp_path / "p.parquet")]) == 2
    assert "'p_buy' (score)" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()  # nothing half-written
    assert run(["evaluate", "-d", str(sim_path), "-m", str(run_dir), "--formula", "buy=1"]) == 2


def test_installed_cli_trains_and_predicts(sim_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tr = subprocess.run([EXE, "train", "--data", str(sim_path), "--ranker", "one_step_bce", "--out", str(run_dir),
                         "--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert tr.returncode == 0, tr.stderr
    out = tmp_path / "p.csv"
    pr = subprocess.run([EXE, "predict", "--model", str(run_dir), "--data", str(sim_path), "--out", str(out)],
                        capture_output=True, text=True, timeout=300)
    assert pr.returncode == 0, pr.stderr
    import pyarrow.csv as pacsv

    csv = pacsv.read_csv(out)
    assert csv.num_rows == 20_000 and isinstance(csv["score"], pa.ChunkedArray)


def test_predict_joins_back_by_item_id_keeps_columns_and_needs_no_time(sim_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "f"
    assert run(["train", "-d", str(sim_path), "-r", "formula", "-o", str(run_dir)]) == 0
    src = pq.read_table(sim_path)
    no_time = tmp_path / "no_time.parquet"
    pq.write_table(src.drop(["time", *[c for c in src.column_names if c.startswith(("y_", "true_"))]]), no_time)
    out = tmp_path / "p.parquet"
    assert run(["predict", "-m", str(run_dir), "-d", str(no_time), "-o", str(out), "--keep", "s_category",
                "--batch-rows", "5000"]) == 0
    pred = pq.read_table(out)
    assert pred.column_names == ["request_id", "user_id", "streamer_id", "s_category", "score"]
    np.testing.assert_array_equal(pred["streamer_id"].to_numpy(), src["streamer_id"].to_numpy())
    assert pred["s_category"].to_pylist() == src["s_category"].to_pylist()
    assert run(["predict", "-m", str(run_dir), "-d", str(no_time), "-o", str(tmp_path / "q.parquet"),
                "--keep", "nope"]) == 2
    assert not (tmp_path / "q.parquet").exists()


def test_progress_lines_in_logs_and_the_loss_says_what_it_is(sim_path: Path, tmp_path: Path, capsys,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HARMONRANK_PROGRESS_EVERY", "0")  # not a terminal: plain lines, here at every update
    assert run(["train", "-d", str(sim_path), "-r", "one_step_rank", "-o", str(tmp_path / "r"), "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1: 1/" in err and "batches" in err and "(= -weighted mean soft AUC)" in err
    assert run(["predict", "-m", str(tmp_path / "r"), "-d", str(sim_path), "-o", str(tmp_path / "p.csv"),
                "--batch-rows", "5000"]) == 0
    assert "/20,000 rows (100%)" in capsys.readouterr().err


@pytest.mark.parametrize(("ranker", "module"), [("formula", "optuna"), ("lambdamart", "lightgbm")])
def test_missing_extra_names_the_install_command(sim_path: Path, tmp_path: Path, capsys, monkeypatch,
                                                 ranker: str, module: str) -> None:  # type: ignore[no-untyped-def]
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if the baselines extra were not installed
    assert run(["train", "-d", str(sim_path), "-r", ranker, "-o", str(tmp_path / "r")]) == 2
    assert "pip install 'harmonrank[baselines]'" in capsys.readouterr().err


def test_predict_keeps_large_int_ids_with_nulls_exactly(sim_path: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "f"
    assert run(["train", "-d", str(sim_path), "-r", "formula", "-o", str(run_dir)]) == 0
    src = pq.read_table(sim_path)
    ids = [None if i % 7 == 0 else 2**60 + i for i in range(src.num_rows)]
    data = tmp_path / "ids.parquet"
    pq.write_table(src.set_column(src.column_names.index("streamer_id"), "streamer_id", pa.array(ids, pa.int64())),
                   data, row_group_size=6000)
    out = tmp_path / "p.parquet"
    assert run(["predict", "-m", str(run_dir), "-d", str(data), "-o", str(out), "--batch-rows", "5000"]) == 0
    got = pq.read_table(out)["streamer_id"]
    assert got.type == pa.int64() and got.to_pylist() == ids
    no_item = tmp_path / "no_item.parquet"  # the item column is passed through when present, not required
    pq.write_table(src.drop(["streamer_id"]), no_item)
    assert run(["predict", "-m", str(run_dir), "-d", str(no_item), "-o", str(tmp_path / "q.parquet")]) == 0
    assert pq.read_table(tmp_path / "q.parquet").column_names == ["request_id", "user_id", "score"]
