from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harmonrank import load_config
from harmonrank.errors import DataError
from harmonrank.study.benchmark import load_benchmark_config, run_benchmark
from harmonrank.study.kuairand import group_requests, load_kuairand, request_ids, write_kuairand
from harmonrank.study.upstream import UpstreamConfig, cross_fit_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kuairand-1k"
PURE = SHARED.parent / "kuairand-pure"
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/kuairand-1k is not present")
needs_pure = pytest.mark.skipif(not PURE.is_dir(), reason="../shared/data/kuairand-pure is not present")


def test_request_rule() -> None:
    user = np.array([1, 1, 1, 2, 2, 1])
    minute = 60_000
    t = np.array([0, 10, 400, 0, 500, 401]) * minute
    rid = request_ids(user, t, gap_minutes=360)
    # user 1: 0 and 10 together, 400 and 401 together (390 min gap splits); user 2: 0 and 500 apart
    assert rid[0] == rid[1] != rid[2] == rid[5]
    assert rid[3] != rid[4] and len(set(rid.tolist())) == 4


def test_request_groupings() -> None:
    user = np.array([1, 1, 1, 2, 2, 1])
    date = np.array([20220425, 20220425, 20220426, 20220425, 20220425, 20220426])
    t = np.array([0, 10, 1500, 0, 500, 1501]) * 60_000
    by_user = group_requests(user, t, date, "user")
    assert len(set(by_user.tolist())) == 2 and by_user[0] == by_user[2] == by_user[5]
    by_day = group_requests(user, t, date, "user-day")
    assert by_day[0] == by_day[1] != by_day[2] == by_day[5] and by_day[3] == by_day[4]
    assert len(set(by_day.tolist())) == 3
    np.testing.assert_array_equal(group_requests(user, t, date, "session", 360), request_ids(user, t, 360))
    with pytest.raises(DataError, match="grouping must be one of"):
        group_requests(user, t, date, "hourly")


@needs_pure
def test_pure_standard_log_reads_in_place(tmp_path: Path) -> None:
    info = write_kuairand(PURE, tmp_path, log_kind="standard", grouping="user-day")
    # counts from kuairand-pure/SOURCE.md
    assert info["rows"] == 94_784 and info["users"] == 21_184
    assert {k: info["positives"][k] for k in ("click", "long_view", "profile_enter", "like", "comment", "follow")} \
        == {"click": 41_503, "long_view": 29_123, "profile_enter": 1_840, "like": 1_625, "comment": 220, "follow": 128}
    t = pq.read_table(tmp_path / "kuairand.parquet")
    days = t["time"].to_numpy() // 86_400_000
    rid = t["request_id"].to_numpy()
    order = np.argsort(rid, kind="stable")
    same = rid[order][1:] == rid[order][:-1]
    assert np.all(days[order][1:][same] - days[order][:-1][same] <= 1)  # a request is one user-day (+ time zone)


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_kuairand(tmp_path / "nope")
    with pytest.raises(DataError, match="no random log file"):
        load_kuairand(tmp_path)
    (tmp_path / "log_random_x.csv").write_text("user_id,video_id\n1,2\n")
    (tmp_path / "user_features_x.csv").write_text("user_id\n1\n")
    (tmp_path / "video_features_basic_x.csv").write_text("video_id\n2\n")
    with pytest.raises(DataError, match=r"log_random_x.csv: \d+ expected column\(s\) missing: date, time_ms"):
        load_kuairand(tmp_path)


@needs_data
def test_loader_reads_the_official_layout(tmp_path: Path) -> None:
    info = write_kuairand(SHARED, tmp_path)
    # counts from SOURCE.md
    assert info["rows"] == 43_028 and info["users"] == 1_000
    assert info["positives"] == {"click": 7_492, "long_view": 3_621, "like": 239, "profile_enter": 198,
                                 "follow": 8, "comment": 13, "forward": 28, "hate": 35}
    t = pq.read_table(tmp_path / "kuairand.parquet")
    assert np.all(np.diff(t["time"].to_numpy()) >= 0)
    cfg = load_config(tmp_path / "kuairand.toml")
    assert cfg.names == ("click", "long_view", "like", "profile_enter")
    assert all(c.startswith("u_") for c in cfg.categorical + cfg.numeric)  # ids never reach the ensemble
    assert not list(Path(__file__).resolve().parents[1].rglob("log_random_4_22_to_5_08_1k.csv"))


@needs_data
def test_reduced_real_data_pipeline(tmp_path: Path) -> None:
    """The CI version of benchmarks/kuairand.sh: loader -> cross-fitted upstream -> benchmark."""
    write_kuairand(SHARED, tmp_path)
    report = cross_fit_file(str(tmp_path / "kuairand.parquet"), str(tmp_path / "scored.parquet"),
                            UpstreamConfig(folds=2, epochs=2))
    assert set(report["auc"]) == {"click", "long_view", "like", "profile_enter", "follow", "comment", "forward",
                                  "hate"}
    assert report["auc"]["click"] > 0.5  # out-of-fold, better than chance
    cfg_path = tmp_path / "b.toml"
    cfg_path.write_text("[train]\nmax_epochs = 2\nbatch_size = 1024\nlr_grid = [0.003]\n"
                        "[benchmark]\nrankers = ['formula', 'one_step_bce', 'harmonrank']\nseeds = [0]\n"
                        "formula_trials = 5\nn_boot = 30\nsweep_weights = []\n"
                        "segment_feature = 'u_user_active_degree'\ntrade_off = ['like', 'click']\n")
    cfg = load_benchmark_config(cfg_path, path=str(tmp_path / "scored.parquet"),
                                dataset_config=str(tmp_path / "kuairand.toml"))
    res = run_benchmark(cfg, tmp_path / "out")
    assert res["oracle"] == {} and res["replay"] == []  # no ground truth on real data
    assert set(res["test_positives"]) == {"click", "long_view", "like", "profile_enter"}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["ranker"] for r in saved["summary"]} == {"formula", "one_step_bce", "harmonrank"}
    assert "HarmonRank against each ranker" in (tmp_path / "out" / "report.md").read_text()
