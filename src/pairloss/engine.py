"""The row-block engine: a row-decomposable pairwise loss without ever holding the N×M pair matrix.

Most pairwise losses are sums over anchors of a function of one row of the pair matrix,

    T = Σ_i t(S[i, :], pos[i, :], neg[i, :])          (T a small vector of sums, e.g. [Σ loss, Σ #active pairs])
    L = combine(T)                                      (e.g. Σ loss / max(#active, 1))

The engine evaluates ``T`` a block of ``b`` anchors at a time: ``S_B = s(Q_B, R)`` is ``b × M``. In backward it
recomputes each block under autograd and accumulates ``dQ_B`` and ``dR`` (for a dot product, ``dS_B R`` and
``dS_Bᵀ Q_B``), so peak memory is ``O(b·M + (N + M)·D)`` instead of ``O(N·M)``, at the price of computing the
similarity blocks twice (the same trade as activation checkpointing and flash attention). ``combine`` runs outside
the engine under ordinary autograd, so any differentiable function of the sums is allowed.

A loss only writes its row function: ``PairBlock -> Tensor[m]`` (the block's sums).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pairloss.pairs import label_masks
from pairloss.similarity import BaseSimilarity

__all__ = [
    "CROSS_RANK",
    "DEFAULT_MEMORY_BUDGET",
    "MAX_TEMPORARY_BYTES",
    "CrossRankHook",
    "PairBlock",
    "RowFunction",
    "auto_block_size",
    "dense_row_sums",
    "row_block_sums",
]

#: Bytes that one block's temporaries may take (similarities, masks and the row function's intermediates).
DEFAULT_MEMORY_BUDGET = 512 * 2**20

#: Largest single ``[b, M]`` temporary. The C allocator hands larger buffers back to the system when they are freed
#: (glibc's mmap threshold is at most 32 MiB), so every block would page-fault its temporaries in again, which costs
#: about four times the arithmetic on them; smaller blocks reuse the same memory. Measured at N = 8192: contrastive
#: forward + backward 2.2 s with 2730-row blocks, 1.45 s with 256-row blocks.
MAX_TEMPORARY_BYTES = 8 * 2**20


@dataclass(frozen=True)
class PairBlock:
    """What a row function sees: one block of ``b`` anchors (queries) against all ``M`` references.

    Attributes:
        sim: ``[b, M]`` similarities (or distances, see ``similarity.is_inverted``).
        positive: ``[b, M]`` bool, same label and not the anchor itself.
        negative: ``[b, M]`` bool, different label.
        rows: ``[b]`` global index of each anchor in the query batch.
        query_labels: labels of the block's anchors, ``[b]`` or ``[b, C]``.
        reference_labels: labels of the references, ``[M]`` or ``[M, C]``.
        query: the block's prepared embeddings ``[b, D]`` (for losses that also use them directly).
        reference: the prepared references ``[M, D]``.
        params: extra differentiable tensors the loss passed in (learnable margins, proxies, ...).
        self_pairs: whether the references contain the queries themselves (then self-pairs are masked out).
    """

    sim: Tensor
    positive: Tensor
    negative: Tensor
    rows: Tensor
    query_labels: Tensor
    reference_labels: Tensor
    query: Tensor
    reference: Tensor
    params: tuple[Tensor, ...]
    self_pairs: bool


RowFunction = Callable[[PairBlock], Tensor]


class CrossRankHook(Protocol):
    """How the engine spans several processes (implemented by :mod:`pairloss.distributed`).

    ``gather`` returns the global reference set (with a gradient path back to each owner), its labels, and the offset
    of this rank's rows in it; ``reduce`` sums the row statistics of all ranks.
    """

    def gather(self, prepared: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]: ...

    def reduce(self, sums: Tensor) -> Tensor: ...


#: Set by :func:`pairloss.distributed.cross_rank_pairs`: while set, the engine uses the local rows as anchors
#: against the batch of every rank, and returns the statistics summed over ranks.
CROSS_RANK: ContextVar[CrossRankHook | None] = ContextVar("pairloss_cross_rank", default=None)


def auto_block_size(n_rows: int, n_columns: int, element_size: int, budget: int, working_copies: int) -> int:
    """Rows per block: ``working_copies`` temporaries of ``[b, n_columns]`` fit in ``budget`` bytes, and each one
    stays under :data:`MAX_TEMPORARY_BYTES`."""
    row_bytes = max(1, n_columns * element_size)
    by_budget = budget // (row_bytes * working_copies)
    by_allocator = MAX_TEMPORARY_BYTES // row_bytes
    return int(max(1, min(n_rows, by_budget, by_allocator)))


@dataclass(frozen=True)
class _Plan:
    row_fn: RowFunction
    similarity: BaseSimilarity
    query_labels: Tensor
    reference_labels: Tensor
    self_offset: int | None
    block_size: int

    def blocks(self, n: int) -> list[tuple[int, int]]:
        return [(start, min(start + self.block_size, n)) for start in range(0, n, self.block_size)]

    def block_sums(self, query_block: Tensor, reference: Tensor, rows: Tensor, params: Sequence[Tensor]) -> Tensor:
        self_columns = None if self.self_offset is None else rows + self.self_offset
        positive, negative = label_masks(self.query_labels[rows], self.reference_labels, self_columns)
        block = PairBlock(
            sim=self.similarity.pairwise(query_block, reference),
            positive=positive,
            negative=negative,
            rows=rows,
            query_labels=self.query_labels[rows],
            reference_labels=self.reference_labels,
            query=query_block,
            reference=reference,
            params=tuple(params),
            self_pairs=self.self_offset is not None,
        )
        sums = self.row_fn(block)
        if sums.ndim != 1:
            raise ValueError(f"a row function must return a 1-D tensor of sums, got shape {tuple(sums.shape)}")
        return sums


class _RowBlockSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan: _Plan, query: Tensor, reference: Tensor, *params: Tensor) -> Tensor:
        total: Tensor | None = None
        with torch.no_grad():
            for start, stop in plan.blocks(query.shape[0]):
                rows = torch.arange(start, stop, device=query.device)
                sums = plan.block_sums(query[start:stop], reference, rows, params).to(torch.float64)
                total = sums if total is None else total + sums
        assert total is not None  # the engine is only called with at least one row
        ctx.plan = plan
        ctx.save_for_backward(query, reference, *params)
        return total.to(query.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        query, reference, *params = ctx.saved_tensors
        plan: _Plan = ctx.plan
        need = ctx.needs_input_grad[1:]
        reference_leaf = reference.detach().requires_grad_(need[1])
        param_leaves = [p.detach().requires_grad_(n) for p, n in zip(params, need[2:], strict=True)]
        grad_query = torch.zeros_like(query) if need[0] else None
        grad_reference = torch.zeros_like(reference) if need[1] else None
        grad_params = [torch.zeros_like(p) if n else None for p, n in zip(params, need[2:], strict=True)]
        for start, stop in plan.blocks(query.shape[0]):
            rows = torch.arange(start, stop, device=query.device)
            with torch.enable_grad():
                query_leaf = query[start:stop].detach().requires_grad_(need[0])
                leaves = [query_leaf, reference_leaf, *param_leaves]
                wanted = [leaf for leaf in leaves if leaf.requires_grad]
                if not wanted:
                    break
                sums = plan.block_sums(query_leaf, reference_leaf, rows, param_leaves)
                grads = iter(torch.autograd.grad(sums, wanted, grad_total.to(sums.dtype), allow_unused=True))
            got = [next(grads) if leaf.requires_grad else None for leaf in leaves]
            if grad_query is not None and got[0] is not None:
                grad_query[start:stop] += got[0]
            if grad_reference is not None and got[1] is not None:
                grad_reference += got[1]
            for accumulated, g in zip(grad_params, got[2:], strict=True):
                if accumulated is not None and g is not None:
                    accumulated += g
        return (None, grad_query, grad_reference, *grad_params)


def _prepare(
    similarity: BaseSimilarity,
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None,
    reference_labels: Tensor | None,
    hook: CrossRankHook | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, int | None]:
    if (reference is None) != (reference_labels is None):
        raise ValueError("ref_emb and ref_labels must be given together")
    q = similarity.prepare(query)
    if reference is None or reference_labels is None:
        if hook is None:
            return q, q, query_labels, query_labels, 0
        r, r_labels, offset = hook.gather(q, query_labels)
        return q, r, query_labels, r_labels, offset
    r = similarity.prepare(reference)
    if hook is None:
        return q, r, query_labels, reference_labels, None
    r, r_labels, _ = hook.gather(r, reference_labels)
    return q, r, query_labels, r_labels, None


def row_block_sums(
    row_fn: RowFunction,
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    *,
    similarity: BaseSimilarity,
    params: Sequence[Tensor] = (),
    block_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    working_copies: int = 12,
) -> Tensor:
    """Σ over anchors of ``row_fn`` on blocks of the pair matrix, with a memory-bounded backward.

    Args:
        row_fn: maps a :class:`PairBlock` to a 1-D tensor of sums over the block's anchors.
        query: raw embeddings ``[N, D]`` (``similarity.prepare`` is applied here, under ordinary autograd).
        query_labels: ``[N]`` class ids or ``[N, C]`` multi-hot labels.
        reference, reference_labels: an optional separate reference set (``[M, D]``, ``[M]``); by default the
            queries themselves, with the self-pairs excluded.
        similarity: how pairs are scored.
        params: extra tensors the row function uses and that may need gradients.
        block_size: anchors per block; chosen from ``memory_budget`` when ``None``.
        memory_budget: bytes one block's temporaries may take.
        working_copies: how many ``[b, M]`` temporaries the row function holds at once (for the automatic size).

    Returns:
        The summed statistics ``T`` (1-D), differentiable w.r.t. ``query``, ``reference`` and ``params``. Inside
        :func:`pairloss.distributed.cross_rank_pairs`, the local rows are the anchors, the batches of all ranks are
        the references, and ``T`` is summed over ranks.
    """
    hook = CROSS_RANK.get()
    q, r, q_labels, r_labels, offset = _prepare(similarity, query, query_labels, reference, reference_labels, hook)
    if block_size is None:
        block_size = auto_block_size(q.shape[0], r.shape[0], q.element_size(), memory_budget, working_copies)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    plan = _Plan(row_fn, similarity, q_labels, r_labels, offset, block_size)
    result: Tensor = _RowBlockSums.apply(plan, q, r, *params)
    return result if hook is None else hook.reduce(result)


def dense_row_sums(
    row_fn: RowFunction,
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    *,
    similarity: BaseSimilarity,
    params: Sequence[Tensor] = (),
) -> Tensor:
    """The same sums as :func:`row_block_sums` from the whole ``N×M`` matrix under plain autograd (a reference)."""
    q, r, q_labels, r_labels, offset = _prepare(similarity, query, query_labels, reference, reference_labels)
    plan = _Plan(row_fn, similarity, q_labels, r_labels, offset, q.shape[0])
    rows = torch.arange(q.shape[0], device=q.device)
    return plan.block_sums(q, r, rows, params)
