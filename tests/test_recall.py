"""RS@k, Smooth-AP and SiMix against loop references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import functional
from pairloss.losses import RecallAtKSurrogateLoss, SmoothAPLoss, registered_losses
from pairloss.losses.recall import recall_at_k_surrogate_loss, simix, smooth_ap_loss


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids waiting on a second, busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rsk_reference(
    emb,
    labels,
    ref=None,
    ref_labels=None,
    k=(1, 2, 4, 8, 16),
    tau1=1.0,
    tau2=0.01,
    code=False,
    normalise=True,
):
    """Explicit loops over queries, positives and the other items (paper's formula, or the authors'
    code's)."""
    q = (F.normalize(emb.double(), dim=1) if normalise else emb.double()).tolist()
    self_pairs = ref is None
    r = q if self_pairs else F.normalize(ref.double(), dim=1).tolist()
    ql = labels.tolist()
    rl = ql if self_pairs else ref_labels.tolist()
    total, count = 0.0, 0
    for i in range(len(q)):
        s = [sum(a * b for a, b in zip(q[i], r[j])) for j in range(len(r))]
        others = [j for j in range(len(r)) if not (self_pairs and j == i)]
        positives = [j for j in others if rl[j] == ql[i]]
        if not positives:
            continue
        counted = list(range(len(r))) if (code and self_pairs) else others
        loss_q = 0.0
        for kk in k:
            numerator = 0.0
            for x in positives:
                rank = 1.0 + sum(sigmoid((s[z] - s[x]) / tau2) for z in counted if z != x)
                numerator += sigmoid((kk - rank) / tau1)
            if code:
                numerator = min(numerator, kk)
            loss_q += 1.0 - numerator / min(kk, len(positives))
        total += loss_q / len(k)
        count += 1
    return total / max(count, 1)


def smooth_ap_reference(emb, labels, tau=0.01):
    q = F.normalize(emb.double(), dim=1).tolist()
    lab = labels.tolist()
    total, count = 0.0, 0
    for i in range(len(q)):
        s = [sum(a * b for a, b in zip(q[i], q[j])) for j in range(len(q))]
        others = [j for j in range(len(q)) if j != i]
        positives = [j for j in others if lab[j] == lab[i]]
        if not positives:
            continue
        ap = 0.0
        for x in positives:
            pos_rank = 1.0 + sum(sigmoid((s[z] - s[x]) / tau) for z in positives if z != x)
            all_rank = 1.0 + sum(sigmoid((s[z] - s[x]) / tau) for z in others if z != x)
            ap += pos_rank / all_rank
        total += 1.0 - ap / len(positives)
        count += 1
    return total / max(count, 1)


def batch(n=12, d=5, classes=3, dtype=torch.float64):
    return torch.randn(n, d, dtype=dtype), torch.arange(n) % classes


@pytest.mark.parametrize("code", [False, True])
@pytest.mark.parametrize("tau2", [0.01, 0.3])
def test_rsk_matches_loop_reference(code: bool, tau2: float) -> None:
    emb, labels = batch()
    got = recall_at_k_surrogate_loss(emb, labels, tau2=tau2, code_variant=code)
    assert got.item() == pytest.approx(rsk_reference(emb, labels, tau2=tau2, code=code), abs=1e-10)


def test_rsk_code_variant_differs_from_paper() -> None:
    emb, labels = batch()
    paper = recall_at_k_surrogate_loss(emb, labels, tau2=0.3)
    code = recall_at_k_surrogate_loss(emb, labels, tau2=0.3, code_variant=True)
    assert code.item() > paper.item() + 1e-3  # ranks one higher => lower recall


def test_rsk_reference_set_matches_loop() -> None:
    emb, labels = batch(8)
    ref, ref_labels = torch.randn(10, 5, dtype=torch.float64), torch.arange(10) % 4
    got = recall_at_k_surrogate_loss(emb, labels, ref_emb=ref, ref_labels=ref_labels, k=(1, 3), tau2=0.2)
    want = rsk_reference(emb, labels, ref, ref_labels, k=(1, 3), tau2=0.2)
    assert got.item() == pytest.approx(want, abs=1e-10)


def test_smooth_ap_matches_loop_reference() -> None:
    emb, labels = batch(10)
    for tau in (0.01, 0.5):
        got = smooth_ap_loss(emb, labels, tau=tau)
        assert got.item() == pytest.approx(smooth_ap_reference(emb, labels, tau), abs=1e-10)


def test_smooth_ap_perfect_ranking_is_zero() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]], dtype=torch.float64)
    assert smooth_ap_loss(emb, labels, tau=1e-4).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("block_size", "budget"), [(1, 2**20), (7, 2000), (30, 2000)])
def test_blocked_and_chunked_equal_dense(block_size: int, budget: int) -> None:
    emb, labels = torch.randn(30, 6, dtype=torch.float64), torch.arange(30) % 4
    for fn in (recall_at_k_surrogate_loss, smooth_ap_loss):
        dense_emb = emb.clone().requires_grad_()
        dense = fn(dense_emb, labels, block_size=30)
        dense.backward()
        blocked_emb = emb.clone().requires_grad_()
        with pairloss.memory_budget(budget):
            blocked = fn(blocked_emb, labels, block_size=block_size)
        blocked.backward()
        assert blocked.item() == pytest.approx(dense.item(), abs=1e-6)
        assert torch.allclose(blocked_emb.grad, dense_emb.grad, atol=1e-6)


def test_gradcheck() -> None:
    emb = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    assert torch.autograd.gradcheck(lambda e: recall_at_k_surrogate_loss(e, labels, k=(1, 2), tau2=0.5), (emb,))
    assert torch.autograd.gradcheck(
        lambda e: recall_at_k_surrogate_loss(e, labels, tau2=0.5, code_variant=True, block_size=2), (emb,)
    )
    assert torch.autograd.gradcheck(lambda e: smooth_ap_loss(e, labels, tau=0.5, block_size=3), (emb,))
    ref = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 2, 2, 5])
    assert torch.autograd.gradcheck(
        lambda e, r: recall_at_k_surrogate_loss(e, labels, ref_emb=r, ref_labels=ref_labels, tau2=0.5), (emb, ref)
    )


@pytest.mark.parametrize("fn", [recall_at_k_surrogate_loss, smooth_ap_loss])
def test_no_positive_gives_zero_loss_and_gradient(fn) -> None:
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    loss = fn(emb, torch.arange(5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("fn", [recall_at_k_surrogate_loss, smooth_ap_loss])
def test_query_without_positive_contributes_nothing(fn) -> None:
    emb, labels = batch(9)
    lonely = torch.cat([labels, torch.tensor([99])])
    extended = torch.cat([emb, torch.randn(1, 5, dtype=torch.float64)])
    # The lonely item is a negative for the others, so compare with the loop reference rather than the 9
    # items.
    want = rsk_reference(extended, lonely) if fn is recall_at_k_surrogate_loss else None
    got = fn(extended, lonely)
    assert torch.isfinite(got)
    if want is not None:
        assert got.item() == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("fn", [recall_at_k_surrogate_loss, smooth_ap_loss])
def test_one_class_and_single_item(fn) -> None:
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    loss = fn(emb, torch.zeros(6, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    single = fn(torch.randn(1, 3), torch.zeros(1, dtype=torch.long))
    assert single.item() == 0.0


def test_one_class_rsk_is_zero_when_k_covers_everything() -> None:
    # every positive is within rank 5 < k = 16 ... 16 items ranked with all positives: recall ~ 1 for large k
    emb = torch.randn(4, 3, dtype=torch.float64)
    loss = recall_at_k_surrogate_loss(emb, torch.zeros(4, dtype=torch.long), k=(50,), tau1=0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("fn", [recall_at_k_surrogate_loss, smooth_ap_loss])
def test_invalid_inputs(fn) -> None:
    emb, labels = batch(4)
    bad = emb.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(bad, labels)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(bad, labels)
    with pytest.raises(ValueError, match="2 dimensions"):
        fn(emb[0], labels)
    with pytest.raises(ValueError, match="entries"):
        fn(emb, labels[:3])
    with pytest.raises(ValueError, match="floating-point"):
        fn(emb.long(), labels)
    with pytest.raises(ValueError, match="integer class ids"):
        fn(emb, labels.double())


def test_invalid_hyper_parameters() -> None:
    emb, labels = batch(4)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k_surrogate_loss(emb, labels, k=(0,))
    with pytest.raises(ValueError, match="tau2"):
        recall_at_k_surrogate_loss(emb, labels, tau2=0.0)
    with pytest.raises(ValueError, match="tau"):
        smooth_ap_loss(emb, labels, tau=-1.0)
    with pytest.raises(ValueError, match="indices_tuple"):
        smooth_ap_loss(emb, labels, (labels, labels, labels))
    with pytest.raises(ValueError, match="ref_emb="):  # a reference set passed where PML's call has indices_tuple
        recall_at_k_surrogate_loss(emb, labels, emb, labels)
    with pytest.raises(ValueError, match="use_simix"):
        recall_at_k_surrogate_loss(emb, labels, ref_emb=emb, ref_labels=labels, use_simix=True)


def test_simix_pairs_and_similarity_mixing() -> None:
    emb = F.normalize(torch.randn(12, 4, dtype=torch.float64), dim=1)
    for per_class, expected in ((3, 3), (4, 6), (6, 15)):
        labels = torch.arange(2 * per_class) // per_class
        virtual, virtual_labels = simix(emb[: 2 * per_class], labels)
        assert virtual.shape == (2 * expected, 4)
        assert torch.equal(torch.bincount(virtual_labels), torch.tensor([expected, expected]))
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    generator = torch.Generator().manual_seed(3)
    virtual, virtual_labels = simix(emb[:6], labels, generator=generator)
    alpha = torch.rand(4, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pairs = [(0, 1), (3, 4), (3, 5), (4, 5)]
    q = emb[6:]
    for m, (a, b) in enumerate(pairs):
        assert virtual_labels[m].item() == labels[a].item()
        mixed = alpha[m] * (q @ emb[a]) + (1 - alpha[m]) * (q @ emb[b])
        assert torch.allclose(q @ virtual[m], mixed, atol=1e-12)
    capped, _ = simix(emb, torch.zeros(12, dtype=torch.long), max_pairs_per_class=5)
    assert capped.shape[0] == 5
    none, none_labels = simix(emb[:3], torch.arange(3))
    assert none.shape == (0, 4) and none_labels.numel() == 0


def test_simix_loss_equals_loss_on_augmented_batch() -> None:
    emb, labels = batch(9)
    torch.manual_seed(5)
    got = recall_at_k_surrogate_loss(emb, labels, use_simix=True, tau2=0.2)
    torch.manual_seed(5)
    normalised = F.normalize(emb, dim=1)
    virtual, virtual_labels = simix(normalised, labels)
    # The virtual samples are not re-normalised: s(q, v) is exactly the mix of the two similarities.
    augmented, augmented_labels = torch.cat([normalised, virtual]), torch.cat([labels, virtual_labels])
    want = rsk_reference(augmented, augmented_labels, tau2=0.2, normalise=False)
    assert virtual.shape[0] == 9
    assert got.item() == pytest.approx(want, abs=1e-10)
    torch.manual_seed(5)
    assert torch.isfinite(smooth_ap_loss(emb, labels, use_simix=True))


def test_modules_registered_and_device_dtype() -> None:
    losses = registered_losses()
    assert losses["RecallAtKSurrogateLoss"].family == "recall"
    assert losses["SmoothAPLoss"].family == "recall"
    assert functional.recall_at_k_surrogate_loss is recall_at_k_surrogate_loss
    emb, labels = batch(8, dtype=torch.float32)
    for module in (RecallAtKSurrogateLoss(k=(1, 2)), SmoothAPLoss(), RecallAtKSurrogateLoss(use_simix=True)):
        out = module(emb, labels)
        assert out.dtype == torch.float32 and out.device == emb.device and torch.isfinite(out)
    assert RecallAtKSurrogateLoss(k=(1, 2))(emb, labels).item() == pytest.approx(
        rsk_reference(emb, labels, k=(1, 2)), abs=1e-5
    )


def rsk_dense(emb, labels, k=(1, 2, 4, 8, 16), tau1=1.0, tau2=0.01):
    """The paper's RS@k on the whole [N, N, N] tensor under plain autograd (a dense reference)."""
    x = F.normalize(emb, dim=1)
    s = x @ x.T
    n = s.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    # above[q, x, z] = σ((s_qz − s_qx)/τ2) for z ∉ {q, x}
    above = torch.sigmoid((s[:, None, :] - s[:, :, None]) / tau2)
    keep = ~eye[:, None, :] & ~eye[None, :, :]
    rank = 1 + (above * keep).sum(2)
    ks = torch.tensor(k, dtype=s.dtype)
    soft = torch.sigmoid((ks[None, None, :] - rank[:, :, None]) / tau1) * positive[:, :, None]
    n_pos = positive.sum(1).to(s.dtype)
    recall = soft.sum(1) / torch.minimum(ks[None, :], n_pos[:, None]).clamp_min(1)
    has = n_pos > 0
    return (1 - recall).mean(1)[has].mean()


def test_engine_rsk_equals_dense_tensor_version() -> None:
    emb = torch.randn(40, 8, dtype=torch.float64)
    labels = torch.arange(40) % 6
    dense_emb = emb.clone().requires_grad_()
    dense = rsk_dense(dense_emb, labels)
    dense.backward()
    blocked_emb = emb.clone().requires_grad_()
    with pairloss.memory_budget(3000):
        blocked = recall_at_k_surrogate_loss(blocked_emb, labels, block_size=6)
    blocked.backward()
    assert blocked.item() == pytest.approx(dense.item(), abs=1e-6)
    assert torch.allclose(blocked_emb.grad, dense_emb.grad, atol=1e-6)
