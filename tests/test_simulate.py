from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harmonrank.errors import ConfigError
from harmonrank.metrics import auc
from harmonrank.study.simulate import DEFAULT_RATES, OBJECTIVES, SimulatorConfig, simulate, simulate_table


def _np(t, col: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(t[col].to_numpy())


@pytest.fixture(scope="module")
def big():  # type: ignore[no-untyped-def]
    return simulate_table(SimulatorConfig(rows=150_000, seed=11))


def test_seeded_and_deterministic() -> None:
    a = simulate_table(SimulatorConfig(rows=3000, seed=5))
    b = simulate_table(SimulatorConfig(rows=3000, seed=5))
    c = simulate_table(SimulatorConfig(rows=3000, seed=6))
    assert a.equals(b) and not a.equals(c)


def test_contract_funnel_and_requests(big) -> None:  # type: ignore[no-untyped-def]
    assert big.num_rows == 150_000
    sizes = np.bincount(_np(big, "request_id"))
    assert sizes[:-1].min() >= 20 and sizes.max() <= 100  # the last request may be cut to hit rows
    t = _np(big, "time")
    assert np.all(np.diff(t) >= 0)  # time order
    click = _np(big, "y_click")
    for m in OBJECTIVES:
        p, y, tr = _np(big, f"p_{m}"), _np(big, f"y_{m}"), _np(big, f"true_{m}")
        assert 0 <= p.min() and p.max() <= 1 and 0 <= tr.min() and tr.max() <= 1
        assert set(np.unique(y)) <= {0, 1}
        if m != "click":
            assert np.all(y <= click)  # interactions need a room entry
            assert np.all(tr <= _np(big, "true_click") + 1e-6)


def test_rates_hit_and_predictions_realistic(big) -> None:  # type: ignore[no-untyped-def]
    for m in OBJECTIVES:
        y, tr, p = _np(big, f"y_{m}"), _np(big, f"true_{m}"), _np(big, f"p_{m}")
        rate = DEFAULT_RATES[m]
        # observed rate within 4 binomial standard errors plus 5% calibration slack
        assert abs(y.mean() - rate) < 4 * np.sqrt(rate / len(y)) + 0.05 * rate, m
        a_p, a_true = auc(p, y), auc(tr, y)
        assert 0.65 < a_p < a_true < 0.97, (m, a_p, a_true)  # imperfect upstream, oracle above it


def test_label_correlations_follow_the_story(big) -> None:  # type: ignore[no-untyped-def]
    y = np.stack([_np(big, f"y_{m}") for m in OBJECTIVES], 1).astype(float)
    c = np.corrcoef(y.T)
    i = {m: k for k, m in enumerate(OBJECTIVES)}
    assert c[i["comment"], i["buy"]] > c[i["follow"], i["buy"]]  # comment and buy partly dependent
    assert c[i["follow"], i["long_view"]] > c[i["follow"], i["buy"]]
    low = simulate_table(SimulatorConfig(rows=150_000, seed=11, correlation=0.0))
    y0 = np.stack([_np(low, f"y_{m}") for m in OBJECTIVES], 1).astype(float)
    assert np.corrcoef(y0.T)[i["comment"], i["buy"]] < c[i["comment"], i["buy"]]


def test_knobs() -> None:
    t = simulate_table(SimulatorConfig(rows=100_000, seed=2, rates={"buy": 0.0003}))
    assert abs(_np(t, "y_buy").mean() - 0.0003) < 0.0002
    t = simulate_table(SimulatorConfig(rows=20_000, seed=2, min_candidates=5, max_candidates=5))
    assert np.all(np.bincount(_np(t, "request_id")) == 5)
    exact = simulate_table(SimulatorConfig(rows=20_000, seed=2, noise=0.0, heterogeneity=0.0))
    # without noise or segment effects, p is a monotone transform of truth: same AUC
    y, p, tr = _np(exact, "y_buy"), _np(exact, "p_buy"), _np(exact, "true_buy")
    assert auc(p, y) == pytest.approx(auc(tr, y), abs=2e-3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rows": 0}, "rows"),
        ({"rates": {"buy": 1.5}}, "rate of 'buy'"),
        ({"rates": {"cart": 0.1}}, "unknown objective"),
        ({"rates": {"buy": 0.2}}, "below the click rate"),
        ({"min_candidates": 50, "max_candidates": 20}, "min_candidates"),
        ({"correlation": 2.0}, "correlation"),
    ],
)
def test_bad_knobs(kw: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=match):
        SimulatorConfig(**kw)


def test_streams_row_groups_atomically(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    seen: list[int] = []
    info = simulate(out, SimulatorConfig(rows=25_000, seed=1, chunk_rows=10_000),
                    progress=lambda done, total: seen.append(done))
    meta = pq.ParquetFile(out).metadata
    assert info["rows"] == meta.num_rows == 25_000 and meta.num_row_groups == len(seen) >= 2
    assert seen[-1] == 25_000 and [p.name for p in tmp_path.iterdir()] == ["s.parquet"]
