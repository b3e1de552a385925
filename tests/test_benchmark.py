from __future__ import annotations

import json
from pathlib import Path

import pytest

from harmonrank.errors import ConfigError
from harmonrank.study.benchmark import load_benchmark_config, run_benchmark


def test_tiny_benchmark_writes_a_complete_report(tmp_path: Path) -> None:
    cfg_path = tmp_path / "b.toml"
    cfg_path.write_text("""
[data]
rows = 15000
[train]
max_epochs = 1
lr_grid = [0.003]
[benchmark]
rankers = ["formula", "one_step_bce", "harmonrank"]
seeds = [0, 1]
formula_trials = 3
n_boot = 20
sweep_weights = [2.0]
observable_oracle = false
""")
    cfg = load_benchmark_config(cfg_path)
    res = run_benchmark(cfg, tmp_path / "out")
    out = tmp_path / "out"
    for f in ("report.md", "results.json", "trade_off.png", "attention.png", "curves.png"):
        assert (out / f).stat().st_size > 0, f
    saved = json.loads((out / "results.json").read_text())
    assert {r["ranker"] for r in saved["summary"]} == {"formula", "one_step_bce", "harmonrank"}
    assert len(saved["per_seed"]) == 6 and set(saved["bootstrap_vs_baseline"]) == {"formula", "harmonrank"}
    assert saved["oracle"]["auc_sum_oracle"]["auc_sum"] > max(r["auc_sum"] for r in saved["summary"])
    assert [r["weight"] for r in saved["sweep"]] == [1.0, 2.0]
    assert "all users" in saved["attention"] and res["replay"][0]["ranker"] == "formula"
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "Replay" in report
    focus = saved["focus"]  # buy on its own vs the baseline, with CIs
    assert focus["objective"] == "buy" and set(focus["rankers"]) == {"formula", "harmonrank"}
    for f in focus["rankers"].values():
        for part in (f["auc"], f["replay_gain"]):
            assert part["low"] <= part["high"] and part["n_seeds"] == 2
    assert "## buy on its own against one_step_bce" in report


def test_benchmark_config_errors(tmp_path: Path) -> None:
    p = tmp_path / "b.toml"
    p.write_text("[benchmark]\nrankers = ['nope']\n")
    with pytest.raises(ConfigError, match="unknown ranker"):
        load_benchmark_config(p)
    p.write_text("[oops]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_benchmark_config(p)
    p.write_text("[data]\ncolour = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_benchmark_config(p)


@pytest.mark.parametrize(("text", "match"), [
    ("[trian]\nmax_epochs = 1\n", "unknown section 'trian' .did you mean 'train'"),
    ("[train]\nmax_epoch = 1\n", "did you mean 'max_epochs'"),
    ("[data]\nsim_options = {corelation = 0.5}\n", "did you mean 'correlation'"),
    ("[data]\nrates = {bye = 0.01}\n", "unknown objective 'bye' .did you mean 'buy'"),
    ("[data]\nobjectives = ['click', 'shar']\nsim_options = {extra_objectives = 1}\n",
     "benchmark: objectives: unknown objective 'shar' .did you mean 'share'"),
    ("[data]\nobjectives = ['click']\npath = 'x.parquet'\n", "with path, list the objectives in the dataset config"),
])
def test_benchmark_config_typos_name_the_likely_spelling(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "b.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_benchmark_config(p)


def test_benchmark_fuses_a_chosen_set_of_simulated_objectives(tmp_path: Path) -> None:
    """The number-of-objectives knob: 4 of the six, or the six plus extra simulated ones."""
    p = tmp_path / "b.toml"
    p.write_text("""
[data]
rows = 6000
objectives = ["click", "like", "comment", "share"]
sim_options = { extra_objectives = 1 }
[train]
max_epochs = 1
lr_grid = [0.003]
[benchmark]
rankers = ["one_step_bce", "one_step_rank"]
seeds = [0]
n_boot = 5
sweep_weights = []
observable_oracle = false
""")
    res = run_benchmark(load_benchmark_config(p), tmp_path / "out")
    assert res["objectives"] == ["click", "like", "comment", "share"]
    assert res["data"]["simulator"]["extra_objectives"] == 1 and "share" in res["data"]["simulator"]["rates"]
