from __future__ import annotations

import numpy as np
import pytest

from harmonrank.errors import DataError
from harmonrank.study.replay import position_weights, replay


def test_replay_matches_a_loop() -> None:
    rng = np.random.default_rng(0)
    n = 300
    request = rng.integers(0, 20, n)
    score = rng.normal(size=n)
    truth = rng.random((n, 2)) * 0.1
    got = replay(score, truth, request, ["click", "buy"], k=3)
    ref = np.zeros(2)
    for r in np.unique(request):
        rows = np.flatnonzero(request == r)
        best = rows[np.argsort(-score[rows], kind="stable")][:3]
        for pos, i in enumerate(best, start=1):
            ref += truth[i] / np.log2(pos + 1)
    assert got["click"] == pytest.approx(ref[0]) and got["buy"] == pytest.approx(ref[1])


def test_ranking_by_truth_maximises_expected_outcome() -> None:
    rng = np.random.default_rng(1)
    request = np.repeat(np.arange(50), 30)
    truth = rng.random((1500, 1))
    best = replay(truth[:, 0], truth, request, ["buy"])["buy"]
    for _ in range(5):
        assert replay(rng.normal(size=1500), truth, request, ["buy"])["buy"] < best
    w = position_weights(truth[:, 0], request, k=10)
    assert (w > 0).sum() == 500 and w.max() == 1.0
    with pytest.raises(DataError, match="k must be"):
        replay(truth[:, 0], truth, request, ["buy"], k=0)
