"""The fused step-1 block (harmonrank.kernels) against the PyTorch block, in float64, forward and every gradient."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from harmonrank import kernels
from harmonrank.features import EncodedBatch
from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet, _AlignBlock

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"fused block unavailable: {kernels.load_error()}")


def _block(d: int, heads: int, ffn: int, seed: int = 0) -> _AlignBlock:
    torch.manual_seed(seed)
    blk = _AlignBlock(d, heads, ffn)
    with torch.no_grad():  # move LayerNorm's affine parameters off 1 / 0 so their gradients are exercised
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return blk


def _grads(blk: _AlignBlock, x: torch.Tensor, dy: torch.Tensor, fused: bool = False) -> tuple[torch.Tensor, ...]:
    """Output and gradients (input, then every parameter): through the kernel itself if ``fused``, else through
    the block's forward (the PyTorch operators for float64, or with HARMONRANK_FUSED_BLOCK=0)."""
    x = x.clone().requires_grad_(True)
    y = kernels.align_block(x, blk, blk.attn.heads) if fused else blk(x)[0]
    return (y.detach(), *torch.autograd.grad(y, [x, *blk.parameters()], dy))


@pytest.mark.parametrize(("b", "m", "d", "heads", "ffn"), [
    (1, 6, 16, 2, 32), (7, 6, 16, 2, 32), (8, 6, 16, 2, 32), (37, 6, 16, 2, 32), (300, 6, 16, 2, 32),
    (45, 7, 16, 2, 32),  # the preference net's M + 1 tokens (compile-time sizes too)
    (19, 4, 16, 4, 24), (10, 2, 8, 1, 8), (33, 10, 12, 3, 20),  # run-time sizes
])
def test_fused_block_matches_pytorch_in_float64(b: int, m: int, d: int, heads: int, ffn: int) -> None:
    blk = _block(d, heads, ffn)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, m, d, generator=g) * 2
    dy = torch.randn(b, m, d, generator=g)
    fused = _grads(blk, x, dy, fused=True)
    ref = _grads(copy.deepcopy(blk).double(), x.double(), dy.double())  # float64: the PyTorch operators
    names = ["y", "x", *(n for n, _ in blk.named_parameters())]
    for name, a, r in zip(names, fused, ref, strict=True):
        assert a.dtype == torch.float32 and a.shape == r.shape, name
        scale = 1.0 + r.abs().max().item()
        assert (a.double() - r).abs().max().item() <= 2e-5 * scale, name


def test_fused_block_saturated_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large tokens make softmax rows near one-hot; a large LayerNorm gain puts the GELU's inputs far in both
    tails (the kernel's own exp and erf; LayerNorm alone would rescale them to a few units). Here float32
    itself loses digits, so the kernel's error is held to PyTorch's own float32 error (times 4)."""
    blk = _block(16, 2, 32)
    with torch.no_grad():
        blk.norm1.weight.mul_(15)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 6, 16, generator=g) * 40
    dy = torch.randn(64, 6, 16, generator=g)
    with torch.no_grad():
        hidden = blk.ff[0](blk.norm1(x + blk.attn(x)[0]))
    assert hidden.abs().max() > 30  # the GELU tails are reached
    fused = _grads(blk, x, dy, fused=True)
    ref = _grads(copy.deepcopy(blk).double(), x.double(), dy.double())
    monkeypatch.setenv("HARMONRANK_FUSED_BLOCK", "0")
    torch32 = _grads(blk, x, dy)
    for a, r, t in zip(fused, ref, torch32, strict=True):
        assert torch.isfinite(a).all()
        assert (a.double() - r).abs().max().item() <= 4 * (t.double() - r).abs().max().item() + 1e-6


def test_fused_block_thread_count_changes_only_rounding() -> None:
    blk = _block(16, 2, 32)
    g = torch.Generator().manual_seed(3)
    x, dy = torch.randn(999, 6, 16, generator=g), torch.randn(999, 6, 16, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(blk, x, dy, fused=True)
        torch.set_num_threads(2)
        two = _grads(blk, x, dy, fused=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])  # per candidate: identical
    for a, b in zip(one[2:], two[2:], strict=True):  # parameter gradients: float32 sums in another order
        assert (a - b).abs().max().item() <= 1e-5 * (1.0 + b.abs().max().item()) * 10


def test_custom_op_registration() -> None:
    """torch.library's own checks of the operator: schema, fake (meta) implementation, autograd registration."""
    blk = _block(16, 2, 32)
    x = torch.randn(21, 6, 16, requires_grad=True)
    attn, ff1, ff2 = blk.attn, blk.ff[0], blk.ff[2]
    params = [torch.cat([attn.q.weight, attn.kv.weight]).detach().requires_grad_(),
              torch.cat([attn.q.bias, attn.kv.bias]).detach().requires_grad_(),
              *(p.detach().requires_grad_() for p in (attn.out.weight, attn.out.bias, blk.norm1.weight,
                                                        blk.norm1.bias, ff1.weight, ff1.bias, ff2.weight, ff2.bias,
                                                        blk.norm2.weight, blk.norm2.bias))]
    torch.library.opcheck(kernels._align_op, (x, params, 2, 1e-5),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def _net_and_batch(b: int = 257) -> tuple[HarmonRankNet, EncodedBatch]:
    torch.manual_seed(0)
    net = HarmonRankNet(EnsembleConfig(objectives=tuple("abcdef"), vocab_sizes=(4, 3), numeric_dim=2))
    g = torch.Generator().manual_seed(4)
    batch = EncodedBatch(torch.rand(b, 6, generator=g, dtype=torch.float64),
                         torch.randint(0, 3, (b, 2), generator=g), torch.randn(b, 2, generator=g))
    return net, batch


def test_net_uses_the_kernel_and_matches_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    net, batch = _net_and_batch()
    calls = []
    real = kernels.align_block
    monkeypatch.setattr(kernels, "align_block", lambda *a: calls.append(1) or real(*a))
    fused = net(batch)
    g_fused = torch.autograd.grad(fused.sum(), list(net.parameters()))
    assert calls, "the default CPU float32 net should use the fused block"
    monkeypatch.setenv("HARMONRANK_FUSED_BLOCK", "0")
    n_calls = len(calls)
    plain = net(batch)
    g_plain = torch.autograd.grad(plain.sum(), list(net.parameters()))
    assert len(calls) == n_calls, "HARMONRANK_FUSED_BLOCK=0 must keep the PyTorch block"
    assert torch.allclose(fused, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # the attention map (analysis, plots) still comes from the PyTorch block
    monkeypatch.setenv("HARMONRANK_FUSED_BLOCK", "1")
    assert net.attention(batch).shape == (257, 6, 6)


@pytest.mark.parametrize("loaded", [True, False])
def test_compiled_graph_keeps_the_kernel_without_a_graph_break(monkeypatch: pytest.MonkeyPatch,
                                                               loaded: bool) -> None:
    """torch.compile sees one custom operator (fullgraph=True fails on any graph break). If the kernel is not
    loaded yet when tracing, the traced graph takes the PyTorch block, again without a break (CompiledOrEager
    loads it first). The aot_eager backend runs the same autograd split the Trainer's inductor compile does,
    without generating C++."""
    if not loaded:  # as in a fresh process that never called the kernel
        monkeypatch.setattr(kernels, "_tried", False)
        monkeypatch.setattr(kernels, "_lib", None)
    calls = []
    real = kernels._forward
    monkeypatch.setattr(kernels, "_forward", lambda *a: calls.append(1) or real(*a))
    net, batch = _net_and_batch(64)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = compiled(batch)
    grads = torch.autograd.grad(out.sum(), list(net.parameters()))
    assert bool(calls) == loaded
    ref = net(batch)
    ref_grads = torch.autograd.grad(ref.sum(), list(net.parameters()))
    assert torch.allclose(out, ref, atol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_compiled_or_eager_loads_the_kernel_before_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    from harmonrank.train import CompiledOrEager

    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_lib", None)
    net, _ = _net_and_batch(8)
    CompiledOrEager(net)
    assert kernels._lib is not None


def test_build_failure_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A compiler that fails raises with its message, and nothing is left in the cache."""
    monkeypatch.setenv("HARMONRANK_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(RuntimeError, match="false failed"):
        kernels._build()
    assert not list(tmp_path.iterdir())


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONRANK_FUSED_BLOCK", "0")
    assert not kernels.available()
    monkeypatch.setenv("HARMONRANK_FUSED_BLOCK", "1")
    assert kernels.available(torch.zeros(2, 6, 16))
    assert not kernels.available(torch.zeros(2, 6, 16, dtype=torch.float64))
    assert not kernels.available(torch.zeros(6, 16))


def test_unwritable_cache_falls_back_to_a_temporary_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HARMONRANK_KERNEL_CACHE", str(blocker / "kernels"))  # cannot be created
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(tmp_path))
    built = kernels._build()
    assert built.parent.parent == tmp_path and built.exists()


def test_inputs_the_kernel_cannot_take_are_refused() -> None:
    blk = _block(16, 2, 32)
    x = torch.randn(5, 6, 16)
    with pytest.raises(ValueError, match="heads must be"):
        kernels.align_block(x, blk, 3)
    with pytest.raises(ValueError, match=r"\(B, M, d\) float32"):
        kernels.align_block(x.double(), blk, 2)
    with pytest.raises(ValueError, match="parameter 0"):
        kernels.align_block(torch.randn(5, 6, 8), blk, 2)  # tokens narrower than the block
    half = copy.deepcopy(blk)
    half.ff.half()
    with pytest.raises(ValueError, match="parameter 6"):
        kernels.align_block(x, half, 2)


def test_compiled_or_eager_leaves_nets_without_the_block_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from harmonrank.models.one_step import OneStepConfig, OneStepNet
    from harmonrank.train import CompiledOrEager

    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_lib", None)
    CompiledOrEager(OneStepNet(OneStepConfig(objectives=("a", "b"))))
    assert not kernels._tried  # no build for a net that cannot use the kernel


def _random_net(seed: int = 0, **kw: object) -> HarmonRankNet:
    torch.manual_seed(seed)
    cfg = {"objectives": ("a", "b", "c", "d", "e", "f"), "vocab_sizes": (4, 6), "numeric_dim": 2, **kw}
    net = HarmonRankNet(EnsembleConfig(**cfg)).eval()  # type: ignore[arg-type]
    with torch.no_grad():  # off the initial values (the gate starts at exact zeros)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        m = len(net.config.objectives)
        net.standardize.set_moments([0.3] * m, [1.7] * m)
    return net


def _users_in_runs(n: int, cfg: EnsembleConfig, seed: int) -> EncodedBatch:
    """Candidates grouped in requests of 1 to 40 rows sharing their user's features; scores at 0 and 1 too."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 41, (n,), generator=g)
    run = torch.repeat_interleave(torch.arange(n), sizes)[:n]
    users = len(run.unique())
    cats = torch.stack([torch.randint(0, v, (users,), generator=g) for v in cfg.vocab_sizes], 1) \
        if cfg.vocab_sizes else torch.zeros(users, 0, dtype=torch.long)
    nums = torch.randn(users, cfg.numeric_dim, generator=g)
    m = len(cfg.objectives)
    scores = torch.rand(n, m, generator=g, dtype=torch.float64)
    scores[:3], scores[3:6] = 0.0, 1.0
    return EncodedBatch(scores, cats[run], nums[run])


@pytest.mark.parametrize("kw", [
    {}, {"gate_branch": False}, {"use_user": False}, {"n_layers": 2},
    {"vocab_sizes": (), "numeric_dim": 3}, {"vocab_sizes": (5,), "numeric_dim": 0},
    {"d_model": 12, "n_heads": 3, "ffn_dim": 20, "n_knots": 5, "head_dim": 24},  # run-time sizes
])
@pytest.mark.parametrize("n", [1, 13, 1000, 6000])
def test_whole_net_kernel_matches_the_network_in_float64(kw: dict, n: int) -> None:  # type: ignore[type-arg]
    """The inference form's kernel pass (tokens, step-1 blocks, cross-attention, head, gate) against the
    trained network's own forward in float64, on requests whose candidates share user features (6,000 rows:
    the large-batch path, torch computing the logits and the user terms of its ~300 users)."""
    net = _random_net(**kw)
    batch = _users_in_runs(n, net.config, seed=n)
    form = net.inference_form()
    assert form._kernel_ok(batch.scores)  # type: ignore[operator]
    with torch.no_grad():
        got = form(batch)
        ref = copy.deepcopy(net).double()(EncodedBatch(batch.scores, batch.categorical, batch.numeric.double()))
    assert got.dtype == torch.float32 and got.shape == (n,)
    assert (got.double() - ref).abs().max().item() <= 2e-5 * (1 + ref.abs().max().item())


def test_whole_net_kernel_thread_split_and_torch_path_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from harmonrank.models.fused import FusedHarmonRank

    net = _random_net(seed=3)
    batch = _users_in_runs(2000, net.config, seed=5)
    form = net.inference_form()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = form(batch)
        torch.set_num_threads(2)
        with torch.no_grad():
            two = form(batch)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # tiles are independent: the split changes nothing
    with torch.no_grad():  # an empty batch: an empty answer
        assert form(EncodedBatch(batch.scores[:0], batch.categorical[:0], batch.numeric[:0])).shape == (0,)
    if kernels._lib.hr_openmp():  # the Python-thread split of a library built without OpenMP: the same
        monkeypatch.setattr(kernels._lib, "hr_openmp", lambda: 0)
        try:
            torch.set_num_threads(2)
            with torch.no_grad():
                assert torch.equal(form(batch), one)
        finally:
            torch.set_num_threads(threads)
        monkeypatch.undo()
    monkeypatch.setattr(FusedHarmonRank, "_kernel_ok", lambda self, scores: False)
    with torch.no_grad():
        torch_path = form(batch)
    torch.testing.assert_close(one, torch_path, rtol=1e-5, atol=2e-5)


def test_whole_net_kernel_refuses_bad_inputs() -> None:
    import numpy as np

    net = _random_net()
    form: Any = net.inference_form()
    plan = form._plan().kernel
    z = np.zeros((20, 6), dtype=np.float32)
    users = np.zeros((1, 16 + 64 + 6), dtype=np.float32)
    idx = np.zeros(20, dtype=np.int64)
    assert plan.run(z, z, idx, users).shape == (20,)
    with pytest.raises(ValueError, match="uidx: values must lie in"):
        plan.run(z, z, idx + 1, users)
    with pytest.raises(ValueError, match="users: expected C-contiguous float32"):
        plan.run(z, z, idx, users[:, :-1])
    with pytest.raises(ValueError, match="z: expected C-contiguous float32"):
        plan.run(z.astype(np.float64), z, idx, users)
    with pytest.raises(ValueError, match="z: expected C-contiguous float32"):
        plan.run(np.asfortranarray(np.zeros((20, 6), dtype=np.float32)), z, idx, users)
    with pytest.raises(ValueError, match="needs logp"):
        plan.run(z, None, idx, users)
    assert plan.run(z[:0], z[:0], idx[:0], users).shape == (0,)
    blk = [p.detach() for p in form.blocks[0].kernel_params]
    with pytest.raises(ValueError, match="whead: expected float32"):
        kernels.ScorePlan([blk], 2, 1e-5, *form.kernel_tok, form.w_head[:, :-1], form.head2.weight[0], 0.0, True)


def test_inference_form_takes_any_layout_copies_and_float64_nets() -> None:
    """Fortran-ordered inputs score like C-ordered ones; a used form deep-copies (its kernel plan, which holds
    raw pointers, is left behind and rebuilt); a float64 net predicts through a float64 form."""
    import numpy as np

    from harmonrank.train import predict_net

    net = _random_net(seed=4)
    batch = _users_in_runs(300, net.config, seed=2)
    form: Any = net.inference_form()
    args = (batch.scores.numpy(), batch.categorical.numpy(), batch.numeric.numpy())
    want = form.score_numpy(*args)
    got = form.score_numpy(*(np.asfortranarray(a) for a in args))
    assert want is not None and np.array_equal(got, want)
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(form)(batch), torch.from_numpy(want))
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        ref = net64(EncodedBatch(batch.scores, batch.categorical, batch.numeric.double()))
    np.testing.assert_allclose(predict_net(net64, EncodedBatch(batch.scores, batch.categorical,
                                                               batch.numeric.double())), ref.numpy(), rtol=1e-9)
