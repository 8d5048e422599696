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

Two opt-in speed-ups for row functions that know more about themselves:

* **Slopes.** A row function may return :class:`RowSums`: its sums computed without autograd together with their
  derivatives w.r.t. the block's scores (``∂T_k/∂S``, a ``[b, M]`` tensor per statistic, ``None`` for counts).
  The engine then accumulates the gradient of every statistic w.r.t. the embeddings during the forward pass — with
  two matmuls per block, or two sparse products when a slope is mostly zero (hinge losses) — and the backward only
  combines them with ``∂L/∂T``: no block is recomputed and no autograd graph is replayed.
* **Symmetry.** ``symmetric=True`` declares that each statistic is a sum over pairs of a function of
  ``(S_ij, label relation)`` that is the same for ``(i, j)`` and ``(j, i)`` (contrastive-style losses). With the
  queries as their own references the engine then scores only the pairs ``j > i`` and counts each twice: half the
  matmul and half the element-wise work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pairloss import memory
from pairloss._sparse_pairs import SparsePairWeights
from pairloss.pairs import LabelPairs, PairSelector
from pairloss.similarity import BaseSimilarity

__all__ = [
    "CROSS_RANK",
    "SPARSE_SLOPE_DENSITY",
    "CrossRankHook",
    "PairBlock",
    "RowFunction",
    "RowSums",
    "auto_block_size",
    "dense_row_sums",
    "row_block_sums",
]

#: A slope with at most this fraction of non-zero entries is applied by two sparse (compressed-row) products
#: instead of two dense matmuls over the whole block.
SPARSE_SLOPE_DENSITY = 0.02


@dataclass(frozen=True)
class PairBlock:
    """What a row function sees: one block of ``b`` anchors (queries) against all ``M`` references.

    Attributes:
        sim: ``[b, M]`` similarities (or distances, see ``similarity.is_inverted``).
        positive: ``[b, M]`` bool, the positive pairs of the loss's pair selector (by default: same label and not
            the anchor itself).
        negative: ``[b, M]`` bool, the negative pairs (by default: different label).
        rows: ``[b]`` global index of each anchor in the query batch.
        query_labels: labels of the block's anchors, ``[b]`` or ``[b, C]``.
        reference_labels: labels of the references, ``[M]`` or ``[M, C]``.
        query: the block's prepared embeddings ``[b, D]`` (for losses that also use them directly).
        reference: the prepared references ``[M, D]``.
        params: extra differentiable tensors the loss passed in (learnable margins, proxies, ...).
        self_pairs: whether the references contain the queries themselves (then self-pairs are masked out).
        column_offset: index of the block's first reference column in the whole reference set (non-zero only in
            the engine's symmetric mode, where a block sees the columns from its first row on, and the pairs
            ``j <= i`` are in neither mask).
        positive_count, negative_count: how often each pair was selected, where a selector (mined indices) can
            select a pair more than once; ``None`` when each selected pair counts once.
        triplets: ``(anchor row, positive column, negative column)`` of a selector that lists triplets.
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
    column_offset: int = 0
    positive_count: Tensor | None = None
    negative_count: Tensor | None = None
    triplets: tuple[Tensor, Tensor, Tensor] | None = None


@dataclass(frozen=True)
class RowSums:
    """A row function's sums with their slopes, for the engine's graph-free gradient.

    Attributes:
        values: ``[m]`` sums over the block, computed without autograd (decorate the row function with
            ``@torch.no_grad()``).
        slopes: one entry per sum: ``∂values[k]/∂sim`` as a ``[b, M]`` tensor (a boolean tensor stands for its
            0/1 indicator), or ``None`` where the sum does not depend on the scores (a count).
    """

    values: Tensor
    slopes: tuple[Tensor | None, ...]

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or len(self.slopes) != self.values.numel():
            raise ValueError(
                f"RowSums needs 1-D values and one slope per value, got values of shape {tuple(self.values.shape)} "
                f"and {len(self.slopes)} slopes"
            )

    def linearized(self, sim: Tensor) -> Tensor:
        """The values as a differentiable function of ``sim`` with the right first derivative (for replays)."""
        zero = sim.new_zeros(())
        changes = []
        for slope in self.slopes:
            inner = zero if slope is None else (slope.to(sim.dtype) * sim).sum()
            changes.append(inner - inner.detach())
        return self.values.detach() + torch.stack(changes).to(self.values.dtype)


RowFunction = Callable[[PairBlock], "Tensor | RowSums"]


class CrossRankHook(Protocol):
    """How the engine spans several processes (implemented by :mod:`pairloss.training.distributed`).

    ``gather`` returns the global reference set (with a gradient path back to each owner), its labels, and the offset
    of this rank's rows in it; ``reduce`` sums the row statistics of all ranks.
    """

    def gather(self, prepared: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]: ...

    def reduce(self, sums: Tensor) -> Tensor: ...


#: Set by :func:`pairloss.training.distributed.cross_rank_pairs`: while set, the engine uses the local rows as anchors
#: against the batch of every rank, and returns the statistics summed over ranks.
CROSS_RANK: ContextVar[CrossRankHook | None] = ContextVar("pairloss_cross_rank", default=None)


def auto_block_size(n_rows: int, n_columns: int, element_size: int, working_copies: int) -> int:
    """Rows per block: ``working_copies`` temporaries of ``[b, n_columns]`` fit the memory budget
    (:func:`pairloss.memory.get_memory_budget`), and each one stays under
    :data:`~pairloss.memory.MAX_TEMPORARY_BYTES`."""
    return memory.rows_per_block(
        n_rows, n_columns * element_size, working_copies, max_temporary=memory.MAX_TEMPORARY_BYTES
    )


@dataclass(frozen=True)
class _Plan:
    row_fn: RowFunction
    similarity: BaseSimilarity
    pairs: PairSelector
    query_labels: Tensor
    reference_labels: Tensor
    self_offset: int | None
    block_size: int
    symmetric: bool
    wants_gradient: bool

    def blocks(self, n: int) -> list[tuple[int, int]]:
        return memory.row_blocks(n, self.block_size)

    def block_result(
        self, query_block: Tensor, reference: Tensor, start: int, params: Sequence[Tensor]
    ) -> tuple[PairBlock, Tensor | RowSums]:
        """Score the anchors ``start : start + b`` and run the row function on them (in symmetric mode, against the
        columns ``start:`` with only the pairs ``j > i`` in the masks)."""
        b = query_block.shape[0]
        rows = torch.arange(start, start + b, device=query_block.device)
        query_labels = self.query_labels[start : start + b]
        column_offset = start if self.symmetric else 0
        reference = reference[column_offset:]
        reference_labels = self.reference_labels[column_offset:]
        pairs = self.pairs.block(query_labels, reference_labels, rows, column_offset, self.self_offset, self.symmetric)
        block = PairBlock(
            sim=self.similarity.pairwise(query_block, reference),
            positive=pairs.positive,
            negative=pairs.negative,
            rows=rows,
            query_labels=query_labels,
            reference_labels=reference_labels,
            query=query_block,
            reference=reference,
            params=tuple(params),
            self_pairs=self.self_offset is not None,
            column_offset=column_offset,
            positive_count=pairs.positive_count,
            negative_count=pairs.negative_count,
            triplets=pairs.triplets,
        )
        result = self.row_fn(block)
        values = result.values if isinstance(result, RowSums) else result
        if values.ndim != 1:
            raise ValueError(f"a row function must return a 1-D tensor of sums, got shape {tuple(values.shape)}")
        return block, result

    def block_sums(self, query_block: Tensor, reference: Tensor, start: int, params: Sequence[Tensor]) -> Tensor:
        """The block's sums as a differentiable tensor (each pair counted twice in symmetric mode)."""
        block, result = self.block_result(query_block, reference, start, params)
        sums = result.linearized(block.sim) if isinstance(result, RowSums) else result
        return 2 * sums if self.symmetric else sums


class _SlopeGradients:
    """Per statistic ``k``, the gradients ``∂T_k/∂query`` and ``∂T_k/∂reference``, accumulated block by block."""

    def __init__(self, similarity: BaseSimilarity, query: Tensor, reference: Tensor, n_stats: int) -> None:
        self.similarity = similarity
        self.query = query
        self.reference = reference
        self.per_stat: list[tuple[Tensor, Tensor] | None] = [None] * n_stats

    def add(self, block: PairBlock, slopes: Sequence[Tensor | None], factor: float) -> None:
        if len(slopes) != len(self.per_stat):
            raise ValueError(f"the row function returned {len(slopes)} sums, earlier blocks {len(self.per_stat)}")
        for k, slope in enumerate(slopes):
            if slope is None:
                continue
            if self.per_stat[k] is None:
                self.per_stat[k] = (torch.zeros_like(self.query), torch.zeros_like(self.reference))
            grad_query, grad_reference = self.per_stat[k]  # type: ignore[misc]
            start = int(block.rows[0])
            self._apply(
                block,
                slope,
                factor,
                grad_query[start : start + block.rows.numel()],
                grad_reference[block.column_offset :],
            )

    def _apply(self, block: PairBlock, slope: Tensor, factor: float, grad_q: Tensor, grad_r: Tensor) -> None:
        """Add the gradient of ``factor · Σ_ij slope_ij · s(q_i, r_j)``: two matmuls over the block, or two sparse
        products over the non-zero slopes when there are few."""
        active = int(slope.count_nonzero())
        if active == 0:
            return
        weight: Tensor | SparsePairWeights
        if active <= SPARSE_SLOPE_DENSITY * slope.numel() and block.sim.dtype in (torch.float32, torch.float64):
            weight = SparsePairWeights.from_dense(slope, block.sim.dtype)
        else:
            weight = slope.to(block.sim.dtype)
        self.similarity.add_pairwise_vjp(block.query, block.reference, block.sim, weight, grad_q, grad_r, factor)

    def combine(self, grad_total: Tensor) -> tuple[Tensor, Tensor]:
        grad_query = torch.zeros_like(self.query)
        grad_reference = torch.zeros_like(self.reference)
        for g, per_stat in zip(grad_total.tolist(), self.per_stat, strict=True):
            if per_stat is not None and g != 0:
                grad_query.add_(per_stat[0], alpha=g)
                grad_reference.add_(per_stat[1], alpha=g)
        return grad_query, grad_reference


class _RowBlockSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan: _Plan, query: Tensor, reference: Tensor, *params: Tensor) -> Tensor:
        total: Tensor | None = None
        slope_gradients: _SlopeGradients | None = None
        factor = 2.0 if plan.symmetric else 1.0
        with torch.no_grad():
            for start, stop in plan.blocks(query.shape[0]):
                block, result = plan.block_result(query[start:stop], reference, start, params)
                if isinstance(result, RowSums):
                    if plan.wants_gradient and any(p.requires_grad for p in params):
                        raise ValueError("a row function that returns RowSums cannot take differentiable params")
                    if plan.wants_gradient:
                        if slope_gradients is None:
                            slope_gradients = _SlopeGradients(plan.similarity, query, reference, len(result.slopes))
                        slope_gradients.add(block, result.slopes, factor)
                    sums = result.values
                else:
                    sums = result
                sums = factor * sums.to(torch.float64)
                total = sums if total is None else total + sums
        assert total is not None  # the engine is only called with at least one row
        ctx.plan = plan
        ctx.slope_gradients = slope_gradients
        ctx.save_for_backward(query, reference, *params)
        return total.to(query.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        query, reference, *params = ctx.saved_tensors
        need = ctx.needs_input_grad[1:]
        if ctx.slope_gradients is not None:
            grad_query, grad_reference = ctx.slope_gradients.combine(grad_total)
            return (None, grad_query if need[0] else None, grad_reference if need[1] else None, *[None] * len(params))
        return (None, *_replay(ctx.plan, grad_total, query, reference, params, need))


def _replay(
    plan: _Plan, grad_total: Tensor, query: Tensor, reference: Tensor, params: Sequence[Tensor], need: Sequence[bool]
) -> list[Tensor | None]:
    """The backward by recomputation: each block again under autograd, its vector-Jacobian product accumulated."""
    reference_leaf = reference.detach().requires_grad_(need[1])
    param_leaves = [p.detach().requires_grad_(n) for p, n in zip(params, need[2:], strict=True)]
    grad_query = torch.zeros_like(query) if need[0] else None
    grad_reference = torch.zeros_like(reference) if need[1] else None
    grad_params = [torch.zeros_like(p) if n else None for p, n in zip(params, need[2:], strict=True)]
    for start, stop in plan.blocks(query.shape[0]):
        with torch.enable_grad():
            query_leaf = query[start:stop].detach().requires_grad_(need[0])
            leaves = [query_leaf, reference_leaf, *param_leaves]
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            if not wanted:
                break
            sums = plan.block_sums(query_leaf, reference_leaf, start, param_leaves)
            grads = iter(torch.autograd.grad(sums, wanted, grad_total.to(sums.dtype), allow_unused=True))
        got = [next(grads) if leaf.requires_grad else None for leaf in leaves]
        if grad_query is not None and got[0] is not None:
            grad_query[start:stop] += got[0]
        if grad_reference is not None and got[1] is not None:
            grad_reference += got[1]
        for accumulated, g in zip(grad_params, got[2:], strict=True):
            if accumulated is not None and g is not None:
                accumulated += g
    return [grad_query, grad_reference, *grad_params]


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
    pairs: PairSelector | None = None,
    params: Sequence[Tensor] = (),
    block_size: int | None = None,
    working_copies: int = 12,
    symmetric: bool = False,
) -> Tensor:
    """Σ over anchors of ``row_fn`` on blocks of the pair matrix, with a memory-bounded backward.

    Args:
        row_fn: maps a :class:`PairBlock` to a 1-D tensor of sums over the block's anchors.
        query: raw embeddings ``[N, D]`` (``similarity.prepare`` is applied here, under ordinary autograd).
        query_labels: ``[N]`` class ids or ``[N, C]`` multi-hot labels.
        reference, reference_labels: an optional separate reference set (``[M, D]``, ``[M]``); by default the
            queries themselves, with the self-pairs excluded.
        similarity: how pairs are scored.
        pairs: which pairs of each block are positive and negative (:class:`pairloss.pairs.LabelPairs` by default).
        params: extra tensors the row function uses and that may need gradients.
        block_size: anchors per block; chosen from the memory budget (:mod:`pairloss.memory`) when ``None``.
        working_copies: how many ``[b, M]`` temporaries the row function holds at once (for the automatic size).
        symmetric: the statistics are sums of a per-pair function symmetric in ``(i, j)`` (see the module notes);
            used when the queries are their own references on one process and the pair selector is symmetric,
            ignored otherwise.

    A row function returning :class:`RowSums` gets its gradient accumulated during this call (when one is needed)
    instead of a recomputation in backward; it must then not use differentiable ``params``.

    Returns:
        The summed statistics ``T`` (1-D), differentiable w.r.t. ``query``, ``reference`` and ``params``. Inside
        :func:`pairloss.training.distributed.cross_rank_pairs`, the local rows are the anchors, the batches of all
        ranks are the references, and ``T`` is summed over ranks.
    """
    hook = CROSS_RANK.get()
    q, r, q_labels, r_labels, offset = _prepare(similarity, query, query_labels, reference, reference_labels, hook)
    if block_size is None:
        block_size = auto_block_size(q.shape[0], r.shape[0], q.element_size(), working_copies)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    wants_gradient = torch.is_grad_enabled() and any(t.requires_grad for t in (q, r, *params))
    selector = LabelPairs() if pairs is None else pairs
    symmetric = symmetric and selector.symmetric and hook is None and reference is None
    plan = _Plan(row_fn, similarity, selector, q_labels, r_labels, offset, block_size, symmetric, wants_gradient)
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
    pairs: PairSelector | None = None,
    params: Sequence[Tensor] = (),
) -> Tensor:
    """The same sums as :func:`row_block_sums` from the whole ``N×M`` matrix under plain autograd (a reference)."""
    q, r, q_labels, r_labels, offset = _prepare(similarity, query, query_labels, reference, reference_labels)
    selector = LabelPairs() if pairs is None else pairs
    plan = _Plan(row_fn, similarity, selector, q_labels, r_labels, offset, max(1, q.shape[0]), False, False)
    return plan.block_sums(q, r, 0, params)
