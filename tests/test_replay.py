from __future__ import annotations

import numpy as np
import pytest

from harmonrank.errors import DataError
from harmonrank.study.replay import position_weights, replay, replay_gain_bootstrap


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


def test_replay_gain_bootstrap_against_direct_replays() -> None:
    rng = np.random.default_rng(2)
    request = np.repeat(np.arange(200), 25)
    truth = rng.random(len(request)) * 0.05
    noisy = [truth + rng.normal(0, 0.05, len(truth)) for _ in range(2)]  # a good ranker, two "seeds"
    rand = [rng.normal(size=len(truth)) for _ in range(2)]  # a random one
    res = replay_gain_bootstrap(noisy, rand, truth, request, k=5, n_boot=100)
    def buys(s: np.ndarray) -> float:
        return replay(s, truth[:, None], request, ["buy"], 5)["buy"]

    gains = [buys(a) / buys(b) - 1 for a, b in zip(noisy, rand, strict=True)]
    assert res.difference == pytest.approx(np.mean(gains), rel=1e-12)  # the point: mean of the seeds' gains
    assert res.n_seeds == 2 and res.n_boot == 200 and 0 < res.low < res.difference < res.high
    same = replay_gain_bootstrap(noisy, noisy, truth, request, k=5, n_boot=50)  # a ranker against itself
    assert same.difference == 0 and same.low == 0 and same.high == 0
    with pytest.raises(DataError, match="same number"):
        replay_gain_bootstrap(noisy, rand[:1], truth, request)
