from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from harmonrank.errors import ConfigError
from harmonrank.metrics import auc
from harmonrank.study.simulate import (
    DEFAULT_RATES,
    EXTRA_OBJECTIVES,
    OBJECTIVES,
    SimulatorConfig,
    simulate,
    simulate_table,
)


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


def test_extra_objectives_hit_their_rates_and_keep_the_six_unchanged() -> None:
    t = simulate_table(SimulatorConfig(rows=150_000, seed=5, extra_objectives=4))
    six = simulate_table(SimulatorConfig(rows=150_000, seed=5))
    for m in OBJECTIVES + EXTRA_OBJECTIVES:
        y, p = _np(t, f"y_{m}"), _np(t, f"p_{m}")
        rate = DEFAULT_RATES[m]
        assert abs(y.mean() - rate) < 4 * np.sqrt(rate / len(y)) + 0.05 * rate, m
        assert 0.6 < auc(p, y) < auc(_np(t, f"true_{m}"), y), m
    # the extra objectives draw from their own random stream: the six objectives' data is unchanged
    for col in six.column_names:
        assert t[col].equals(six[col]), col
    two = simulate_table(SimulatorConfig(rows=2_000, seed=5, extra_objectives=2))
    assert [c for c in two.column_names if c.startswith("y_")] == [f"y_{m}" for m in (*OBJECTIVES, "share", "gift")]


def test_segment_dependence_moves_label_dependence_between_activity_segments() -> None:
    """High-activity users' objectives share more latent factors than low-activity users' (conditional on a
    click, the labels of comment and buy are more correlated); 0 leaves every segment alike."""
    def within_click_corr(t, level: str) -> float:  # type: ignore[no-untyped-def]
        act = np.asarray(t["u_activity"].to_pylist())
        mask = (act == level) & (_np(t, "y_click") == 1)
        return float(np.corrcoef(_np(t, "true_comment")[mask], _np(t, "true_buy")[mask])[0, 1])

    flat = simulate_table(SimulatorConfig(rows=150_000, seed=4))
    split = simulate_table(SimulatorConfig(rows=150_000, seed=4, segment_dependence=1.0))
    gap_flat = within_click_corr(flat, "high") - within_click_corr(flat, "low")
    gap_split = within_click_corr(split, "high") - within_click_corr(split, "low")
    assert gap_split > gap_flat + 0.2, (gap_flat, gap_split)
    assert SimulatorConfig(segment_dependence=0.0).shared_weight(np.array([0, 1, 2])) == 0.7
    np.testing.assert_allclose(SimulatorConfig(segment_dependence=0.5).shared_weight(np.array([0, 1, 2])),
                               [0.35, 0.7, 0.85])
    assert set(SimulatorConfig(rates=DEFAULT_RATES).rates) == set(OBJECTIVES)  # default-valued extras: ignored


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rows": 0}, "rows"),
        ({"rates": {"buy": 1.5}}, "rate of 'buy'"),
        ({"rates": {"cart": 0.1}}, "unknown objective"),
        ({"rates": {"buy": 0.2}}, "below the click rate"),
        ({"min_candidates": 50, "max_candidates": 20}, "min_candidates"),
        ({"correlation": 2.0}, "correlation"),
        ({"segment_dependence": 1.5}, "segment_dependence"),
        ({"extra_objectives": 5}, "extra_objectives"),
        ({"extra_objectives": 2.0}, "extra_objectives must be an integer"),
        ({"rates": {"gift": 0.002}}, "rates given for gift, which extra_objectives = 0 does not simulate"),
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
