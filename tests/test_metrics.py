from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import roc_auc_score

from harmonrank.errors import DataError
from harmonrank.metrics import auc, auc_sum, gauc, objective_table, oracle_scores, paired_bootstrap
from reference import auc_pairs, gauc_loop


def _tied(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    s = rng.integers(0, 7, n).astype(float) / 7  # heavy ties
    y = (rng.random(n) < 0.3).astype(int)
    return s, y


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s, y = _tied(rng, 3000)
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_weighted_auc_matches_sklearn_and_pairs() -> None:
    rng = np.random.default_rng(1)
    s, y = _tied(rng, 300)
    w = rng.integers(0, 4, 300).astype(float)
    assert auc(s, y, sample_weight=w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)
    assert auc(s, y, sample_weight=w) == pytest.approx(auc_pairs(s, y, w), abs=1e-12)


def test_integer_weights_equal_duplicated_rows() -> None:
    # the bootstrap relies on this: weighting a row by k is drawing it k times
    rng = np.random.default_rng(5)
    s, y = _tied(rng, 200)
    k = rng.integers(0, 3, 200)
    assert auc(s, y, sample_weight=k) == pytest.approx(auc(np.repeat(s, k), np.repeat(y, k)), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert auc(np.full(10, 0.3), np.array([0, 1] * 5)) == 0.5
    with pytest.raises(DataError, match="labels must be 0 or 1"):
        auc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(DataError, match="finite"):
        auc(np.array([np.nan, 0.2]), np.array([0, 1]))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(2, 40), elements=st.integers(-5, 5).map(float)),
    st.data(),
)
def test_auc_brute_force_and_invariances(s: np.ndarray, data: st.DataObject) -> None:
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=len(s), max_size=len(s))))
    ref = auc_pairs(s, y)
    got = auc(s, y)
    if np.isnan(ref):
        assert np.isnan(got)
        return
    assert got == pytest.approx(ref, abs=1e-12)
    perm = np.random.default_rng(0).permutation(len(s))
    assert auc(s[perm], y[perm]) == pytest.approx(got, abs=1e-12)  # row order does not matter
    assert auc(np.exp(s) * 3 + 1, y) == pytest.approx(got, abs=1e-12)  # strictly increasing transform
    assert auc(-s, y) == pytest.approx(1 - got, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_gauc_matches_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    s = rng.integers(0, 4, n).astype(float)
    y = (rng.random(n) < 0.4).astype(int)
    g = rng.integers(0, 6, n)
    ref = gauc_loop(s, y, g)
    got = gauc(s, y, g)
    if np.isnan(ref):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ref, abs=1e-12)


def test_gauc_matches_sklearn_per_group_mean() -> None:
    rng = np.random.default_rng(7)
    s, y = _tied(rng, 5000)
    g = rng.integers(0, 50, 5000)
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(y[m], s[m])
            den += m.sum()
    assert gauc(s, y, g) == pytest.approx(num / den, abs=1e-9)


def test_auc_sum_and_table() -> None:
    rng = np.random.default_rng(3)
    s, y1 = _tied(rng, 500)
    y = np.stack([y1, (rng.random(500) < 0.1).astype(int), np.zeros(500, int)], 1)
    expected = roc_auc_score(y[:, 0], s) + 2 * roc_auc_score(y[:, 1], s)  # third has no positive: 0
    assert auc_sum(s, y, [1, 2, 5]) == pytest.approx(expected, abs=1e-9)
    rows = objective_table(s, y, ["a", "b", "c"], group=rng.integers(0, 5, 500))
    assert [r["objective"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["positives"] == int(y1.sum()) and np.isnan(rows[2]["auc"])


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    group = np.repeat(np.arange(200), 20)
    truth = rng.normal(size=n)
    y = (truth + rng.normal(size=n) > 1.0).astype(int)[:, None]
    good, bad = truth + 0.3 * rng.normal(size=n), truth + 3.0 * rng.normal(size=n)
    res = paired_bootstrap(good, bad, y, group, n_boot=100, random_state=1)
    assert res.difference == pytest.approx(auc(good, y[:, 0]) - auc(bad, y[:, 0]), abs=1e-12)
    assert res.low < res.difference < res.high and res.excludes_zero and res.low > 0
    same = paired_bootstrap(good, good, y, group, n_boot=20)
    assert same.difference == 0 and same.low == 0 and same.high == 0
    again = paired_bootstrap(good, bad, y, group, n_boot=100, random_state=1)
    assert (again.low, again.high) == (res.low, res.high)


def test_oracle_scores_beat_every_other_linear_ranking_in_expectation() -> None:
    # Expected AUC-sum (labels ~ Bernoulli(truth), normaliser fixed at the expected counts) is linear in the
    # pairwise order; the oracle ranking must score at least as well as each single true_m ranking.
    rng = np.random.default_rng(0)
    n, m = 3000, 3
    q = rng.beta(0.5, [5, 20, 80], size=(n, m))
    pi = q.mean(0)

    def expected_auc_sum(score: np.ndarray) -> float:
        order = np.argsort(score)
        total = 0.0
        for k in range(m):
            qs = q[order, k]
            below_neg = np.cumsum(1 - qs) - (1 - qs)  # expected negatives ranked below each row
            total += np.sum(qs * below_neg) / (n * pi[k] * n * (1 - pi[k]))
        return total

    y_expect = np.broadcast_to(pi, (n, m)) * np.ones((n, m))  # labels only enter through their base rates
    best = expected_auc_sum(oracle_scores(q, y_expect))
    for k in range(m):
        assert best >= expected_auc_sum(q[:, k]) - 1e-9
    assert best >= expected_auc_sum(q.sum(1)) - 1e-9


def test_bootstrap_over_seeds_pools_resamples_and_averages_the_differences() -> None:
    from harmonrank.metrics import paired_bootstrap_seeds

    rng = np.random.default_rng(5)
    n = 3000
    y = (rng.random((n, 2)) < 0.2).astype(int)
    group = np.repeat(np.arange(150), 20)
    base = y @ [1.0, 1.0] + rng.normal(0, 1.5, n)
    a = [base + rng.normal(0, 0.5, n) for _ in range(3)]
    b = [base + rng.normal(0, 1.0, n) for _ in range(3)]
    one = paired_bootstrap(a[0], b[0], y, group, n_boot=60, random_state=4)
    same = paired_bootstrap_seeds(a[:1], b[:1], y, group, n_boot=60, random_state=4)
    assert (one.difference, one.low, one.high, one.p_value) == (same.difference, same.low, same.high, same.p_value)
    res = paired_bootstrap_seeds(a, b, y, group, n_boot=60, random_state=4)
    per_seed = [auc_sum(s, y) - auc_sum(t, y) for s, t in zip(a, b, strict=True)]
    assert res.difference == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert res.n_boot == 180 and res.n_seeds == 3 and res.low < res.difference < res.high
    if res.p_value == 0:
        assert res.p_text == "< 1/180"
    with pytest.raises(DataError, match="same number"):
        paired_bootstrap_seeds(a, b[:2], y, group)


def test_bootstrap_resamples_equal_weighted_auc_references() -> None:
    """Each resample's difference equals the AUC-sums recomputed from scratch with the resample's row weights
    (ties, rare and absent positives included)."""
    from harmonrank.metrics import _bootstrap_differences

    rng = np.random.default_rng(3)
    n = 1500
    group = np.repeat(np.arange(75), 20)
    a, _ = _tied(rng, n)
    b, _ = _tied(rng, n)
    y = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.01, np.zeros(n, bool)], 1).astype(int)
    w = [1.0, 2.0, 1.0]
    point, diffs = _bootstrap_differences(a, b, y, group, weights=w, n_boot=12, level=0.95, random_state=9,
                                          chunk=5)
    assert point == pytest.approx(auc_sum(a, y, w) - auc_sum(b, y, w), abs=1e-12)
    again = np.random.default_rng(9)  # the same draws, recomputed with auc(sample_weight=...)
    _, gid = np.unique(group, return_inverse=True)
    ref = []
    for k in (5, 5, 2):
        for counts in again.multinomial(75, np.full(75, 1 / 75), size=k):
            rw = counts[gid].astype(float)
            ref.append(sum(wm * (np.nan_to_num(auc(a, y[:, m], sample_weight=rw))
                                 - np.nan_to_num(auc(b, y[:, m], sample_weight=rw))) for m, wm in enumerate(w)))
    np.testing.assert_allclose(diffs, ref, rtol=0, atol=1e-12)
