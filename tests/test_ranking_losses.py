"""Ranking losses against loop-over-pairs references written from their formulas, gradients and edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import pairloss
from pairloss import functional as PF
from pairloss.losses import (
    ApproxNDCGLoss,
    CalibratedSoftmaxLoss,
    LambdaLoss,
    LambdaRankLoss,
    ListCELoss,
    ListMLELoss,
    ListNetLoss,
    NeuralNDCGLoss,
    PairwiseHingeLoss,
    PairwiseSoftZeroOneLoss,
    RankNetLoss,
    registered_losses,
)
from pairloss.losses._lists import group_to_lists
from pairloss.pairs import RelevancePairs

# ------------------------------------------------------------------ slow references (plain Python over items)


def _items(s: torch.Tensor, y: torch.Tensor) -> list[list[tuple[float, float, int]]]:
    """Per list: (score, relevance, index) of the real items."""
    return [[(float(s[b, i]), float(y[b, i]), i) for i in range(s.shape[1]) if y[b, i] != -1] for b in range(len(s))]


def _informative(items: list[tuple[float, float, int]]) -> bool:
    return len(items) >= 2 and len({rel for _, rel, _ in items}) > 1


def ref_pairwise(s, y, link, reduction="mean"):
    total, count = 0.0, 0
    for items in _items(s, y):
        for si, yi, _ in items:
            for sj, yj, _ in items:
                if yi > yj:
                    total += link(si - sj)
                    count += 1
    return total if reduction == "sum" else (total / count if count else 0.0)


def _rank_of(items):
    ordered = sorted(items, key=lambda t: -t[0])
    return {idx: r + 1 for r, (_, _, idx) in enumerate(ordered)}


def _idcg(items, k=None):
    gains = sorted((2.0**rel - 1 for _, rel, _ in items), reverse=True)
    return sum(g / math.log2(1 + r) for r, g in enumerate(gains, start=1) if k is None or r <= k)


def ref_lambda(s, y, scheme, k=None, sigma=1.0, mu=10.0, reduction="sum"):
    total, count = 0.0, 0
    for items in _items(s, y):
        if not _informative(items):
            continue
        rank = _rank_of(items)
        idcg = _idcg(items, k)
        for si, yi, i in items:
            for sj, yj, j in items:
                if i == j or (scheme != "ndcg_loss1" and not yi > yj):
                    continue
                ri, rj = rank[i], rank[j]
                if k is not None and (ri > k or rj > k):
                    continue
                gi, gj = (2**yi - 1) / idcg, (2**yj - 1) / idcg
                di, dj = math.log2(1 + ri), math.log2(1 + rj)
                gap = abs(ri - rj)
                delta = 1 / math.log2(1 + gap) - 1 / math.log2(2 + gap)
                lr = abs(1 / di - 1 / dj) * abs(gi - gj)
                w = {
                    None: 1.0,
                    "lambdarank": lr,
                    "ndcg_loss2": delta * abs(gi - gj),
                    "ndcg_loss2pp": mu * delta * abs(gi - gj) + lr,
                    "ndcg_loss1": gi / di,
                }[scheme]
                total += w * math.log2(1 + math.exp(-sigma * (si - sj)))
                count += 1
    return total if reduction == "sum" else (total / count if count else 0.0)


def ref_listnet(s, y):
    losses = []
    for items in _items(s, y):
        if not _informative(items):
            continue
        zt = sum(math.exp(rel) for _, rel, _ in items)
        zs = sum(math.exp(sc) for sc, _, _ in items)
        losses.append(-sum(math.exp(rel) / zt * math.log(math.exp(sc) / zs) for sc, rel, _ in items))
    return sum(losses) / len(losses) if losses else 0.0


def ref_listmle(s, y):
    losses = []
    for items in _items(s, y):
        if not _informative(items):
            continue
        ordered = sorted(items, key=lambda t: (-t[1], t[2]))
        loss = 0.0
        for r in range(len(ordered)):
            loss += math.log(sum(math.exp(sc) for sc, _, _ in ordered[r:])) - ordered[r][0]
        losses.append(loss)
    return sum(losses) / len(losses) if losses else 0.0


def ref_list_ce(s, y):
    losses = []
    for items in _items(s, y):
        if not _informative(items):
            continue
        ysum = sum(rel for _, rel, _ in items)
        zs = sum(math.exp(sc) for sc, _, _ in items)
        losses.append(-sum(rel / ysum * math.log(math.exp(sc) / zs) for sc, rel, _ in items))
    return sum(losses) / len(losses) if losses else 0.0


def ref_calibrated_softmax(s, y, y0=1.0, s0=0.0):
    losses = []
    for items in _items(s, y):
        if not items:
            continue
        z = math.exp(s0) + sum(math.exp(sc) for sc, _, _ in items)
        total = y0 + sum(rel for _, rel, _ in items)
        loss = -y0 / total * math.log(math.exp(s0) / z)
        loss -= sum(rel / total * math.log(math.exp(sc) / z) for sc, rel, _ in items)
        losses.append(loss)
    return sum(losses) / len(losses) if losses else 0.0


def ref_approx_ndcg(s, y, alpha=1.0):
    losses = []
    for items in _items(s, y):
        if not _informative(items):
            continue
        ndcg = 0.0
        for si, yi, i in items:
            pos = 1.0 + sum(1 / (1 + math.exp(alpha * (si - sj))) for sj, _, j in items if j != i)
            ndcg += (2**yi - 1) / math.log2(1 + pos)
        losses.append(1 - ndcg / _idcg(items))
    return sum(losses) / len(losses) if losses else 0.0


def ref_neural_ndcg(s, y, tau=1.0, k=None, iters=50):
    losses = []
    for items in _items(s, y):
        if not _informative(items):
            continue
        n = len(items)
        sc = [t[0] for t in items]
        p = [[0.0] * n for _ in range(n)]
        for r in range(1, n + 1):
            logits = [((n + 1 - 2 * r) * sc[i] - sum(abs(sc[i] - sc[j]) for j in range(n))) / tau for i in range(n)]
            m = max(logits)
            z = sum(math.exp(v - m) for v in logits)
            p[r - 1] = [math.exp(v - m) / z for v in logits]
        for _ in range(iters):
            cols = [sum(p[r][i] for r in range(n)) for i in range(n)]
            p = [[p[r][i] / cols[i] for i in range(n)] for r in range(n)]
            p = [[v / sum(row) for v in row] for row in p]
        gains = [2 ** t[1] - 1 for t in items]
        dcg = sum(sum(p[r][i] * gains[i] for i in range(n)) / math.log2(2 + r) for r in range(n) if k is None or r < k)
        losses.append(1 - dcg / _idcg(items, k))
    return sum(losses) / len(losses) if losses else 0.0


# ------------------------------------------------------------------ fixtures


def _batch(dtype=torch.float64, b=4, length=7, levels=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(b, length, generator=gen, dtype=dtype)
    y = torch.randint(0, levels, (b, length), generator=gen).to(dtype)
    y[0, -2:] = -1  # padding
    y[1, 3] = -1  # padding in the middle
    y[2, :] = 1.0  # all equal: no information
    y[2, -1] = -1
    return s, y


def _softplus(d, sigma=1.0):
    return math.log1p(math.exp(-sigma * d))


CASES = [
    ("ranknet", lambda s, y: PF.ranknet_loss(s, y), lambda s, y: ref_pairwise(s, y, _softplus)),
    (
        "ranknet_sum_sigma",
        lambda s, y: PF.ranknet_loss(s, y, sigma=2.0, reduction="sum"),
        lambda s, y: ref_pairwise(s, y, lambda d: _softplus(d, 2.0), "sum"),
    ),
    (
        "hinge",
        lambda s, y: PF.pairwise_hinge_loss(s, y, margin=0.5),
        lambda s, y: ref_pairwise(s, y, lambda d: max(0.0, 0.5 - d)),
    ),
    (
        "soft01",
        lambda s, y: PF.pairwise_soft_zero_one_loss(s, y),
        lambda s, y: ref_pairwise(s, y, lambda d: 1 / (1 + math.exp(d))),
    ),
    ("listnet", PF.listnet_loss, ref_listnet),
    ("listmle", PF.listmle_loss, ref_listmle),
    ("list_ce", PF.list_ce_loss, ref_list_ce),
    (
        "calibrated_softmax",
        lambda s, y: PF.calibrated_softmax_loss(s, y, virtual_label=0.5, anchor=0.3),
        lambda s, y: ref_calibrated_softmax(s, y, 0.5, 0.3),
    ),
    ("approx_ndcg", lambda s, y: PF.approx_ndcg_loss(s, y, alpha=2.0), lambda s, y: ref_approx_ndcg(s, y, 2.0)),
    ("neural_ndcg", PF.neural_ndcg_loss, ref_neural_ndcg),
    (
        "neural_ndcg_k",
        lambda s, y: PF.neural_ndcg_loss(s, y, temperature=0.5, k=3, sinkhorn_iters=5),
        lambda s, y: ref_neural_ndcg(s, y, 0.5, 3, 5),
    ),
]
for _scheme in (None, "lambdarank", "ndcg_loss1", "ndcg_loss2", "ndcg_loss2pp"):
    for _k in (None, 3):
        CASES.append(
            (
                f"lambda_{_scheme}_{_k}",
                lambda s, y, sc=_scheme, k=_k: PF.lambda_loss(s, y, weighing_scheme=sc, k=k, sigma=1.5),
                lambda s, y, sc=_scheme, k=_k: ref_lambda(s, y, sc, k, sigma=1.5),
            )
        )
CASES.append(
    (
        "lambdarank_mean",
        lambda s, y: PF.lambdarank_loss(s, y, reduction="mean"),
        lambda s, y: ref_lambda(s, y, "lambdarank", reduction="mean"),
    )
)
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "fn", "ref"), CASES, ids=IDS)
def test_matches_reference(name, fn, ref):
    s, y = _batch()
    assert fn(s, y).item() == pytest.approx(ref(s, y), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("name", "fn", "ref"), CASES, ids=IDS)
def test_gradcheck(name, fn, ref):
    s, y = _batch(b=3, length=5, seed=1)
    s.requires_grad_(True)
    if "hinge" in name:  # keep away from the kink
        s = (s.detach() * 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, y), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(("name", "fn", "ref"), CASES, ids=IDS)
def test_padding_gets_no_gradient_and_no_influence(name, fn, ref):
    s, y = _batch()
    s.requires_grad_(True)
    loss = fn(s, y)
    loss.backward()
    pad = y == -1
    assert s.grad is not None and torch.all(s.grad[pad] == 0)
    changed = s.detach().clone()
    changed[pad] = torch.randn(int(pad.sum()), dtype=s.dtype) * 100
    assert fn(changed, y).item() == pytest.approx(loss.item(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "fn", "ref"), [c for c in CASES if c[0] != "calibrated_softmax"], ids=IDS[:7] + IDS[8:]
)
def test_uninformative_lists_give_zero(name, fn, ref):
    cases = [
        (torch.tensor([[0.3]]), torch.tensor([[2.0]])),  # one item
        (torch.tensor([[0.3, -1.2, 4.0]]), torch.tensor([[1.0, 1.0, 1.0]])),  # all equal
        (torch.tensor([[0.3, 2.0]]), torch.tensor([[-1.0, -1.0]])),  # only padding
        (torch.zeros(0, 3), torch.zeros(0, 3)),  # no list
    ]
    for s, y in cases:
        s = s.double().requires_grad_(True)
        loss = fn(s, y.double())
        assert loss.item() == 0.0
        loss.backward()
        assert s.grad is not None and torch.all(s.grad == 0) and torch.isfinite(s.grad).all()


def test_calibrated_softmax_counts_single_and_all_zero_lists():
    s = torch.tensor([[0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    loss = PF.calibrated_softmax_loss(s, y)
    assert loss.item() == pytest.approx(ref_calibrated_softmax(s.detach(), y))
    loss.backward()
    assert s.grad is not None and torch.all(s.grad > 0)  # pushes scores of a list without clicks down
    one = torch.tensor([[0.7]], dtype=torch.float64)
    assert PF.calibrated_softmax_loss(one, torch.tensor([[1.0]])).item() == pytest.approx(
        ref_calibrated_softmax(one, torch.tensor([[1.0]]))
    )


def test_flat_group_form_equals_padded_form():
    gen = torch.Generator().manual_seed(3)
    groups = torch.tensor([5, 2, 5, 9, 2, 2, 5, 9, 7])
    s = torch.randn(9, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 0, 0, 2, 1, 3, 2, 0, 1])
    padded_s, padded_y, index = group_to_lists(s, y.double(), groups)
    assert padded_s.shape == (4, 3)
    assert torch.equal(padded_s.reshape(-1)[index], s)
    assert torch.equal(padded_y[0], torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64))  # group 2, input order
    assert torch.equal(padded_y[2], torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # group 7
    for fn in (PF.ranknet_loss, PF.lambdarank_loss, PF.listnet_loss, PF.neural_ndcg_loss):
        flat = fn(s, y, groups)
        ref = fn(padded_s.detach(), padded_y)
        assert flat.item() == pytest.approx(ref.item(), rel=1e-12)
    flat = PF.ranknet_loss(s, y, groups)
    (grad,) = torch.autograd.grad(flat, s)
    dense = padded_s.detach().requires_grad_(True)
    (dense_grad,) = torch.autograd.grad(PF.ranknet_loss(dense, padded_y), dense)
    assert torch.allclose(grad, dense_grad.reshape(-1)[index])


@pytest.mark.parametrize("fn", [PF.ranknet_loss, PF.lambda_loss, PF.approx_ndcg_loss, PF.neural_ndcg_loss])
def test_chunked_equals_unchunked(fn):
    s, y = _batch(b=6, length=9)
    s.requires_grad_(True)
    full = fn(s, y)
    (g_full,) = torch.autograd.grad(full, s)
    with pairloss.memory_budget(1):  # one list per block (under checkpointing for the listwise losses)
        chunked = fn(s, y)
    (g_chunk,) = torch.autograd.grad(chunked, s)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-12)
    assert torch.allclose(g_full, g_chunk)


def test_modules_match_functions_and_are_registered():
    s, y = _batch()
    pairs = [
        (RankNetLoss(sigma=2.0), PF.ranknet_loss(s, y, sigma=2.0)),
        (PairwiseHingeLoss(), PF.pairwise_hinge_loss(s, y)),
        (PairwiseSoftZeroOneLoss(), PF.pairwise_soft_zero_one_loss(s, y)),
        (LambdaLoss("ndcg_loss2", k=4), PF.lambda_loss(s, y, weighing_scheme="ndcg_loss2", k=4)),
        (LambdaRankLoss(), PF.lambdarank_loss(s, y)),
        (ListNetLoss(), PF.listnet_loss(s, y)),
        (ListMLELoss(), PF.listmle_loss(s, y)),
        (ListCELoss(), PF.list_ce_loss(s, y)),
        (CalibratedSoftmaxLoss(), PF.calibrated_softmax_loss(s, y)),
        (ApproxNDCGLoss(), PF.approx_ndcg_loss(s, y)),
        (NeuralNDCGLoss(k=3), PF.neural_ndcg_loss(s, y, k=3)),
    ]
    registry = registered_losses()
    for module, expected in pairs:
        assert module(s, y).item() == pytest.approx(expected.item(), rel=1e-12)
        assert type(module).__name__ in registry and type(module).family == "ranking"


def test_float32_follows_input_dtype():
    s, y = _batch(dtype=torch.float32)
    assert PF.lambdarank_loss(s, y).dtype == torch.float32
    assert PF.neural_ndcg_loss(s, y).dtype == torch.float32


@pytest.mark.parametrize(
    ("scores", "relevance", "message"),
    [
        (torch.tensor([[0.1, float("nan")]]), torch.tensor([[1.0, 0.0]]), "NaN or infinite"),
        (torch.tensor([[0.1, float("inf")]]), torch.tensor([[1.0, 0.0]]), "NaN or infinite"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([[1.0, float("nan")]]), "relevance contains NaN"),
        (torch.tensor([0.1, 0.2]), torch.tensor([1.0, 0.0]), "2 dimensions"),
        (torch.tensor([[1, 2]]), torch.tensor([[1.0, 0.0]]), "floating-point"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([[1.0, 0.0, 2.0]]), "shape"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([[1.0, -2.0]]), "or -1 to mark"),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([[True, False]]), "real integer or floating"),
        ([[0.1, 0.2]], torch.tensor([[1.0, 0.0]]), "torch.Tensor"),
    ],
)
def test_bad_inputs_raise(scores, relevance, message):
    with pytest.raises(ValueError, match=message):
        PF.ranknet_loss(scores, relevance)


def test_padded_scores_may_be_infinite():
    s = torch.tensor([[0.1, -0.4, -math.inf]])
    y = torch.tensor([[1.0, 0.0, -1.0]])
    assert math.isfinite(PF.lambdarank_loss(s, y).item())


def test_bad_group_inputs_and_options_raise():
    s = torch.randn(4)
    with pytest.raises(ValueError, match="group_ids must be a 1-D integer"):
        PF.ranknet_loss(s, torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        PF.ranknet_loss(s, torch.ones(4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 0"):
        PF.ranknet_loss(s, -torch.ones(4), torch.zeros(4, dtype=torch.long))
    s2, y2 = _batch()
    with pytest.raises(ValueError, match="weighing_scheme"):
        PF.lambda_loss(s2, y2, weighing_scheme="ndcg")
    with pytest.raises(ValueError, match="k must be"):
        PF.lambda_loss(s2, y2, k=0)
    with pytest.raises(ValueError, match="sigma"):
        PF.ranknet_loss(s2, y2, sigma=0.0)
    with pytest.raises(ValueError, match="reduction"):
        PF.ranknet_loss(s2, y2, reduction="none")


@pytest.mark.parametrize("fn", [PF.ranknet_loss, PF.lambda_loss, PF.lambdarank_loss])
def test_blocks_shared_by_threads_give_the_single_thread_result(fn) -> None:
    """On the CPU the logistic pair sums share their blocks between threads; the value and gradient are the same
    as on one thread (each block's sum has its own slot), also under inference mode, and the thread count is
    restored after the call."""
    s, y = _batch(b=9, length=6, seed=3)
    threads = torch.get_num_threads()

    def value_and_grad(n_threads: int) -> tuple[Tensor, Tensor]:
        torch.set_num_threads(n_threads)
        leaf = s.clone().requires_grad_(True)
        with pairloss.memory_budget(3 * 36 * 8 * 2):  # two lists per block: five blocks
            value = fn(leaf, y)
        value.backward()
        assert torch.get_num_threads() == n_threads
        return value.detach(), leaf.grad

    try:
        one, shared = value_and_grad(1), value_and_grad(2)
        with torch.inference_mode(), pairloss.memory_budget(3 * 36 * 8 * 2):
            inferred = fn(s, y)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], shared[0]) and torch.equal(one[1], shared[1])
    assert torch.equal(inferred, one[0])


@pytest.mark.parametrize("threshold", [None, 1.5])
def test_relevance_pair_count_is_the_number_of_masked_pairs(threshold) -> None:
    _, y = _batch(b=6, length=9, seed=4)
    valid = y != -1
    pairs = RelevancePairs(threshold)
    assert int(pairs.count(y, valid)) == int(pairs.mask(y, valid).sum()) > 0
