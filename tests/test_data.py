from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonrank.config import simulator_config
from harmonrank.data import iter_tables, read_table
from harmonrank.errors import DataError

CFG = simulator_config()


def _frame(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "request_id": np.repeat(np.arange(n // 10), 10),
        "user_id": rng.integers(0, 5, n),
        "time": np.repeat(np.arange(n // 10), 10) * 100,
        "u_age_group": rng.choice(["a", "b"], n),
        "u_gender": rng.choice(["f", "m"], n),
        "u_city_tier": rng.choice(["1", "2"], n),
        "u_activity": rng.choice(["lo", "hi"], n),
        "u_device": rng.choice(["ios", "android"], n),
        "u_purchase_power": rng.random(n),
        "u_tenure_days": rng.integers(1, 100, n).astype(float),
    }
    for m in CFG.names:
        cols[f"p_{m}"] = rng.random(n)
        cols[f"y_{m}"] = np.tile([0, 1], n // 2)
    return cols


def _write(tmp_path: Path, cols: dict[str, np.ndarray], name: str = "d.parquet", **kw: int) -> Path:
    p = tmp_path / name
    t = pa.table(cols)
    if name.endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(t, p)
    else:
        pq.write_table(t, p, **kw)
    return p


def test_reads_parquet_and_csv_alike(tmp_path: Path) -> None:
    cols = _frame()
    a = read_table(_write(tmp_path, cols), CFG)
    b = read_table(_write(tmp_path, cols, "d.csv"), CFG)
    assert a.scores.shape == (40, 6) and a.labels is not None and a.labels.dtype == np.int8
    np.testing.assert_allclose(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.truth is None and list(a.features) == list(CFG.categorical) + list(CFG.numeric)


def test_row_groups_are_read_in_batches_and_problems_counted_over_the_file(tmp_path: Path) -> None:
    cols = _frame(100)
    cols["p_buy"][[33, 55, 97]] = np.nan  # three bad rows in three different row groups
    path = _write(tmp_path, cols, row_group_size=30)
    with pytest.raises(DataError, match=r"'p_buy' has 3 NaN/inf values \(rows 33, 55, 97\)"):
        read_table(path, CFG, batch_rows=30)
    chunks = iter_tables(path, CFG, batch_rows=30)
    assert len(next(chunks)) == 30  # first batch is clean and bounded
    with pytest.raises(DataError, match="p_buy"):
        list(chunks)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda c: c.pop("p_buy"), r"1 required column\(s\) missing: 'p_buy' \(score\)"),
        (lambda c: [c.pop("y_like"), c.pop("u_device")], r"2 required column\(s\) missing"),
        (lambda c: c["p_click"].__setitem__(slice(0, 4), np.inf), "'p_click' has 4 NaN/inf"),
        (lambda c: c["p_like"].__setitem__(slice(0, 2), 1.5), r"'p_like' has 2 values outside \[0, 1\]"),
        (lambda c: c["y_follow"].__setitem__(slice(0, 3), 2), r"'y_follow' has 3 values not in \{0, 1\}"),
        (lambda c: c.__setitem__("y_buy", np.zeros(40, int)), "'y_buy' has 0 positives and 40 negatives"),
        (lambda c: c.__setitem__("y_comment", np.ones(40, int)), "'y_comment' has 40 positives and 0 neg"),
        (lambda c: c.__setitem__("p_buy", np.array(["x"] * 40)), "'p_buy' must be numeric"),
    ],
)
def test_bad_input_errors(tmp_path: Path, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    cols = _frame()
    mutate(cols)
    with pytest.raises(DataError, match=match):
        read_table(_write(tmp_path, cols), CFG)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    cols = {k: v[:0] for k, v in _frame().items()}
    with pytest.raises(DataError, match="0 rows"):
        read_table(_write(tmp_path, cols), CFG)
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.parquet", CFG)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"parquet or \.csv"):
        read_table(tmp_path / "x.json", CFG)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read"):
        read_table(tmp_path / "junk.parquet", CFG)


def test_prediction_needs_no_labels_and_categoricals_become_strings(tmp_path: Path) -> None:
    cols = _frame()
    for m in CFG.names:
        cols.pop(f"y_{m}")
    cols["u_gender"] = np.arange(40) % 3  # integer codes are categories too
    t = read_table(_write(tmp_path, cols), CFG, labels=False)
    assert t.labels is None and t.features["u_gender"][:3].tolist() == ["0", "1", "2"]


def test_split_by_time_keeps_requests_whole_and_ordered(sim_path: Path) -> None:
    t = read_table(sim_path, CFG)
    train, valid, test = t.split_by_time((0.6, 0.2, 0.2))
    assert len(train) + len(valid) + len(test) == len(t)
    assert not set(train.request) & set(valid.request) and not set(valid.request) & set(test.request)
    assert train.time is not None and valid.time is not None and test.time is not None
    assert train.time.max() <= valid.time.min() and valid.time.max() <= test.time.min()
    assert abs(len(train) / len(t) - 0.6) < 0.02
    with pytest.raises(DataError, match="sum to 1"):
        t.split_by_time((0.5, 0.2))


def test_atomic_write_cleans_what_a_killed_writer_left_and_uses_the_usual_mode(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    from harmonrank.io import _HOST, atomic_write

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".scores.parquet.{_HOST}-{int(dead.stdout)}.abc123.tmp"  # as kill -9 during predict leaves it
    stale.write_text("partial")
    keep = [tmp_path / f".scores.parquet.{_HOST}-{os.getpid()}.live.tmp",  # a live writer's file
            tmp_path / f".scores.parquet.other-host-{int(dead.stdout)}.x.tmp",  # another machine's writer
            tmp_path / f".scores.parquet.5.{_HOST}-{int(dead.stdout)}.y.tmp"]  # a temporary of scores.parquet.5
    for k in keep:
        k.write_text("in progress")
    with atomic_write(tmp_path / "scores.parquet") as tmp:
        tmp.write_text("done")
    assert not stale.exists() and all(k.exists() for k in keep)
    assert (tmp_path / "scores.parquet").read_text() == "done"
    import torch

    with atomic_write(tmp_path / "model.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "zz", "unseen", ""]), st.sampled_from(["x", "y", "q"]),
                          st.sampled_from([0.5, -1.0, float("nan"), 7.0]), st.integers(1, 6)),
                min_size=1, max_size=30))
def test_feature_encoding_of_runs_equals_row_by_row(runs: list[tuple[str, str, float, int]]) -> None:
    """Encoding looks each run of equal feature rows up once; the ids equal a row-by-row lookup (a brute-force
    dict of the vocabulary), unseen values -> 0, NaN numerics -> 0 with the missing flag."""
    from harmonrank import FeatureEncoder

    rows = [(a, b, v) for a, b, v, k in runs for _ in range(k)]
    feats = {"c1": np.array([r[0] for r in rows], dtype=object), "c2": np.array([r[1] for r in rows], dtype=object),
             "n1": np.array([r[2] for r in rows])}
    enc = FeatureEncoder(vocab={"c1": ["", "a", "zz"], "c2": ["q", "x"]}, numeric_mean={"n1": 0.5},
                         numeric_std={"n1": 2.0})
    cats, nums = enc.encode_columns(feats, len(rows))
    ids = [{v: i + 1 for i, v in enumerate(enc.vocab[c])} for c in ("c1", "c2")]
    want = np.array([[ids[0].get(r[0], 0), ids[1].get(r[1], 0)] for r in rows])
    np.testing.assert_array_equal(cats, want)
    v = np.array([r[2] for r in rows])
    np.testing.assert_allclose(nums[:, 0], np.where(np.isnan(v), 0.0, (v - 0.5) / 2.0), rtol=1e-6)
    np.testing.assert_array_equal(nums[:, 1], np.isnan(v))


@pytest.mark.parametrize("col", [
    np.array([0.0, -0.0, -0.0, -0.0]),  # equal floats that print differently
    np.array([1, 1.0, True, 1, 1, 1], dtype=object),  # equal objects of different types
    np.array(["1.0", "1.0", "0.0", "0.0"]),  # a numpy str column
    np.array([1, 1, 2, 2, 2]),  # integers
])
def test_feature_encoding_runs_mean_equal_text(col: np.ndarray) -> None:
    """Runs are merged only when the values print the same: the ids equal a row-by-row lookup of str(value)."""
    from harmonrank import FeatureEncoder

    enc = FeatureEncoder(vocab={"c": ["-0.0", "0.0", "1", "1.0", "2", "True"]})
    cats, _ = enc.encode_columns({"c": col}, len(col))
    ids = {v: i + 1 for i, v in enumerate(enc.vocab["c"])}
    np.testing.assert_array_equal(cats[:, 0], [ids.get(str(v), 0) for v in col])
