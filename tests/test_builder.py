"""The builder: a loss assembled from the public parts equals its loop reference, runs on the engine in bounded
memory and gets its gradient from the link's derivative (no backward replay)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import pairloss
import reference_loops as ref
from pairloss import engine, functional, links, pairs, reducers, weights
from pairloss.builder import PairLossSpec
from pairloss.similarity import CosineSimilarity, LpDistance


def _batch(n: int = 12, d: int = 4, classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


def _softplus(x: float) -> float:
    return x if x > 30 else math.log1p(math.exp(x))


class _Spy:
    """Records the rows of every engine block and whether the backward replayed a block."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blocks: list[int] = []
        original = engine._Plan.block_result

        def block_result(plan: engine._Plan, query: Tensor, *args: object) -> object:
            self.blocks.append(query.shape[0])
            return original(plan, query, *args)  # type: ignore[arg-type]

        def no_replay(*args: object, **kwargs: object) -> None:
            raise AssertionError("the backward replayed a block")

        monkeypatch.setattr(engine._Plan, "block_result", block_result)
        monkeypatch.setattr(engine, "_replay", no_replay)


def test_write_your_own_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs page "Write your own loss": a soft contrastive loss with a logistic link on cosine similarities."""
    embeddings, labels = _batch(40, 6, classes=5)
    # --- the five lines of the docs page (docs/write-your-own-loss.md)
    from pairloss import links

    soft_contrastive = pairloss.pair_loss(links.Logistic(sigma=10.0), pos_margin=0.5, neg_margin=0.5)
    loss = soft_contrastive(embeddings, labels)
    # ---
    logistic = lambda z: _softplus(-10.0 * z)  # noqa: E731
    expected = ref.pair_loss(ref.Pairs(embeddings, labels, score="cosine"), logistic, pos_margin=0.5, neg_margin=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-12)

    spy = _Spy(monkeypatch)
    leaf = embeddings.clone().requires_grad_(True)
    with pairloss.memory_budget(40 * 8 * 6 * 5):  # five rows of six [b, 40] float64 temporaries per block
        blocked = soft_contrastive(leaf, labels)
    n_forward_blocks = len(spy.blocks)
    blocked.backward()
    assert blocked.item() == pytest.approx(expected, rel=1e-12)
    assert max(spy.blocks) <= 5 and n_forward_blocks >= 8  # bounded: never the whole 40 × 40 matrix
    assert len(spy.blocks) == n_forward_blocks  # the backward evaluated no block again
    dense = embeddings.clone().requires_grad_(True)
    (dense_grad,) = torch.autograd.grad(_soft_contrastive_dense(dense, labels), dense)
    torch.testing.assert_close(leaf.grad, dense_grad, rtol=1e-10, atol=1e-12)
    check = embeddings[:9].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: soft_contrastive(e, labels[:9]), (check,))


def _soft_contrastive_dense(x: Tensor, y: Tensor) -> Tensor:
    """The same loss written densely with autograd (a second reference, for the gradient)."""
    s = CosineSimilarity()(x)
    eye = torch.eye(len(y), dtype=torch.bool)
    positive = (y[:, None] == y[None, :]) & ~eye
    negative = y[:, None] != y[None, :]
    pos = torch.nn.functional.softplus(-10 * (s - 0.5))[positive].mean()
    neg = torch.nn.functional.softplus(-10 * (0.5 - s))[negative].mean()
    return pos + neg


PAIR_LINKS: dict[str, tuple[links.Link, Callable[[float], float]]] = {
    "logistic": (links.Logistic(2.0), lambda z: _softplus(-2.0 * z)),
    "hinge": (links.Hinge(0.1), lambda z: max(0.1 - z, 0.0)),
    "scaled_hinge": (0.5 * links.Hinge(0.2), lambda z: 0.5 * max(0.2 - z, 0.0)),
    "squared_hinge": (links.SquaredHinge(0.2), lambda z: max(0.2 - z, 0.0) ** 2),
    "exponential": (links.Exponential(1.5), lambda z: math.exp(-1.5 * z)),
    "sigmoid_rank": (links.SigmoidRank(0.5), lambda z: 1 / (1 + math.exp(z / 0.5))),
    "softplus": (links.Softplus(0.1, 2.0), lambda z: _softplus(2.0 * (0.1 - z)) / 2.0),
    "linear": (links.Linear(), lambda z: -z),
}

REDUCERS: dict[str, tuple[reducers.Reducer, dict[str, object]]] = {
    "mean": (reducers.MeanReducer(), {"reducer": "mean"}),
    "sum": (reducers.SumReducer(), {"reducer": "sum"}),
    "avg_non_zero": (reducers.AvgNonZeroReducer(), {"reducer": "threshold", "low": 0.0}),
    "threshold": (reducers.ThresholdReducer(0.05, 0.6), {"reducer": "threshold", "low": 0.05, "high": 0.6}),
    "below": (reducers.ThresholdReducer(high=0.3), {"reducer": "threshold", "high": 0.3}),
}


@pytest.mark.parametrize("link", sorted(PAIR_LINKS))
@pytest.mark.parametrize("reducer", sorted(REDUCERS))
@pytest.mark.parametrize("score", ["cosine", "euclidean"])
def test_pair_form_matches_loop_reference(link: str, reducer: str, score: str) -> None:
    phi, loop_phi = PAIR_LINKS[link]
    ours_reducer, loop_reducer = REDUCERS[reducer]
    similarity = CosineSimilarity() if score == "cosine" else LpDistance()
    x, y = _batch(14, seed=1)
    rx, ry = _batch(9, seed=2)
    for pooled in (False, True):
        loss = pairloss.pair_loss(
            phi,
            similarity=similarity,
            pos_margin=0.3,
            neg_margin=0.7,
            reducer=ours_reducer,
            pooled=pooled,
            block_size=4,
        )
        for args, kwargs in (((x, y), {}), ((x, y), {"ref_emb": rx, "ref_labels": ry})):
            got = loss(*args, **kwargs)
            pairs_ = ref.Pairs(x, y, kwargs.get("ref_emb"), kwargs.get("ref_labels"), score=score)
            expected = ref.pair_loss(pairs_, loop_phi, pos_margin=0.3, neg_margin=0.7, pooled=pooled, **loop_reducer)
            assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


class _PlainHinge(links.Link):
    """The hinge as an ordinary link, so that the builder takes its general path (no shortcut)."""

    def __init__(self, margin: float) -> None:
        self.margin = margin

    def value(self, z: Tensor) -> Tensor:
        return torch.relu(self.margin - z)

    def derivative(self, z: Tensor) -> Tensor:
        return -(z < self.margin).to(z.dtype)


@pytest.mark.parametrize("reducer", sorted(REDUCERS))
def test_hinge_shortcut_equals_general_path(reducer: str) -> None:
    x, y = _batch(16, classes=4, seed=3)
    values, grads = [], []
    for phi in (links.Hinge(0.2), _PlainHinge(0.2)):
        leaf = x.clone().requires_grad_(True)
        loss = pairloss.pair_loss(
            phi, similarity=LpDistance(), pos_margin=0.4, neg_margin=0.9, reducer=REDUCERS[reducer][0]
        )
        value = loss(leaf, y)
        value.backward()
        values.append(value.item())
        grads.append(leaf.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", sorted(PAIR_LINKS))
def test_link_derivative_is_the_derivative_of_its_value(name: str) -> None:
    phi = PAIR_LINKS[name][0]
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    z = z[(z - 0.1).abs() > 1e-6]  # off the kinks of the hinges
    z = z[(z - 0.2).abs() > 1e-6].requires_grad_(True)
    (autograd,) = torch.autograd.grad(phi.value(z).sum(), z)
    torch.testing.assert_close(phi.derivative(z.detach()), autograd)
    value, derivative = phi.value_and_derivative(z.detach())
    torch.testing.assert_close(value, phi.value(z.detach()))
    torch.testing.assert_close(derivative, autograd)
    assert bool((derivative <= 0).all()), "a link is a loss decreasing in the margin"


def test_log_sum_exp_rows_match_its_value_in_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    s = torch.randn(6, 9, dtype=torch.float64)
    mask = torch.rand(6, 9) < 0.4
    mask[2] = False
    circle = weights.Circle(0.3)
    for add_one in (True, False):
        for margin_weight in (None, lambda v: circle(v, None, positive=False)):
            link = links.LogSumExp(3.0, add_one=add_one)
            leaf = s.clone().requires_grad_(True)
            alpha = 1.0 if margin_weight is None else margin_weight(s.clone())  # a constant: no gradient through it
            expected = link.value((-2.0 * leaf + 0.5) * alpha, mask)
            (expected_slope,) = torch.autograd.grad(expected.sum(), leaf)
            for density in (0.0, 1.0):
                monkeypatch.setattr(links, "SPARSE_MASK_DENSITY", density)
                value, slope, nonempty = link.rows(s.clone(), mask, -2.0, 0.5, int(mask.sum()), margin_weight)
                dense = slope.to_dense() if isinstance(slope, pairloss.similarity.SparsePairWeights) else slope
                torch.testing.assert_close(value, expected.detach())
                torch.testing.assert_close(dense, expected_slope)
                assert torch.equal(nonempty, mask.any(dim=1))


@pytest.mark.parametrize("add_one", [True, False])
@pytest.mark.parametrize("combine", [None, "hinge", "logistic"])
@pytest.mark.parametrize("reducer", ["mean", "avg_non_zero"])
def test_row_form_matches_loop_reference(add_one: bool, combine: str | None, reducer: str) -> None:
    x, y = _batch(15, seed=4)
    outer = {None: None, "hinge": links.Hinge(), "logistic": links.Logistic(2.0)}[combine]
    loop_outer = {None: None, "hinge": lambda v: max(v, 0.0), "logistic": lambda v: _softplus(2.0 * v)}[combine]
    loss = pairloss.pair_loss(
        links.LogSumExp(3.0, add_one=add_one),
        negative_link=links.LogSumExp(7.0, add_one=add_one),
        similarity=LpDistance(),
        pos_margin=0.2,
        neg_margin=1.1,
        combine=outer,
        reducer=REDUCERS[reducer][0],
        block_size=4,
    )
    loop_reducer = "mean" if reducer == "mean" else "threshold"
    expected = ref.row_loss(
        ref.Pairs(x, y),
        (3.0, 7.0),
        pos_margin=0.2,
        neg_margin=1.1,
        add_one=add_one,
        combine=loop_outer,
        reducer=loop_reducer,
        low=None if reducer == "mean" else 0.0,
    )
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-10)
    leaf = x[:8].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y[:8]), (leaf,))


def test_multi_similarity_weights_give_the_multi_similarity_gradient() -> None:
    """With a linear link, the multi-similarity pair weights are the gradient of the multi-similarity loss
    (Wang et al.'s general pair weighting): summed over pairs, N times the mean loss's gradient."""
    x, y = _batch(20, classes=4, seed=5)
    weighted = pairloss.pair_loss(
        links.Linear(),
        weight=weights.MultiSimilarity(2.0, 50.0, 0.5),
        pos_margin=0.5,
        neg_margin=0.5,
        reducer="sum",
        pooled=True,
    )
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weighted(a, y).backward()
    functional.multi_similarity_loss(b, y).backward()
    torch.testing.assert_close(a.grad, len(y) * b.grad)


def test_relevance_pairs_make_ranking_losses() -> None:
    generator = torch.Generator().manual_seed(6)
    scores = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    relevance = torch.randint(0, 3, (5, 7), generator=generator).double()
    relevance[0, 5:] = -1
    ranknet = pairloss.pair_loss(links.Logistic(), pairs=pairs.RelevancePairs())
    assert ranknet(scores, relevance).item() == pytest.approx(functional.ranknet_loss(scores, relevance).item())
    hinge = pairloss.pair_loss(links.Hinge(1.0), pairs=pairs.RelevancePairs(), reducer="sum")
    expected = functional.pairwise_hinge_loss(scores, relevance, reduction="sum")
    assert hinge(scores, relevance).item() == pytest.approx(expected.item())
    lambdarank = pairloss.pair_loss(
        links.Logistic() * (1 / math.log(2)), pairs=pairs.RelevancePairs(), weight=weights.LambdaWeight(), reducer="sum"
    )
    assert lambdarank(scores, relevance).item() == pytest.approx(functional.lambdarank_loss(scores, relevance).item())


def test_view_pairs_pair_each_object_with_its_views() -> None:
    x, _ = _batch(12, seed=7)
    by_views = pairloss.pair_loss(links.Logistic(5.0), pairs=pairs.ViewPairs(3), pos_margin=0.2, neg_margin=0.1)
    by_labels = pairloss.pair_loss(links.Logistic(5.0), pos_margin=0.2, neg_margin=0.1)
    objects = torch.arange(12) % 4
    assert by_views(x).item() == pytest.approx(by_labels(x, objects).item(), rel=1e-12)
    with pytest.raises(ValueError, match="views"):
        by_views(x[:11])
    with pytest.raises(ValueError, match="without labels"):
        by_views(x, objects)


def test_mined_pairs_count_as_often_as_listed() -> None:
    x, y = _batch(10, seed=8)
    a1 = torch.tensor([0, 0, 3, 5])
    p = torch.tensor([1, 1, 4, 2])
    a2 = torch.tensor([2, 2, 2, 7])
    n = torch.tensor([9, 9, 8, 1])
    phi, loop_phi = PAIR_LINKS["exponential"]
    loss = pairloss.pair_loss(phi, pos_margin=0.2, neg_margin=0.3, generic_pair_rule=True)
    s = CosineSimilarity()(x)
    pos = [loop_phi(float(s[i, j]) - 0.2) for i, j in zip(a1.tolist(), p.tolist())]
    neg = [loop_phi(0.3 - float(s[i, j])) for i, j in zip(a2.tolist(), n.tolist())]
    expected = sum(pos) / len(pos) + sum(neg) / len(neg)
    assert loss(x, y, (a1, p, a2, n)).item() == pytest.approx(expected, rel=1e-12)
    assert loss(x, None, indices_tuple=(a1, p, a2, n)).item() == pytest.approx(expected, rel=1e-12)
    one = (a1[:1], p[:1], a2[:1], n[:1])
    assert loss(x, y, one).item() == 0.0  # PML's rule: at most one positive and one negative pair


def test_per_element_losses_with_the_none_reducer() -> None:
    x, y = _batch(9, seed=9)
    phi, loop_phi = PAIR_LINKS["softplus"]
    out = pairloss.pair_loss(phi, pos_margin=0.4, neg_margin=0.2, reducer="none")(x, y)
    s = CosineSimilarity()(x)
    anchors, others = out["pos_loss"]["indices"]
    expected = [loop_phi(float(s[i, j]) - 0.4) for i, j in zip(anchors.tolist(), others.tolist())]
    assert out["pos_loss"]["losses"].tolist() == pytest.approx(expected)
    assert all(y[i] == y[j] and i != j for i, j in zip(anchors.tolist(), others.tolist()))
    assert len(anchors) == int((y[:, None] == y[None, :]).sum() - 9)
    assert out["neg_loss"]["reduction_type"] == "neg_pair"


def test_spec_rejects_parts_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="both be row links"):
        pairloss.pair_loss(links.LogSumExp(), negative_link=links.Hinge())
    with pytest.raises(ValueError, match="pooled"):
        pairloss.pair_loss(links.LogSumExp(), pooled=True)
    with pytest.raises(ValueError, match="row form"):
        pairloss.pair_loss(links.Hinge(), combine=links.Hinge())
    with pytest.raises(ValueError, match="margin weights"):
        pairloss.pair_loss(links.LogSumExp(), weight=weights.MultiSimilarity())
    with pytest.raises(ValueError, match="reducer"):
        pairloss.pair_loss(links.Hinge(), reducer="median")
    with pytest.raises(ValueError, match="pos_margin"):
        PairLossSpec(links.Hinge(), links.Hinge(), CosineSimilarity(), pos_margin=float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        links.Logistic(0.0)
    with pytest.raises(ValueError, match="one pair link"):
        pairloss.pair_loss(links.LogSumExp(), pairs=pairs.RelevancePairs())
    loss = pairloss.pair_loss(links.Hinge())
    x, y = _batch(6)
    with pytest.raises(ValueError, match="labels are required"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb="):
        loss(x, y, x)


@pytest.mark.parametrize(
    "base",
    [pairloss.pairs.PairSelector, pairloss.weights.PairWeight, pairloss.weights.ListWeight, pairloss.miners.BaseMiner],
)
def test_the_extension_bases_are_abstract(base: type) -> None:
    """A part that does not implement its one method fails when it is made, not when a loss first calls it."""
    with pytest.raises(TypeError, match="abstract"):
        base()
    with pytest.raises(TypeError, match="abstract"):
        type("Incomplete", (base,), {})()
