"""One memory budget: the engine, the list losses, the multi-label pairs, the RS@k rank sums and the OT tensors all
read it, and a smaller budget means smaller blocks with the same result."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import pairloss
from pairloss import functional, memory
from pairloss.losses import multilabel, recall
from pairloss.losses.ot import multimarginal_sinkhorn


def test_budget_setting_and_scope() -> None:
    assert memory.get_memory_budget() == memory.DEFAULT_MEMORY_BUDGET
    with pairloss.memory_budget(1000):
        assert memory.get_memory_budget() == 1000
        with pairloss.memory_budget(10):
            assert memory.get_memory_budget() == 10
        assert memory.get_memory_budget() == 1000
    pairloss.set_memory_budget(12345)
    try:
        assert memory.get_memory_budget() == 12345
        with pairloss.memory_budget(99):
            assert memory.get_memory_budget() == 99
        assert memory.get_memory_budget() == 12345
    finally:
        pairloss.set_memory_budget(None)
    assert memory.get_memory_budget() == memory.DEFAULT_MEMORY_BUDGET
    for bad in (0, -1, 1.5, "1GB", True):
        with pytest.raises(ValueError, match="memory budget"):
            pairloss.set_memory_budget(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="memory budget"), pairloss.memory_budget(bad):  # type: ignore[arg-type]
            pass


def test_rows_per_block() -> None:
    with pairloss.memory_budget(1000):
        assert memory.rows_per_block(50, 10, copies=2) == 50
        assert memory.rows_per_block(500, 10, copies=2) == 50
        assert memory.rows_per_block(500, 10, copies=2, max_temporary=100) == 10
        assert memory.rows_per_block(5, 10**6) == 1  # at least one row
    assert memory.row_blocks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="block_size"):
        memory.row_blocks(5, 0)


def test_engine_blocks_follow_the_budget() -> None:
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.arange(64) % 5
    full = functional.multi_similarity_loss(x, y)
    seen: list[int] = []

    def row(block: pairloss.engine.PairBlock) -> Tensor:
        seen.append(block.sim.shape[0])
        return block.sim.sum()[None]

    with pairloss.memory_budget(64 * 8 * 4):  # four rows of one [b, 64] float64 temporary
        pairloss.engine.row_block_sums(row, x, y, similarity=pairloss.CosineSimilarity(), working_copies=1)
        small = functional.multi_similarity_loss(x, y)
    assert seen == [4] * 16
    assert small.item() == pytest.approx(full.item(), rel=1e-12)


def test_list_losses_follow_the_budget() -> None:
    scores, relevance = torch.randn(6, 9, dtype=torch.float64), torch.randint(0, 3, (6, 9)).double()
    blocks: list[int] = []
    original = memory.row_blocks

    def spy(n_rows: int, block_size: int) -> list[tuple[int, int]]:
        blocks.append(block_size)
        return original(n_rows, block_size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory, "row_blocks", spy)
        full = functional.lambda_loss(scores, relevance)
        with pairloss.memory_budget(3 * 81 * 8 * 2):  # two lists of three [9, 9] float64 workspaces
            small = functional.lambda_loss(scores, relevance)
    assert blocks == [6, 2]
    assert small.item() == pytest.approx(full.item(), rel=1e-12)
    with pairloss.memory_budget(1):
        approx = functional.approx_ndcg_loss(scores.requires_grad_(True), relevance)
    assert approx.item() == pytest.approx(functional.approx_ndcg_loss(scores, relevance).item(), rel=1e-12)


def test_multilabel_pairs_follow_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = torch.randn(4, 30, dtype=torch.float64)
    labels = (torch.rand(4, 30) < 0.3).double()
    widths: list[int] = []
    original = multilabel._pair_chunks

    def spy(*args: object) -> object:
        for margins, weight in original(*args):  # type: ignore[arg-type]
            widths.append(margins.shape[1])
            yield margins, weight

    monkeypatch.setattr(multilabel, "_pair_chunks", spy)
    full = functional.multilabel_pairwise_loss(scores, labels)
    n_full = len(widths)
    with pairloss.memory_budget(4 * 4 * 30 * 8 * 2):  # two anchor columns per chunk
        small = functional.multilabel_pairwise_loss(scores, labels)
    assert n_full == 1 and set(widths[1:]) <= {1, 2} and len(widths) > 2
    assert small.item() == pytest.approx(full.item(), rel=1e-12)


def test_rank_sums_follow_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = torch.randn(30, 6, dtype=torch.float64), torch.arange(30) % 3
    chunks: list[int] = []
    original = recall._chunk_size

    def spy(*args: int) -> int:
        chunks.append(original(*args))
        return chunks[-1]

    monkeypatch.setattr(recall, "_chunk_size", spy)
    full = functional.recall_at_k_surrogate_loss(x, y, block_size=30)
    with pairloss.memory_budget(30 * 8 * 3 * 5):  # five (query, positive) pairs of three [chunk, 30] temporaries
        small = functional.recall_at_k_surrogate_loss(x, y, block_size=30)
    assert chunks[0] > 5 and chunks[1] == 5
    assert small.item() == pytest.approx(full.item(), rel=1e-12)


def test_optimal_transport_reads_the_shared_budget() -> None:
    cost = torch.rand(8, 8, 8)
    multimarginal_sinkhorn(cost, max_iter=5)
    with pytest.raises(ValueError, match="set_memory_budget"), pairloss.memory_budget(1000):
        multimarginal_sinkhorn(cost, max_iter=5)
    with pairloss.memory_budget(1000):
        multimarginal_sinkhorn(cost, max_iter=5, memory_budget=None)  # unchecked
