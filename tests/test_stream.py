"""Streaming training data: a directory of Parquet files read row group by row group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from clihelp import run
from harmonrank import DataError, FeatureEncoder, load_ranker, read_table
from harmonrank import simulator_config as sim_cfg
from harmonrank.distributed import DistInfo
from harmonrank.features import logit_moments
from harmonrank.rankers import choose_two_step, request_keys
from harmonrank.stream import ParquetSource, StreamLoader, scan


def _write_parts(table: pa.Table, folder: Path, files: int, group_rows: int) -> None:
    """``table`` (sorted by request) as ``files`` files whose row groups of ~``group_rows`` rows end at request
    boundaries."""
    folder.mkdir(parents=True, exist_ok=True)
    req = table.column("request_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]])
    for k, chunk in enumerate(np.array_split(starts, files)):
        a = int(chunk[0])
        b = int(starts[np.searchsorted(starts, chunk[-1]) + 1]) if chunk[-1] != starts[-1] else len(req)
        part = table.slice(a, b - a)
        r = part.column("request_id").to_numpy()
        s_starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        cuts = sorted({int(x) for x in s_starts[np.searchsorted(s_starts, np.arange(group_rows, len(r), group_rows))]
                       if x > 0} | {len(r)})
        with pq.ParquetWriter(folder / f"part_{k}.parquet", part.schema) as w:
            prev = 0
            for c in cuts:
                w.write_table(part.slice(prev, c - prev))
                prev = c


@pytest.fixture(scope="module")
def parts(sim_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shared simulated data split by time: train as 3 files of ~1,500-row row groups, valid as one file."""
    root = tmp_path_factory.mktemp("stream")
    t = pq.read_table(sim_path).sort_by([("time", "ascending"), ("request_id", "ascending")])
    req = t.column("request_id").to_numpy()
    cut = int(len(t) * 0.8)
    while req[cut] == req[cut - 1]:
        cut += 1
    _write_parts(t.slice(0, cut), root / "train", files=3, group_rows=1500)
    pq.write_table(t.slice(cut), root / "valid.parquet")
    pq.write_table(t.slice(0, cut), root / "train_whole.parquet")
    return {"train": root / "train", "valid": root / "valid.parquet", "whole": root / "train_whole.parquet",
            "root": root}


def test_one_streaming_pass_fits_what_the_in_memory_fit_does(parts: dict[str, Path]) -> None:
    source = ParquetSource(parts["train"])
    assert len(source.files) == 3 and len(source.fragments) > 6
    stats = scan(source, sim_cfg())
    table = read_table(parts["whole"], sim_cfg())
    ref = FeatureEncoder.fit(table)
    assert stats.encoder.vocab == ref.vocab
    for c in ref.numeric_mean:
        assert stats.encoder.numeric_mean[c] == pytest.approx(ref.numeric_mean[c], rel=1e-9, abs=1e-12)
        assert stats.encoder.numeric_std[c] == pytest.approx(ref.numeric_std[c], rel=1e-9)
    mean, std = logit_moments(table.scores)
    np.testing.assert_allclose(stats.logit_mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.logit_std, std, rtol=1e-9)
    assert stats.rows == len(table) and stats.requests == len(np.unique(table.request))
    assert stats.positives == table.labels.sum(0).tolist()
    # the vocabulary limits follow one rule in memory and streamed
    for max_vocab, min_count in ((3, 1), (10_000, 3_000), (2, 5_000)):  # values are seen ~2,000-10,000 times
        limited = scan(source, sim_cfg(), max_vocab=max_vocab, min_count=min_count).encoder.vocab
        assert limited == FeatureEncoder.fit(table, max_vocab=max_vocab, min_count=min_count).vocab
        counts = {c: dict(zip(*np.unique(table.features[c].astype(str), return_counts=True), strict=True))
                  for c in limited}
        assert all(len(v) <= max_vocab and all(counts[c][x] >= min_count for x in v) for c, v in limited.items())
        assert any(len(v) < len(ref.vocab[c]) for c, v in limited.items())


def test_a_request_split_across_files_is_an_error_naming_it(parts: dict[str, Path], tmp_path: Path) -> None:
    t = pq.read_table(parts["whole"])
    req = t.column("request_id").to_numpy()
    first = np.flatnonzero(req == req[0])
    pq.write_table(t.slice(0, int(first[-1])), tmp_path / "a.parquet")  # the first request minus its last row
    pq.write_table(t.slice(int(first[-1])), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=rf"request '{req[0]}' has rows in .*a.parquet .* and .*b.parquet"):
        scan(ParquetSource(tmp_path), sim_cfg())
    with pytest.raises(DataError, match=r"no \.parquet files"):
        ParquetSource(tmp_path / "nothing*.parquet")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_is_read_once_per_epoch_across_ranks(parts: dict[str, Path], world: int) -> None:
    source = ParquetSource(parts["train"])
    stats = scan(source, sim_cfg())
    for workers in (0, 3):  # rank x reader-thread sharding: still every row once
        seen_rows, seen_requests = 0, []
        for rank in range(world):
            loader = StreamLoader(source, sim_cfg(), stats.encoder, batch_size=512, seed=4,
                                  info=DistInfo(rank, world, rank), buffer_rows=3000, read_workers=workers)
            for batch, labels, group in loader.epoch(2):
                assert len(batch) == len(labels) == len(group)
                seen_rows += len(batch)
                seen_requests.append(np.unique(group.numpy()))
        ids = np.concatenate(seen_requests)
        assert seen_rows == source.rows  # none lost, none twice
        assert len(ids) == len(np.unique(ids)) == stats.requests  # whole requests, each in one batch


def test_reader_threads_hand_over_the_same_batches(parts: dict[str, Path]) -> None:
    source = ParquetSource(parts["train"])
    stats = scan(source, sim_cfg())
    runs = []
    for workers in (0, 1, 4):
        loader = StreamLoader(source, sim_cfg(), stats.encoder, batch_size=700, seed=1, buffer_rows=2500,
                              read_workers=workers)
        runs.append([(b.scores.numpy(), y.numpy(), g.numpy()) for b, y, g in loader.epoch(0)])
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # stopping early (a killed epoch) leaves no reader thread behind
    import threading

    loader = StreamLoader(source, sim_cfg(), stats.encoder, batch_size=700, seed=1, buffer_rows=2500, read_workers=2)
    tables = loader.tables(0)
    next(tables)
    tables.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("harmonrank-read")]


def test_streamed_training_validates_exactly_and_resumes_exactly(parts: dict[str, Path], tmp_path: Path) -> None:
    args = ["train", "-d", str(parts["train"]), "--valid", str(parts["valid"]), "--ranker", "harmonrank",
            "--batch-size", "1024", "--buffer-rows", "4000", "--threads", "1"]
    assert run([*args, "--epochs", "2", "-o", str(tmp_path / "whole")]) == 0
    model = load_ranker(tmp_path / "whole")
    best = max(h["valid_auc_sum"] for h in model.history_)
    # the streamed validation metric is the exact AUC-sum of the whole validation file
    assert model.score(read_table(parts["valid"], sim_cfg())) == pytest.approx(best, abs=1e-9)
    assert run([*args, "--epochs", "1", "-o", str(tmp_path / "killed")]) == 0
    assert run([*args, "--epochs", "2", "-o", str(tmp_path / "killed"), "--resume"]) == 0
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "killed" /
                                                                                    "model.safetensors"))
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_streaming_needs_a_validation_source(parts: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["train", "-d", str(parts["train"]), "-o", str(tmp_path / "x")]) == 2
    assert "--valid is needed" in capsys.readouterr().err


def test_vocabulary_limits_of_a_streamed_fit(parts: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--max-vocab/--min-count bound the vocabularies against a brute-force count, streamed and in memory."""
    table = read_table(parts["whole"], sim_cfg())
    args = ["train", "-d", str(parts["train"]), "--valid", str(parts["valid"]), "--ranker", "one_step_bce",
            "--epochs", "1", "--max-vocab", "3", "--min-count", "500", "-o", str(tmp_path / "m")]
    assert run(args) == 0
    vocab = load_ranker(tmp_path / "m").encoder_.vocab
    for col in sim_cfg().categorical:
        values, counts = np.unique(table.features[col], return_counts=True)
        order = np.lexsort((values, -counts))  # most frequent first, ties by value
        want = sorted(v for v, n in zip(values[order][:3].tolist(), counts[order][:3].tolist(), strict=True)
                      if n >= 500)
        assert sorted(vocab[col]) == want, col
    capsys.readouterr()
    # resuming with other limits would put the saved embeddings on other categories: refused
    assert run([*args[:-2], "--max-vocab", "2", "--epochs", "2", "--resume", "-o", str(tmp_path / "m")]) == 2
    assert "the categorical vocabularies differ from the checkpoint's" in capsys.readouterr().err
    # in memory: the same rule on the same training rows
    assert run(["train", "-d", str(parts["whole"]), "--valid", str(parts["valid"]), "--ranker", "one_step_bce",
                "--epochs", "1", "--max-vocab", "3", "--min-count", "500", "-o", str(tmp_path / "mem")]) == 0
    assert load_ranker(tmp_path / "mem").encoder_.vocab == vocab
    capsys.readouterr()
    assert run(["train", "-d", str(parts["whole"]), "-r", "formula", "--max-vocab", "3", "-o", str(tmp_path / "x")]) \
        == 2
    assert "--max-vocab and --min-count apply to neural rankers" in capsys.readouterr().err
    assert run(["train", "-d", str(parts["whole"]), "--read-workers", "2", "-o", str(tmp_path / "x")]) == 2
    assert "--read-workers applies to streamed training" in capsys.readouterr().err


def test_streamed_auto_decides_on_the_whole_validation_data(parts: dict[str, Path], tmp_path: Path,
                                                            capsys) -> None:  # type: ignore[no-untyped-def]
    # validation spread over several files and row groups: auto streams it through both candidates
    valid_t = pq.read_table(parts["valid"])
    _write_parts(valid_t, tmp_path / "valid", files=2, group_rows=700)
    assert run(["train", "-d", str(parts["train"]), "--valid", str(tmp_path / "valid"), "-r", "auto",
                "--batch-size", "1024", "--buffer-rows", "4000", "--threads", "1", "--epochs", "1",
                "-o", str(tmp_path / "m")]) == 0
    assert "auto: kept" in capsys.readouterr().out
    sel = json.loads((tmp_path / "m" / "model.json").read_text())["selection"]
    valid = read_table(parts["valid"], sim_cfg())
    hr, os_ = (load_ranker(tmp_path / "m" / "candidates" / c).predict(valid) for c in ("harmonrank", "one_step_rank"))
    ref = choose_two_step(hr, os_, valid.labels, request_keys(valid.request), weights=valid.config.objective_weights)
    # the same rows and request keys, so the same resamples and the same decision as in memory
    assert (sel["chosen"], sel["valid_rows"], sel["valid_requests"]) == (ref.chosen, ref.valid_rows, ref.valid_requests)
    for k in ("gain", "low", "high"):
        assert sel[k] == pytest.approx(getattr(ref, k), abs=1e-9), k
    assert load_ranker(tmp_path / "m").name == ref.chosen
