from __future__ import annotations

import numpy as np
import pytest
import torch

from harmonrank.errors import ConfigError
from harmonrank.features import EncodedBatch
from harmonrank.models.harmonrank import EnsembleConfig, HarmonRankNet
from harmonrank.models.losses import BCELoss, PairwiseLogisticLoss, RankLoss, make_loss
from harmonrank.models.one_step import OneStepConfig, OneStepNet
from harmonrank.ranking import soft_auc
from reference import auc_pairs

OBJ = ("click", "like", "buy")


def _inputs(b: int = 64, seed: int = 0) -> EncodedBatch:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(b, 3, generator=g) * 0.2
    cat = torch.randint(0, 4, (b, 2), generator=g)
    num = torch.randn(b, 2, generator=g)
    return EncodedBatch(p, cat, num)


@pytest.mark.parametrize("use_user", [True, False])
def test_harmonrank_shapes_and_attention(use_user: bool) -> None:
    net = HarmonRankNet(EnsembleConfig(objectives=OBJ, vocab_sizes=(4, 4), numeric_dim=2, use_user=use_user))
    batch = _inputs()
    s = net(batch)
    assert s.shape == (64,) and torch.isfinite(s).all()
    s2, attn = net._run(batch, need_weights=True)
    torch.testing.assert_close(s, s2, rtol=1e-5, atol=1e-5)  # explicit-attention path == fused kernel path
    torch.testing.assert_close(net.attention(batch), attn)
    assert attn.shape == (64, 3, 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(64, 3))
    s.sum().backward()
    assert all(prm.grad is not None for prm in net.parameters())


def test_user_features_matter_only_with_personalisation() -> None:
    batch = _inputs()
    other = EncodedBatch(batch.scores, (batch.categorical + 1) % 4, batch.numeric + 1.0)
    for use_user, changes in ((True, True), (False, False)):
        torch.manual_seed(0)
        net = HarmonRankNet(EnsembleConfig(objectives=OBJ, vocab_sizes=(4, 4), numeric_dim=2, use_user=use_user))
        a = net(batch)
        b = net(other)
        assert (not torch.allclose(a, b)) == changes


def test_gate_starts_as_the_equal_weight_product() -> None:
    net = HarmonRankNet(EnsembleConfig(objectives=OBJ))
    gate = torch.nn.functional.softplus(net.gate.bias)
    torch.testing.assert_close(gate, torch.ones(3), atol=1e-4, rtol=0)


def test_one_step_shapes() -> None:
    net = OneStepNet(OneStepConfig(objectives=OBJ, vocab_sizes=(4, 4), numeric_dim=2))
    assert net(_inputs()).shape == (64,)


def test_losses_against_references() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(200, generator=g, dtype=torch.float64)
    y = (torch.rand(200, 3, generator=g) < 0.2).double()
    group = torch.arange(200) // 20
    w = [1.0, 2.0, 1.0]
    rank = RankLoss(w)(s, y, group)
    assert rank.item() == pytest.approx(-(soft_auc(s, y) * torch.tensor(w, dtype=torch.float64)).sum().item() / 4)
    pair = PairwiseLogisticLoss(w, chunk=50)(s, y, group)
    ref = 0.0
    for m in range(3):
        sp, sn = s[y[:, m] > 0].numpy(), s[y[:, m] == 0].numpy()
        ref += w[m] * np.mean([np.log1p(np.exp(-(a - b))) for a in sp for b in sn])
    assert pair.item() == pytest.approx(ref / 4, rel=1e-9)
    bce = BCELoss(w).double()(s, y, group)
    z = (s[:, None] - 3.0).expand(-1, 3)  # initial slope 1, bias -3
    ref_bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none").mean(0)
    assert bce.item() == pytest.approx(float((ref_bce * torch.tensor(w, dtype=torch.float64)).sum() / 4), rel=1e-6)
    # pairwise logistic ranks like AUC: a perfect score gives a lower loss than a random one
    perfect = y[:, 0] * 5.0
    assert PairwiseLogisticLoss([1.0])(perfect, y[:, :1], group) < PairwiseLogisticLoss([1.0])(s, y[:, :1], group)
    assert auc_pairs(perfect.numpy(), y[:, 0].numpy()) == 1.0
    with pytest.raises(ConfigError, match="loss must be"):
        make_loss("hinge", w)


@pytest.mark.parametrize("kw", [
    {},
    {"use_user": False},
    {"gate_branch": False},
    {"n_layers": 2, "n_heads": 4},
    {"vocab_sizes": (), "numeric_dim": 0},
    {"vocab_sizes": (5,), "numeric_dim": 0},
    {"vocab_sizes": (), "numeric_dim": 4},
])
def test_fused_inference_form_computes_the_same_scores(kw: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    """The folding is exact algebra: in float64 both forms agree to 1e-9 (float32 only adds rounding)."""
    import harmonrank.models.fused as fused_mod
    import harmonrank.models.harmonrank as hr_mod
    from harmonrank.models.common import LogitStandardizer
    from harmonrank.models.fused import FusedHarmonRank

    def standardize64(self: LogitStandardizer, scores: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(scores.double(), self.bounds[0], self.bounds[1])
        return (torch.log(q) - torch.log1p(-q) - self.mean) / self.std

    def log64(scores: torch.Tensor) -> torch.Tensor:
        return torch.log(scores.double().clamp(1e-6, 1.0))

    monkeypatch.setattr(LogitStandardizer, "forward", standardize64)
    monkeypatch.setattr(fused_mod, "log_scores", log64)
    monkeypatch.setattr(hr_mod, "log_scores", log64)
    torch.manual_seed(0)
    cfg = {"objectives": OBJ, "vocab_sizes": (4, 6), "numeric_dim": 2, **kw}
    net = HarmonRankNet(EnsembleConfig(**cfg)).double().eval()
    with torch.no_grad():  # move every parameter off its initial value (the gate starts at exact zeros)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        net.standardize.set_moments([0.3] * len(OBJ), [1.7] * len(OBJ))
    n = 500
    scores = torch.rand(n, len(OBJ), dtype=torch.float64)
    scores[:5], scores[5:10] = 0.0, 1.0
    cats = torch.stack([torch.randint(0, v, (n,)) for v in cfg["vocab_sizes"]], 1) if cfg["vocab_sizes"] else \
        torch.zeros(n, 0, dtype=torch.long)
    nums = torch.randn(n, cfg["numeric_dim"], dtype=torch.float64)
    fused = FusedHarmonRank(net, dtype=torch.float64).double().eval()
    with torch.no_grad():
        want = net(EncodedBatch(scores, cats, nums))
        got = fused(EncodedBatch(scores, cats, nums))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert not any(p.requires_grad for p in fused.parameters())  # an inference form: nothing in it trains


def test_cross_attention_equals_the_per_token_textbook_form() -> None:
    """The key projection moved to the query side and the value projection after pooling: exact algebra."""
    from harmonrank.models.harmonrank import _CrossAttention

    torch.manual_seed(0)
    d = 16
    cross = _CrossAttention(d).double()
    user = torch.randn(50, d, dtype=torch.float64, requires_grad=True)
    tokens = torch.randn(50, 6, d, dtype=torch.float64, requires_grad=True)
    got, w = cross(user, tokens)
    k, v = cross.kv(tokens).chunk(2, dim=-1)  # per-token projections, (B, M, d) each
    att = torch.softmax((k * cross.q(user)[:, None, :]).sum(-1) / d**0.5, dim=-1)
    want = cross.out((att[..., None] * v).sum(1))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w, att, rtol=1e-12, atol=1e-12)
    g1 = torch.autograd.grad(got.square().sum(), [user, tokens, cross.kv.weight, cross.kv.bias])
    g2 = torch.autograd.grad(want.square().sum(), [user, tokens, cross.kv.weight, cross.kv.bias])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_broadcast_attention_used_under_compile_equals_the_eager_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step-1 attention written for torch.compile (broadcasts) computes what the eager SDPA path does."""
    torch.manual_seed(0)
    net = HarmonRankNet(EnsembleConfig(objectives=OBJ, vocab_sizes=(4, 4), numeric_dim=2, n_heads=2))
    batch = _inputs()
    eager = net(batch)
    g_eager = torch.autograd.grad(eager.sum(), list(net.parameters()))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    bcast = net(batch)
    g_bcast = torch.autograd.grad(bcast.sum(), list(net.parameters()))
    torch.testing.assert_close(bcast, eager, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_bcast, g_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
