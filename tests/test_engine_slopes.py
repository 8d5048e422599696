"""The engine's graph-free gradient (row functions returning RowSums) and its symmetric (upper-triangle) mode.

Each RowSums row function here has a twin that returns the same sums as an ordinary differentiable tensor; the
twin under the dense reference (plain autograd on the whole matrix) is the ground truth for values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import pairloss.engine as engine
import pairloss.links as links
from pairloss._sparse_pairs import SparsePairWeights
from pairloss.engine import PairBlock, RowSums, dense_row_sums, row_block_sums
from pairloss.similarity import (
    BaseSimilarity,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    NegSquaredEuclideanSimilarity,
)

SIMILARITIES = [
    CosineSimilarity(),
    DotProductSimilarity(),
    LpDistance(),
    LpDistance(normalize_embeddings=False, power=2),
    LpDistance(p=1),
    NegSquaredEuclideanSimilarity(),
]


@torch.no_grad()
def smooth_sloped(block: PairBlock) -> RowSums:
    """Σ_P softplus(−s), Σ_N softplus(s − 0.2) and #P, with their slopes −σ(−s) and σ(s − 0.2)."""
    s = block.sim
    zero = torch.zeros_like(s)
    values = torch.stack(
        [
            torch.where(block.positive, F.softplus(-s), zero).sum(),
            torch.where(block.negative, F.softplus(s - 0.2), zero).sum(),
            block.positive.sum().to(s),
        ]
    )
    slopes = (
        torch.where(block.positive, -torch.sigmoid(-s), zero),
        torch.where(block.negative, torch.sigmoid(s - 0.2), zero),
        None,
    )
    return RowSums(values, slopes)


def smooth_autograd(block: PairBlock) -> Tensor:
    s = block.sim
    zero = torch.zeros_like(s)
    return torch.stack(
        [
            torch.where(block.positive, F.softplus(-s), zero).sum(),
            torch.where(block.negative, F.softplus(s - 0.2), zero).sum(),
            block.positive.sum().to(s),
        ]
    )


def _outside_window(block: PairBlock) -> Tensor:
    """Negatives scored above 0.6 or below −3 (some pairs of every similarity here, a minority of them)."""
    return ((block.sim > 0.6) | (block.sim < -3)).logical_and_(block.negative)


@torch.no_grad()
def hinge_sloped(block: PairBlock) -> RowSums:
    """Σ of the scores of the negatives outside a fixed window: a boolean slope (mostly zero)."""
    active = _outside_window(block)
    return RowSums(torch.stack([torch.where(active, block.sim, 0.0).sum(), active.sum().to(block.sim)]), (active, None))


def hinge_autograd(block: PairBlock) -> Tensor:
    active = _outside_window(block)
    return torch.stack([torch.where(active, block.sim, 0.0).sum(), active.sum().to(block.sim)])


def _combine(sums: Tensor) -> Tensor:
    return 0.7 * sums[0] + 1.3 * sums[1] / (sums[-1] + 1) if sums.numel() == 3 else sums[0] / (sums[1] + 1)


def _inputs(seed: int = 0, n: int = 11, m: int = 7) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, dtype=torch.float64, generator=g)
    x[3] = x[5]  # a zero distance between two different samples
    return (
        x,
        torch.randint(0, 3, (n,), generator=g),
        torch.randn(m, 4, dtype=torch.float64, generator=g),
        torch.randint(0, 3, (m,), generator=g),
    )


def _run(
    row: Callable[[PairBlock], Tensor | RowSums],
    similarity: BaseSimilarity,
    with_reference: bool,
    dense: bool = False,
    **options: object,
) -> tuple[Tensor, Tensor, Tensor | None]:
    x, y, r, ry = _inputs()
    x.requires_grad_(True)
    r.requires_grad_(True)
    reference = (r, ry) if with_reference else (None, None)
    if dense:
        sums = dense_row_sums(row, x, y, *reference, similarity=similarity)
    else:
        sums = row_block_sums(row, x, y, *reference, similarity=similarity, **options)  # type: ignore[arg-type]
    _combine(sums).backward()
    assert x.grad is not None
    return sums.detach(), x.grad, r.grad


PAIRS = [(smooth_sloped, smooth_autograd), (hinge_sloped, hinge_autograd)]


@pytest.mark.parametrize("similarity", SIMILARITIES, ids=repr)
@pytest.mark.parametrize("pair", PAIRS, ids=["smooth", "hinge"])
@pytest.mark.parametrize("with_reference", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("density", [0.0, 1.0], ids=["dense-slopes", "sparse-slopes"])
def test_slopes_equal_autograd(
    similarity: BaseSimilarity,
    pair: tuple[Callable[[PairBlock], RowSums], Callable[[PairBlock], Tensor]],
    with_reference: bool,
    symmetric: bool,
    density: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "SPARSE_SLOPE_DENSITY", density)
    sloped, autograd_twin = pair
    expected = _run(autograd_twin, similarity, with_reference, dense=True)
    for block_size in (1, 4, 11):
        got = _run(sloped, similarity, with_reference, block_size=block_size, symmetric=symmetric)
        torch.testing.assert_close(got[0], expected[0], atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(got[1], expected[1], atol=1e-9, rtol=1e-8)
        if with_reference:
            torch.testing.assert_close(got[2], expected[2], atol=1e-9, rtol=1e-8)
    assert float(expected[1].abs().sum()) > 0


@pytest.mark.parametrize("similarity", SIMILARITIES[:4], ids=repr)
def test_replayed_and_dense_paths_accept_row_sums(similarity: BaseSimilarity) -> None:
    """The dense reference (and a replay) linearise RowSums around the scores: same value and gradient."""
    expected = _run(smooth_autograd, similarity, with_reference=False, dense=True)
    got = _run(smooth_sloped, similarity, with_reference=False, dense=True)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])


def test_symmetric_mode_scores_each_unordered_pair_once() -> None:
    x, y, _, _ = _inputs()
    seen: list[tuple[int, int, int]] = []

    def count(block: PairBlock) -> Tensor:
        seen.append((int(block.rows[0]), block.column_offset, block.sim.shape[1]))
        return torch.stack([block.positive.sum(), block.negative.sum()]).to(block.sim)

    symmetric = row_block_sums(count, x, y, similarity=CosineSimilarity(), block_size=4, symmetric=True)
    full = row_block_sums(count, x, y, similarity=CosineSimilarity(), block_size=4)
    assert torch.equal(symmetric, full)
    assert seen[:3] == [(0, 0, 11), (4, 4, 7), (8, 8, 3)]
    # with a separate reference set there is no symmetry: every block sees every column
    seen.clear()
    row_block_sums(count, x, y, x, y, similarity=CosineSimilarity(), block_size=4, symmetric=True)
    assert seen == [(0, 0, 11), (4, 0, 11), (8, 0, 11)]


@pytest.mark.parametrize("density", [0.0, 1.0], ids=["dense-slopes", "sparse-slopes"])
def test_gradcheck_through_slopes(density: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "SPARSE_SLOPE_DENSITY", density)
    x, y, r, ry = _inputs(1, n=6, m=5)

    def loss(q: Tensor, ref: Tensor) -> Tensor:
        own = row_block_sums(smooth_sloped, q, y, similarity=LpDistance(), block_size=4, symmetric=True)
        cross = row_block_sums(smooth_sloped, q, y, ref, ry, similarity=DotProductSimilarity(), block_size=4)
        return _combine(own) + _combine(cross)

    x[3] = x[4] + 0.3  # keep distances away from 0, where the distance is not differentiable
    assert torch.autograd.gradcheck(loss, (x.requires_grad_(True), r.requires_grad_(True)))


def test_no_gradient_work_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    class Counting(CosineSimilarity):
        def add_pairwise_vjp(self, *args: object) -> None:  # type: ignore[override]
            calls.append(1)
            super().add_pairwise_vjp(*args)  # type: ignore[arg-type]

        def add_stacked_pairwise_vjp(self, *args: object) -> None:  # type: ignore[override]
            calls.append(2)
            super().add_stacked_pairwise_vjp(*args)  # type: ignore[arg-type]

    x, y, _, _ = _inputs()
    x.requires_grad_(True)
    with torch.no_grad():
        sums = row_block_sums(smooth_sloped, x, y, similarity=Counting(), block_size=4)
    assert not sums.requires_grad and calls == []
    row_block_sums(smooth_sloped, x.detach(), y, similarity=Counting(), block_size=4)
    assert calls == []
    row_block_sums(smooth_sloped, x, y, similarity=Counting(), block_size=4)
    assert calls == [1] * 6  # the CPU's default path: 3 blocks × 2 statistics with slopes, one product each
    calls.clear()
    monkeypatch.setattr(engine, "SPARSE_SLOPE_DENSITY", 0.0)
    monkeypatch.setattr(links, "SPARSE_MASK_DENSITY", 0.0)
    row_block_sums(smooth_sloped, x, y, similarity=Counting(), block_size=4)
    assert calls == [2, 2, 2]  # the sync-free path: 3 blocks, both slopes in one stacked product each


def test_row_sums_errors() -> None:
    with pytest.raises(ValueError, match="one slope per value"):
        RowSums(torch.zeros(2), (None,))
    with pytest.raises(ValueError, match="1-D"):
        RowSums(torch.zeros(()), ())
    x, y, _, _ = _inputs()
    x.requires_grad_(True)
    learnable = torch.ones(1, dtype=torch.float64, requires_grad=True)
    for embeddings in (x, x.detach()):
        with pytest.raises(ValueError, match="differentiable params"):
            row_block_sums(smooth_sloped, embeddings, y, similarity=CosineSimilarity(), params=(learnable,))
    calls = iter([3, 2])

    @torch.no_grad()
    def changing(block: PairBlock) -> RowSums:
        m = next(calls)
        return RowSums(torch.zeros(m, dtype=block.sim.dtype), (block.sim,) * m)

    with pytest.raises(ValueError, match="earlier blocks"):
        row_block_sums(changing, x, y, similarity=CosineSimilarity(), block_size=6)


@pytest.mark.parametrize("similarity", SIMILARITIES, ids=repr)
def test_pairwise_vjp_equals_autograd(similarity: BaseSimilarity) -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(5, 3, dtype=torch.float64, generator=g)
    r = torch.randn(8, 3, dtype=torch.float64, generator=g)
    r[2] = q[1]  # a zero distance
    weight = torch.randn(5, 8, dtype=torch.float64, generator=g) * (torch.rand(5, 8, generator=g) < 0.4)
    sim = similarity.pairwise(q, r)
    start = (torch.randn(5, 3, dtype=torch.float64, generator=g), torch.randn(8, 3, dtype=torch.float64, generator=g))
    expected = [t.clone() for t in start]
    BaseSimilarity.add_pairwise_vjp(similarity, q, r, sim, weight, *expected, alpha=0.7)
    assert not torch.equal(expected[0], start[0])
    for w in (weight, SparsePairWeights.from_dense(weight, torch.float64)):
        got = [t.clone() for t in start]
        similarity.add_pairwise_vjp(q, r, sim, w, *got, alpha=0.7)
        torch.testing.assert_close(got[0], expected[0])
        torch.testing.assert_close(got[1], expected[1])


def test_sparse_pair_weights_match_the_dense_matrix() -> None:
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(6, 9, dtype=torch.float64, generator=g) * (torch.rand(6, 9, generator=g) < 0.3)
    sparse = SparsePairWeights.from_dense(dense, torch.float64)
    other = torch.randn(9, 4, dtype=torch.float64, generator=g)
    left = torch.randn(6, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(sparse.to_dense(), dense)
    for weights, factor, expected in ((sparse, other, dense @ other), (sparse.T, left, dense.T @ left)):
        out = torch.ones_like(expected)
        weights.add_product_to(out, factor, alpha=-2.0)
        torch.testing.assert_close(out, 1 - 2 * expected)
    torch.testing.assert_close(sparse.sum(1, keepdim=True), dense.sum(1, keepdim=True))
    torch.testing.assert_close(sparse.sum(0), dense.sum(0))
    indicator = SparsePairWeights.from_dense(dense != 0, torch.float32)
    assert indicator.values.dtype == torch.float32 and bool((indicator.values == 1).all())
    empty = SparsePairWeights.from_dense(torch.zeros(3, 2), torch.float32)
    out = torch.zeros(3, 5)
    empty.add_product_to(out, torch.ones(2, 5))
    assert torch.equal(out, torch.zeros(3, 5))
