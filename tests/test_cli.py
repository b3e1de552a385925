from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from clihelp import EXE, run


def test_evaluate_formula_json_matches_sklearn(sim_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    assert run(["evaluate", "-d", str(sim_path), "--formula", "click=1,buy=2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    t = pq.read_table(sim_path)
    p = {m: t[f"p_{m}"].to_numpy().astype(np.float64) for m in ("click", "buy")}
    score = np.log(np.clip(p["click"], 1e-7, 1)) + 2 * np.log(np.clip(p["buy"], 1e-7, 1))
    for row in res["objectives"]:
        assert row["auc"] == pytest.approx(roc_auc_score(t[f"y_{row['objective']}"].to_numpy(), score), abs=1e-9)
    assert res["auc_sum"] == pytest.approx(sum(r["auc"] for r in res["objectives"]))
    assert "AUC-sum" in capsys.readouterr().out


def test_evaluate_score_column_and_errors(sim_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["evaluate", "-d", str(sim_path), "--score-column", "true_buy", "--group", "request"]) == 0
    assert run(["evaluate", "-d", str(sim_path), "--score-column", "nope"]) == 2
    assert "'nope' is not a column" in capsys.readouterr().err
    assert run(["evaluate", "-d", str(sim_path), "--formula", "cart=1"]) == 2
    assert "unknown objective 'cart'" in capsys.readouterr().err
    assert run(["evaluate", "-d", str(sim_path), "--group", "session"]) == 2  # click usage error


def test_describe_and_help(sim_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["describe", "-d", str(sim_path)]) == 0
    assert "Label correlation" in capsys.readouterr().out
    for cmd in ([], ["simulate"], ["evaluate"], ["describe"]):
        assert run([*cmd, "--help"]) == 0
        assert "Usage" in capsys.readouterr().out


def test_end_to_end_installed_cli(tmp_path: Path) -> None:
    """Run the installed `harmonrank` executable as a user would."""
    out = tmp_path / "s.parquet"
    sim = subprocess.run([EXE, "simulate", "--out", str(out), "--rows", "6000", "--seed", "4",
                          "--rate", "buy=0.01", "--json", str(tmp_path / "sum.json")],
                         capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    assert "auc_true" in sim.stdout and pq.ParquetFile(out).metadata.num_rows == 6000
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["simulator"]["rates"]["buy"] == 0.01
    ev = subprocess.run([EXE, "evaluate", "--data", str(out)], capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and "AUC-sum" in ev.stdout
    bad = subprocess.run([EXE, "simulate", "--out", str(tmp_path / "x.parquet"), "--rate", "buy=2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "rate of 'buy' must be in (0, 1)" in bad.stderr
    assert not (tmp_path / "x.parquet").exists()
    assert len(bad.stderr.strip().splitlines()) == 1  # one-line cause, no traceback
    # ten objectives: the dataset config is written beside the data and every command reads it
    ten = tmp_path / "ten.parquet"
    sim = subprocess.run([EXE, "simulate", "--out", str(ten), "--rows", "3000", "--extra-objectives", "4",
                          "--segment-dependence", "0.5", "--no-summary"], capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    assert "--config" in sim.stderr and (tmp_path / "ten.toml").exists()
    ev = subprocess.run([EXE, "evaluate", "--data", str(ten), "--config", str(tmp_path / "ten.toml")],
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and "coupon" in ev.stdout, ev.stderr


def test_demo_config_is_a_small_valid_benchmark() -> None:
    from importlib import resources

    from harmonrank.study.benchmark import load_benchmark_config

    with resources.as_file(resources.files("harmonrank").joinpath("resources/demo.toml")) as path:
        cfg = load_benchmark_config(path)
    assert cfg.rows <= 200_000 and len(cfg.seeds) >= 3 and "harmonrank" in cfg.rankers
