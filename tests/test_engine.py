"""The row-block engine: blocked == dense (loss and gradient), reference sets, params, block size, masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss import memory
from pairloss.engine import ENGINE_MAX_TEMPORARY_BYTES, PairBlock, auto_block_size, dense_row_sums, row_block_sums
from pairloss.pairs import label_masks, same_label
from pairloss.similarity import (
    BaseSimilarity,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    NegSquaredEuclideanSimilarity,
)


def _row(block: PairBlock) -> Tensor:
    """A smooth row function using every field: softplus over positives and negatives, a per-class
    temperature taken from ``params``, and the raw embeddings."""
    (temperature, shift) = block.params
    t = temperature[block.query_labels][:, None]
    pos = torch.where(block.positive, F.softplus(-block.sim * t + shift), torch.zeros_like(block.sim))
    neg = torch.where(block.negative, F.softplus(block.sim * t - shift), torch.zeros_like(block.sim))
    norms = (block.query * block.query).sum()
    return torch.stack([pos.sum(), neg.sum(), block.positive.sum().to(pos), norms])


def _combine(sums: Tensor) -> Tensor:
    return sums[0] / sums[2].clamp_min(1) + 0.5 * sums[1] + 0.1 * sums[3]


def _inputs(n: int = 13, m: int = 9, seed: int = 0) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    r = torch.randn(m, 5, dtype=torch.float64, generator=g)
    ry = torch.randint(0, 3, (m,), generator=g)
    temperature = torch.rand(3, dtype=torch.float64, generator=g) + 0.5
    shift = torch.tensor(0.3, dtype=torch.float64)
    return x, y, r, ry, temperature, shift


SIMILARITIES = [CosineSimilarity(), DotProductSimilarity(), LpDistance(), NegSquaredEuclideanSimilarity()]


@pytest.mark.parametrize("similarity", SIMILARITIES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("block_size", [1, 2, 5, 13, 100])
@pytest.mark.parametrize("with_reference", [False, True])
def test_blocked_equals_dense(similarity: BaseSimilarity, block_size: int, with_reference: bool) -> None:
    x, y, r, ry, temperature, shift = _inputs()
    leaves = [t.clone().requires_grad_(True) for t in (x, r, temperature, shift)]
    dense_leaves = [t.clone().requires_grad_(True) for t in (x, r, temperature, shift)]
    ref_args = (leaves[1], ry) if with_reference else (None, None)
    dense_ref_args = (dense_leaves[1], ry) if with_reference else (None, None)
    blocked = row_block_sums(
        _row, leaves[0], y, *ref_args, similarity=similarity, params=leaves[2:], block_size=block_size
    )
    dense = dense_row_sums(_row, dense_leaves[0], y, *dense_ref_args, similarity=similarity, params=dense_leaves[2:])
    torch.testing.assert_close(blocked, dense, atol=1e-9, rtol=1e-9)
    _combine(blocked).backward()
    _combine(dense).backward()
    for leaf, dense_leaf in zip(leaves, dense_leaves):
        if leaf is leaves[1] and not with_reference:
            assert leaf.grad is None
            continue
        assert leaf.grad is not None and dense_leaf.grad is not None
        assert float(leaf.grad.abs().sum()) > 0
        torch.testing.assert_close(leaf.grad, dense_leaf.grad, atol=1e-9, rtol=1e-7)


def test_blocked_gradcheck() -> None:
    x, y, r, ry, temperature, shift = _inputs(6, 4)
    leaves = tuple(t.clone().requires_grad_(True) for t in (x, r, temperature, shift))

    def loss(q: Tensor, ref: Tensor, t: Tensor, s: Tensor) -> Tensor:
        sums = row_block_sums(_row, q, y, ref, ry, similarity=CosineSimilarity(), params=(t, s), block_size=4)
        return _combine(sums)

    assert torch.autograd.gradcheck(loss, leaves)


def test_self_pairs_are_excluded() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])

    def count(block: PairBlock) -> Tensor:
        return torch.stack([block.positive.sum(), block.negative.sum()]).to(block.sim)

    sums = row_block_sums(count, x, y, similarity=CosineSimilarity(), block_size=3)
    assert sums.tolist() == [4.0, 8.0]
    sums = row_block_sums(count, x, y, x, y, similarity=CosineSimilarity(), block_size=3)
    assert sums.tolist() == [8.0, 8.0]


def test_multi_hot_masks() -> None:
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
    shared = same_label(labels, labels)
    expected = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(shared, expected)
    positive, negative = label_masks(labels[1:3], labels, rows=torch.tensor([1, 2]))
    assert positive.tolist() == [[True, False, True, False], [False, True, False, False]]
    assert negative.tolist() == [[False, False, False, True], [True, False, False, True]]
    float_labels = labels.double()
    assert torch.equal(same_label(float_labels, float_labels), expected)


@pytest.mark.parametrize(
    ("n_rows", "n_columns", "element_size", "budget", "copies"),
    [(1000, 1000, 4, 2**20, 6), (8192, 8192, 4, 512 * 2**20, 12), (10, 10, 8, 10**9, 4), (5, 10**6, 8, 1, 3)],
)
def test_auto_block_size_respects_budget(
    n_rows: int, n_columns: int, element_size: int, budget: int, copies: int
) -> None:
    with memory.memory_budget(budget):
        b = auto_block_size(n_rows, n_columns, element_size, copies)
    per_row = n_columns * element_size * copies
    row_bytes = n_columns * element_size
    assert 1 <= b <= n_rows
    if b > 1:
        assert b * per_row <= budget
        assert b * row_bytes <= ENGINE_MAX_TEMPORARY_BYTES
    largest = max(1, min(n_rows, budget // per_row, ENGINE_MAX_TEMPORARY_BYTES // row_bytes))
    # as few blocks as both limits allow, the rows spread evenly over them
    n_blocks = -(-n_rows // b)
    assert n_blocks == -(-n_rows // largest)
    assert n_blocks * b - n_rows < n_blocks


def test_automatic_block_size_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def row(block: PairBlock) -> Tensor:
        seen.append(block.sim.shape[0])
        return block.sim.sum()[None]

    x = torch.randn(50, 4)
    with memory.memory_budget(50 * 4 * 2 * 10):
        row_block_sums(row, x, torch.zeros(50, dtype=torch.long), similarity=CosineSimilarity(), working_copies=2)
    assert seen == [10] * 5
    seen.clear()
    memory.set_memory_budget(50 * 4 * 2 * 25)
    try:
        row_block_sums(row, x, torch.zeros(50, dtype=torch.long), similarity=CosineSimilarity(), working_copies=2)
    finally:
        memory.set_memory_budget(None)
    assert seen == [25] * 2


def test_invalid_block_size_and_row_function() -> None:
    x = torch.randn(4, 3)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="block_size"):
        row_block_sums(lambda b: b.sim.sum()[None], x, y, similarity=CosineSimilarity(), block_size=0)
    with pytest.raises(ValueError, match="1-D"):
        row_block_sums(lambda b: b.sim.sum(), x, y, similarity=CosineSimilarity())
    with pytest.raises(ValueError, match="together"):
        row_block_sums(lambda b: b.sim.sum()[None], x, y, x, None, similarity=CosineSimilarity())


def test_no_gradient_needed() -> None:
    x = torch.randn(6, 3)
    y = torch.randint(0, 2, (6,))
    with torch.no_grad():
        sums = row_block_sums(lambda b: b.sim.sum()[None], x, y, similarity=CosineSimilarity(), block_size=2)
    assert sums.shape == (1,) and not sums.requires_grad
