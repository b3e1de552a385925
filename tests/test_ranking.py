from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from harmonrank.ranking import METHODS, SoftRankError, soft_auc, soft_auc_loss, soft_rank, spread
from reference import auc_pairs, gauc_loop, pl_step, projection_rank, soft_auc_pairs

D = torch.float64


def _batch(n: int, m: int = 3, seed: int = 0, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g, dtype=D)
    if ties:
        s = torch.round(s * 2) / 2
    y = (torch.rand(n, m, generator=g) < torch.tensor([0.3, 0.1, 0.05][:m])).long()
    y[0], y[1] = 1, 0  # every objective has both classes
    return s, y


@pytest.mark.parametrize("seed", range(3))
def test_pl_matches_pair_loop(seed: int) -> None:
    s, y = _batch(60, seed=seed, ties=True)
    tau = 0.3
    got = soft_auc(s, y, method="pl", temperature=tau, relative=False)
    for m in range(3):
        ref = soft_auc_pairs(s.numpy(), y[:, m].numpy(), lambda d: pl_step(d, tau))
        assert got[m].item() == pytest.approx(ref, abs=1e-12)


def test_logistic_matches_pair_loop_and_rank_sum() -> None:
    s, y = _batch(50, seed=1)
    tau = 0.2
    got = soft_auc(s, y, method="logistic", temperature=tau, relative=False)
    r = soft_rank(s, "logistic", tau, relative=False)
    for m in range(3):
        ref = soft_auc_pairs(s.numpy(), y[:, m].numpy(), lambda d: 1 / (1 + np.exp(-d / tau)))
        assert got[m].item() == pytest.approx(ref, abs=1e-12)
        # the logistic rank-sum is exactly the pairwise sigmoid surrogate (positive-positive terms cancel)
        p = y[:, m].sum().item()
        n = len(s) - p
        rank_sum = ((r * y[:, m]).sum().item() - p * (p + 1) / 2) / (p * n)
        assert rank_sum == pytest.approx(ref, abs=1e-12)


def test_projection_matches_pav_reference() -> None:
    z = torch.randn(40, dtype=D) * 3
    ref = projection_rank(z.numpy())
    got = soft_rank(z, "projection", 1.0, relative=False)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    assert got.sum().item() == pytest.approx(40 * 41 / 2)  # a point of the permutahedron


def test_projection_matches_torchsort_when_installed() -> None:
    torchsort = pytest.importorskip("torchsort")
    z = torch.randn(1, 500, dtype=D)
    ref = torchsort.soft_rank(z, regularization_strength=0.7)[0]
    np.testing.assert_allclose(soft_rank(z[0], "projection", 0.7, relative=False).numpy(), ref.numpy(),
                               atol=1e-8)


def test_softsort_rank_reference() -> None:
    s = torch.randn(30, dtype=D)
    tau = 0.5
    srt = torch.sort(s).values.numpy()
    p = np.exp(-np.abs(srt[:, None] - s.numpy()[None, :]) / tau)
    p /= p.sum(1, keepdims=True)
    ref = (np.arange(1, 31)[:, None] * p).sum(0) / p.sum(0)
    np.testing.assert_allclose(soft_rank(s, "softsort", tau, relative=False).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method: str) -> None:
    s, y = _batch(24, seed=4)
    s.requires_grad_(True)
    w = torch.tensor([1.0, 2.0, 0.5], dtype=D)
    # relative=False: the relative temperature is detached by design, so finite differences would see it move
    assert torch.autograd.gradcheck(
        lambda x: soft_auc(x, y, method=method, temperature=0.8, relative=False) * w, (s,), eps=1e-6, atol=1e-6
    )


def test_gradcheck_groupwise() -> None:
    s, y = _batch(30, seed=5)
    s.requires_grad_(True)
    group = torch.arange(30) % 4
    for method in ("pl", "logistic"):
        assert torch.autograd.gradcheck(
            lambda x, m=method: soft_auc(x, y, method=m, temperature=0.8, relative=False, group=group),
            (s,), eps=1e-6, atol=1e-6,
        )


@pytest.mark.parametrize("method", METHODS)
def test_tends_to_exact_auc_with_ties(method: str) -> None:
    s, y = _batch(300, seed=6, ties=True)
    got = soft_auc(s, y, method=method, temperature=1e-7)
    for m in range(3):
        assert got[m].item() == pytest.approx(roc_auc_score(y[:, m].numpy(), s.numpy()), abs=1e-6)


def test_groupwise_matches_loop_and_tends_to_gauc() -> None:
    s, y = _batch(200, seed=7, ties=True)
    group = torch.randint(0, 12, (200,), generator=torch.Generator().manual_seed(0))
    tau = 0.4
    for method, step in (("pl", lambda d: pl_step(d, tau)), ("logistic", lambda d: 1 / (1 + np.exp(-d / tau)))):
        got = soft_auc(s, y, method=method, temperature=tau, relative=False, group=group)
        for m in range(3):
            ref = soft_auc_pairs(s.numpy(), y[:, m].numpy(), step, group.numpy())
            assert got[m].item() == pytest.approx(ref, abs=1e-12)
    hard = soft_auc(s, y, temperature=1e-7, group=group)
    for m in range(3):
        assert hard[m].item() == pytest.approx(gauc_loop(s.numpy(), y[:, m].numpy(), group.numpy()), abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1000), st.floats(0.01, 100), st.floats(-50, 50), st.sampled_from(["pl", "logistic"]))
def test_affine_invariance(seed: int, a: float, b: float, method: str) -> None:
    s, y = _batch(80, seed=seed)
    base = soft_auc(s, y, method=method)
    np.testing.assert_allclose(soft_auc(a * s + b, y, method=method).numpy(), base.numpy(), atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000), st.sampled_from(["projection", "softsort"]))
def test_affine_invariance_rank_operators(seed: int, method: str) -> None:
    s, y = _batch(80, seed=seed)
    base = soft_auc(s, y, method=method)
    np.testing.assert_allclose(soft_auc(7.5 * s - 3, y, method=method).numpy(), base.numpy(), atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000))
def test_batch_size_invariance(seed: int) -> None:
    # the same distribution at N and at 8N gives the same soft AUC (up to sampling noise) for every method
    g = torch.Generator().manual_seed(seed)
    big_s = torch.randn(4000, generator=g, dtype=D)
    big_y = ((big_s + torch.randn(4000, generator=g, dtype=D)) > 1.2).long()[:, None]
    small_s, small_y = big_s[:500], big_y[:500]
    for method in ("pl", "projection"):
        big, small = soft_auc(big_s, big_y, method=method), soft_auc(small_s, small_y, method=method)
        exact_big = auc_pairs(big_s.numpy(), big_y[:, 0].numpy())
        exact_small = auc_pairs(small_s.numpy(), small_y[:, 0].numpy())
        # the soft-minus-exact gap does not drift with N
        assert abs((big - exact_big).item() - (small - exact_small).item()) < 0.01
    # duplicating the batch leaves the piecewise-linear soft AUC exactly unchanged
    dup = soft_auc(torch.cat([small_s, small_s]), torch.cat([small_y, small_y]))
    assert dup.item() == pytest.approx(soft_auc(small_s, small_y).item(), abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_batches_give_no_nan(method: str) -> None:
    cases = [
        (torch.full((10,), 0.3, dtype=D), torch.tensor([0, 1] * 5)),  # all scores equal
        (torch.randn(10, dtype=D), torch.tensor([1] + [0] * 9)),  # a single positive
        (torch.randn(10, dtype=D), torch.zeros(10, dtype=torch.long)),  # no positive
        (torch.randn(10, dtype=D), torch.ones(10, dtype=torch.long)),  # no negative
        (torch.randn(1, dtype=D), torch.ones(1, dtype=torch.long)),  # one row
    ]
    for s, y in cases:
        x = s.clone().requires_grad_(True)
        val = soft_auc(x, y, method=method)
        loss = soft_auc_loss(x, y, method=method)
        loss.backward()
        assert torch.isfinite(val).all() and torch.isfinite(x.grad).all()  # type: ignore[arg-type]
        if y.min() == y.max():
            assert val.item() == 0 and x.grad.abs().sum().item() == 0  # type: ignore[union-attr]
    equal = soft_auc(torch.full((10,), 0.3, dtype=D), torch.tensor([0, 1] * 5), method=method)
    assert equal.item() == pytest.approx(0.5, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(METHODS))
def test_loss_bounds_and_dtype_device(seed: int, method: str) -> None:
    s, y = _batch(64, seed=seed)
    w = [1.0, 0.5, 2.0]
    loss = soft_auc_loss(s.float(), y, w, method=method)
    assert loss.dtype == torch.float32 and loss.device == s.device
    assert -sum(w) - 1e-5 <= loss.item() <= 1e-5


def test_pl_memory_is_linear() -> None:
    # a 200k batch would need 40 G pair entries if anything were N x N; it runs in well under a second here
    n = 200_000
    s = torch.randn(n, requires_grad=True)
    y = (torch.rand(n, 6) < 0.05).long()
    soft_auc_loss(s, y).backward()
    assert s.grad is not None and (s.grad != 0).float().mean().item() > 0.05


def test_errors() -> None:
    s, y = _batch(10)
    with pytest.raises(SoftRankError, match="method must be one of"):
        soft_auc(s, y, method="nope")  # type: ignore[arg-type]
    with pytest.raises(SoftRankError, match="temperature must be > 0"):
        soft_auc(s, y, temperature=0.0)
    with pytest.raises(SoftRankError, match="labels must have N = 10"):
        soft_auc(s, y[:5])
    with pytest.raises(SoftRankError, match="floating-point"):
        soft_auc(torch.arange(10), y)
    with pytest.raises(SoftRankError, match="group-wise"):
        soft_auc(s, y, method="projection", group=torch.zeros(10))
    with pytest.raises(SoftRankError, match="one entry per objective"):
        soft_auc_loss(s, y, [1.0])
    assert spread(torch.zeros(5)).item() == 1.0
