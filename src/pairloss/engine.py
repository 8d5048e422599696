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

import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pairloss import links, memory
from pairloss._block_threads import block_workers, run_blocks
from pairloss._sparse_pairs import SparsePairWeights
from pairloss._tracing import constant_when_traced, host_reads_allowed
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
    "cross_rank_hook",
    "dense_row_sums",
    "row_block_sums",
    "sync_free",
]

#: On the CPU outside :func:`torch.compile`, a slope with at most this fraction of non-zero entries is applied by
#: two sparse (compressed-row) products instead of two dense matmuls over the whole block. Deciding reads the count
#: of non-zero slopes back to the host, which on the CPU costs nothing (the count is already computed) but would
#: stall a GPU stream and cannot be traced, so accelerators and compiled code always take the dense products (see
#: :func:`sync_free`). 0 turns the sparse products off on the CPU too.
SPARSE_SLOPE_DENSITY = 0.02


def sync_free(device: torch.device) -> bool:
    """Whether the engine takes its **sync-free path** on ``device``: no value read back to the host, every slope
    and mask applied densely, the fused row functions, and blocks up to :data:`ENGINE_MAX_TEMPORARY_BYTES`.

    Always on an accelerator and under :func:`torch.compile`. On the CPU, where a read-back is only a load of a
    value already computed and the sparse products of mostly-zero slopes save most of the arithmetic, the engine
    by default reads counts back and takes the sparse paths with smaller blocks (measured faster there); setting
    both :data:`SPARSE_SLOPE_DENSITY` and :data:`pairloss.links.SPARSE_MASK_DENSITY` to 0 selects the sync-free
    path on the CPU as well.
    """
    dense_on_cpu = SPARSE_SLOPE_DENSITY <= 0 and links.SPARSE_MASK_DENSITY <= 0
    return not host_reads_allowed(device) or dense_on_cpu


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
    workspace: Callable[[int], Tensor] | None = None

    def slope_buffer(self, n_slopes: int) -> Tensor:
        """A ``[n_slopes, b, M]`` tensor of the scores' dtype to write slopes into (uninitialised): the engine's
        workspace, reused from block to block, when it accumulates slopes; a fresh tensor otherwise. Slopes
        written here and returned as :attr:`RowSums.stacked` cost the engine no copy."""
        if self.workspace is not None:
            return self.workspace(n_slopes)
        return self.sim.new_empty(n_slopes, self.sim.shape[0], self.sim.shape[1])


@dataclass(frozen=True)
class RowSums:
    """A row function's sums with their slopes, for the engine's graph-free gradient.

    Attributes:
        values: ``[m]`` sums over the block, computed without autograd (decorate the row function with
            ``@torch.no_grad()``).
        slopes: one entry per sum: ``∂values[k]/∂sim`` as a ``[b, M]`` tensor (a boolean tensor stands for its
            0/1 indicator), or ``None`` where the sum does not depend on the scores (a count).
        stacked: optionally, the non-``None`` slopes in order as one ``[K, b, M]`` tensor (from
            :meth:`PairBlock.slope_buffer`; ``slopes`` then holds its views ``stacked[k]``).
    """

    values: Tensor
    slopes: tuple[Tensor | None, ...]
    stacked: Tensor | None = None

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


@constant_when_traced
def _cross_rank_set() -> bool:
    return CROSS_RANK.get() is not None


def cross_rank_hook() -> CrossRankHook | None:
    """The hook set by :func:`pairloss.training.distributed.cross_rank_pairs`, or ``None``. Readable under
    :func:`torch.compile` (where cross-rank pairs are refused: their collectives are not traced)."""
    if torch.compiler.is_compiling():
        if _cross_rank_set():
            raise ValueError("cross_rank_pairs cannot be used inside torch.compile; compile the loss outside it")
        return None
    return CROSS_RANK.get()


#: On the CPU default path (see :func:`sync_free`) the engine's blocks are run in groups of this many consecutive
#: blocks, one group at a time per thread (:mod:`pairloss._block_threads`); each group accumulates its reference
#: gradient in a buffer of its own, added to the total in group order, so larger groups mean fewer buffers to clear
#: and add, and smaller ones a finer share of the work between threads. The groups do not depend on the number of
#: threads, and so neither do the results.
BLOCKS_PER_GROUP = 4

#: Largest single ``[b, M]`` temporary of an engine block on the sync-free path (:func:`sync_free`). Larger than
#: :data:`pairloss.memory.MAX_TEMPORARY_BYTES` because the engine's big per-block tensors (the scores, the slopes)
#: live in workspaces allocated once per call and reused by every block, so a block's size is not bounded by the
#: allocator's reuse threshold, and fewer, larger blocks mean fewer kernel launches. The CPU's default path keeps
#: :data:`pairloss.memory.MAX_TEMPORARY_BYTES`: its element-wise passes over a smaller block run faster there.
ENGINE_MAX_TEMPORARY_BYTES = 32 * 2**20


def auto_block_size(
    n_rows: int,
    n_columns: int,
    element_size: int,
    working_copies: int,
    max_temporary: int = ENGINE_MAX_TEMPORARY_BYTES,
) -> int:
    """Rows per block: ``working_copies`` temporaries of ``[b, n_columns]`` fit the memory budget
    (:func:`pairloss.memory.get_memory_budget`), and each one stays under ``max_temporary`` bytes; the rows are
    then spread evenly over the blocks that this requires."""
    size = memory.rows_per_block(n_rows, n_columns * element_size, working_copies, max_temporary=max_temporary)
    n_blocks = -(-n_rows // size)
    return -(-n_rows // n_blocks)


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
        self,
        query_block: Tensor,
        reference: Tensor,
        start: int,
        params: Sequence[Tensor],
        workspace: _Workspace | None = None,
    ) -> tuple[PairBlock, Tensor | RowSums]:
        """Score the anchors ``start : start + b`` and run the row function on them (in symmetric mode, against the
        columns ``start:`` with only the pairs ``j > i`` in the masks)."""
        b = query_block.shape[0]
        rows = (
            torch.arange(start, start + b, device=query_block.device) if workspace is None else workspace.rows(start, b)
        )
        query_labels = self.query_labels[start : start + b]
        column_offset = start if self.symmetric else 0
        reference = reference[column_offset:]
        reference_labels = self.reference_labels[column_offset:]
        pairs = self.pairs.block(query_labels, reference_labels, rows, column_offset, self.self_offset, self.symmetric)
        if workspace is None:
            sim = self.similarity.pairwise(query_block, reference)
        else:
            sim = workspace.scorer(start, start + b, column_offset, workspace.scores(b, reference.shape[0]))
        block = PairBlock(
            sim=sim,
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
            workspace=None if workspace is None else workspace.slope_view(b, reference.shape[0]),
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


class _Workspace:
    """The buffers an engine call reuses from block to block: the ``[b, M]`` scores and the ``[K, b, M]`` slopes
    (flat storage, viewed at each block's width), and the similarity's block scorer (per-vector work, such as
    squared norms, done once per call)."""

    def __init__(self, similarity: BaseSimilarity, query: Tensor, reference: Tensor, block_size: int) -> None:
        self.scorer = similarity.block_scorer(query, reference)
        self._rows = torch.arange(query.shape[0], device=query.device)
        self.rows_per_block = min(block_size, query.shape[0])
        self.width = reference.shape[0]
        self._scores = query.new_empty(self.rows_per_block * self.width)
        self._slopes = query.new_empty(0)

    def rows(self, start: int, b: int) -> Tensor:
        """The global indices ``start : start + b`` (a view of one ``arange`` made per call)."""
        return self._rows[start : start + b]

    def scores(self, b: int, width: int) -> Tensor | None:
        """The block's score buffer; none under :func:`torch.compile`, which plans its own memory (and whose
        tracer refuses ``out=`` next to inputs that require a gradient)."""
        if torch.compiler.is_compiling():
            return None
        return self._scores[: b * width].view(b, width)

    def slope_view(self, b: int, width: int) -> Callable[[int], Tensor]:
        def view(n_slopes: int) -> Tensor:
            if self._slopes.numel() < self.rows_per_block * n_slopes * self.width:
                self._slopes = self._scores.new_empty(self.rows_per_block * n_slopes * self.width)
            return self._slopes[: b * n_slopes * width].view(n_slopes, b, width)

        return view


class _SlopeGradients:
    """The gradients ``∂T_k/∂query`` and ``∂T_k/∂reference`` of the statistics with a slope, accumulated block by
    block in two preallocated tensors, ``[K, N, D]`` and ``[K, M, D]`` (``K`` slopes), with one matrix product per
    direction and block for all of them: the block's slopes sit in one reused ``[K, b, M]`` workspace (written
    there by the row function, :meth:`PairBlock.slope_buffer`, or copied).

    On the sync-free path (:func:`sync_free`) no count of non-zero slopes is read back (that would wait for the
    device on every block) and the slopes are applied by dense products. Otherwise (the CPU by default) each slope
    with at most :data:`SPARSE_SLOPE_DENSITY` non-zero entries is applied by sparse products, one read-back of its
    count per slope and block.

    ``ordered=True`` (the CPU default, whose blocks may run on several threads, :mod:`pairloss._block_threads`):
    the blocks come in fixed groups of consecutive blocks (:data:`BLOCKS_PER_GROUP`), each run by one thread in
    order; a group's reference gradient goes to a buffer of its own, added to the total in group order as soon as
    the groups before it are in, so the sum is the same for any number of threads (the query rows of the blocks
    are disjoint and written in place).
    """

    def __init__(self, similarity: BaseSimilarity, query: Tensor, reference: Tensor, ordered: bool = False) -> None:
        self.similarity = similarity
        self.query = query
        self.reference = reference
        self.sloped: list[int] | None = None
        self.n_stats = 0
        self.grad_query = query.new_zeros(0)
        self.grad_reference = reference.new_zeros(0)
        self._lock = threading.Lock() if ordered else None  # none on the sync-free path (traced by torch.compile)
        self._open: dict[int, tuple[int, Tensor]] = {}  # group -> (first column, reference gradient buffer)
        self._waiting: dict[int, tuple[int, Tensor] | None] = {}
        self._spare: list[Tensor] = []  # buffers of groups already added, reused (a fresh one costs page faults)
        self._next_group = 0

    def add(self, block: PairBlock, start: int, result: RowSums, factor: float, group: int = 0) -> None:
        """Add the gradients of a block of group number ``group`` (which orders the reference gradients when
        ``ordered``)."""
        slopes = result.slopes
        present = [k for k, slope in enumerate(slopes) if slope is not None]
        if self._lock is None:
            self._start(len(slopes), present)
        else:
            with self._lock:
                self._start(len(slopes), present)
        if len(slopes) != self.n_stats or present != self.sloped:
            raise ValueError("the row function returned other sums or slopes than for earlier blocks")
        if not present:
            return
        b, width = block.sim.shape
        offset = block.column_offset
        grad_query = self.grad_query[:, start : start + b]
        if self._lock is None:
            grad_reference = self.grad_reference[:, offset : offset + width]
        else:
            if group not in self._open:
                self._open[group] = (offset, self._buffer(len(present), width))
            first, buffer = self._open[group]
            grad_reference = buffer[:, offset - first : offset - first + width]
        self._add_block(block, result, present, factor, grad_query, grad_reference)

    def _start(self, n_stats: int, present: list[int]) -> None:
        """Allocate the accumulated gradients at the first block."""
        if self.sloped is None:
            self.n_stats, self.sloped = n_stats, present
            n_sloped, (n, d), m = len(present), self.query.shape, self.reference.shape[0]
            self.grad_query = self.query.new_zeros(n_sloped, n, d)
            self.grad_reference = self.reference.new_zeros(n_sloped, m, d)

    def _buffer(self, n_sloped: int, width: int) -> Tensor:
        """A zeroed ``[n_sloped, width, D]`` buffer for one group's reference gradient (a view of a flat one)."""
        assert self._lock is not None
        with self._lock:
            flat = self._spare.pop() if self._spare else None
        if flat is None:
            flat = self.grad_reference.new_empty(self.grad_reference.numel())
        return flat[: n_sloped * width * self.grad_reference.shape[2]].view(n_sloped, width, -1).zero_()

    def settle(self, group: int) -> None:
        """Hand in ``group``'s reference gradient (when ``ordered``, after its last block) and add every waiting
        one whose predecessors are all in."""
        assert self._lock is not None
        with self._lock:
            self._waiting[group] = self._open.pop(group, None)
            while self._next_group in self._waiting:
                part = self._waiting.pop(self._next_group)
                if part is not None:
                    first, buffer = part
                    self.grad_reference[:, first : first + buffer.shape[1]].add_(buffer)
                    assert buffer._base is not None  # a view of a flat buffer (_buffer)
                    self._spare.append(buffer._base)
                self._next_group += 1

    def _add_block(
        self,
        block: PairBlock,
        result: RowSums,
        present: list[int],
        factor: float,
        grad_query: Tensor,
        grad_reference: Tensor,
    ) -> None:
        slopes = result.slopes
        sparse = (
            SPARSE_SLOPE_DENSITY > 0
            and not sync_free(block.sim.device)
            and block.sim.dtype in (torch.float32, torch.float64)
        )
        if sparse:
            for index, k in enumerate(present):
                self._apply_one(block, slopes[k], factor, grad_query[index], grad_reference[index], sparse)  # type: ignore[arg-type]
            return
        weight = result.stacked
        if weight is None:
            weight = block.slope_buffer(len(present))
            for index, k in enumerate(present):
                weight[index].copy_(slopes[k])  # type: ignore[arg-type]
        self.similarity.add_stacked_pairwise_vjp(
            block.query, block.reference, block.sim, weight, grad_query, grad_reference, factor
        )

    def _apply_one(
        self, block: PairBlock, slope: Tensor, factor: float, grad_q: Tensor, grad_r: Tensor, sparse: bool
    ) -> None:
        """Add the gradient of ``factor · Σ_ij slope_ij · s(q_i, r_j)``: two matmuls over the block, or (with the
        sparse products enabled) two sparse products over the non-zero slopes when there are few."""
        weight: Tensor | SparsePairWeights = slope.to(block.sim.dtype)
        if sparse:
            active = int(slope.count_nonzero())
            if active == 0:
                return
            if active <= SPARSE_SLOPE_DENSITY * slope.numel():
                weight = SparsePairWeights.from_dense(slope, block.sim.dtype)
        if grad_q.is_contiguous() and grad_r.is_contiguous():
            self.similarity.add_pairwise_vjp(block.query, block.reference, block.sim, weight, grad_q, grad_r, factor)
            return
        scratch_q, scratch_r = torch.zeros_like(grad_q), torch.zeros_like(grad_r)
        self.similarity.add_pairwise_vjp(block.query, block.reference, block.sim, weight, scratch_q, scratch_r, factor)
        grad_q.add_(scratch_q)
        grad_r.add_(scratch_r)

    def combine(self, grad_total: Tensor) -> tuple[Tensor, Tensor]:
        """``Σ_k (∂L/∂T_k) ∂T_k/∂(query, reference)``: two products, no value read back to the host."""
        assert self.sloped is not None
        weights = grad_total[self.sloped].to(self.grad_query.dtype)
        grad_query = torch.tensordot(weights, self.grad_query, dims=1)
        grad_reference = torch.tensordot(weights, self.grad_reference, dims=1)
        return grad_query, grad_reference


def _accumulate(total: Tensor | None, sums: Tensor | None, factor: float) -> Tensor:
    """``total + factor · sums`` in float64, in place (a new total when ``total`` is ``None``)."""
    assert sums is not None  # every block has run
    if total is None:
        total = torch.zeros(sums.shape, dtype=torch.float64, device=sums.device)
    return total.add_(sums, alpha=factor)


class _RowBlockSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, plan: _Plan, query: Tensor, own_reference: Tensor | None, *params: Tensor) -> Tensor:
        # ``own_reference`` is None when the queries are their own references (one tensor, passed once)
        # On the CPU default path the blocks are shared by threads (one per intra-op thread, each running
        # single-threaded kernels, see pairloss._block_threads): each block's sums go to their own slot and its
        # reference gradient is added in block order, so the result is the same for any number of threads. The
        # sync-free path (accelerators, torch.compile) runs the blocks in order in the calling thread.
        reference = query if own_reference is None else own_reference
        factor = 2.0 if plan.symmetric else 1.0
        blocks = plan.blocks(query.shape[0])
        ordered = not sync_free(query.device)
        per_group = BLOCKS_PER_GROUP if ordered else len(blocks)
        n_groups = -(-len(blocks) // per_group)
        slope_gradients = _SlopeGradients(plan.similarity, query, reference, ordered)
        slots: list[Tensor | None] = [None] * len(blocks)

        def run(groups: Iterator[int]) -> None:
            workspace = _Workspace(plan.similarity, query, reference, plan.block_size)
            for group in groups:
                for index in range(group * per_group, min((group + 1) * per_group, len(blocks))):
                    start, stop = blocks[index]
                    block, result = plan.block_result(query[start:stop], reference, start, params, workspace)
                    if isinstance(result, RowSums):
                        if plan.wants_gradient and any(p.requires_grad for p in params):
                            raise ValueError("a row function that returns RowSums cannot take differentiable params")
                        if plan.wants_gradient:
                            slope_gradients.add(block, start, result, factor, group)
                        sums = result.values
                    else:
                        sums = result
                    if ordered:  # a copy: the row function may return a view of what the next block overwrites
                        slots[index] = sums.to(torch.float64, copy=True)
                    else:
                        slots[0] = _accumulate(slots[0], sums, factor)  # in block order, as it comes
                if ordered:
                    slope_gradients.settle(group)

        with torch.no_grad():
            run_blocks(n_groups, block_workers(query.device, n_groups) if ordered else 1, run)
            total = slots[0]
            if ordered:
                total = None
                for sums in slots:
                    total = _accumulate(total, sums, factor)
        assert total is not None  # the engine is only called with at least one row
        ctx.plan = plan
        ctx.slope_gradients = None if slope_gradients.sloped is None else slope_gradients
        ctx.shared = own_reference is None
        ctx.save_for_backward(query, *params) if ctx.shared else ctx.save_for_backward(query, reference, *params)
        return total.to(query.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_total: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.shared:
            query, *params = ctx.saved_tensors
            reference = query
            need = [ctx.needs_input_grad[1], ctx.needs_input_grad[1], *ctx.needs_input_grad[3:]]
        else:
            query, reference, *params = ctx.saved_tensors
            need = list(ctx.needs_input_grad[1:])
        if ctx.slope_gradients is not None:
            grads = [*ctx.slope_gradients.combine(grad_total), *[None] * len(params)]
        else:
            grads = _replay(ctx.plan, grad_total, query, reference, params, need)
        grad_query, grad_reference = (g if n else None for g, n in zip(grads[:2], need[:2], strict=True))
        if ctx.shared:
            total = grad_query if grad_reference is None else grad_reference.add_(grad_query)  # type: ignore[union-attr]
            return (None, total, None, *grads[2:])
        return (None, grad_query, grad_reference, *grads[2:])


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
    hook = cross_rank_hook()
    q, r, q_labels, r_labels, offset = _prepare(similarity, query, query_labels, reference, reference_labels, hook)
    if block_size is None:
        largest = ENGINE_MAX_TEMPORARY_BYTES if sync_free(q.device) else memory.MAX_TEMPORARY_BYTES
        block_size = auto_block_size(q.shape[0], r.shape[0], q.element_size(), working_copies, largest)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    wants_gradient = torch.is_grad_enabled() and any(t.requires_grad for t in (q, r, *params))
    selector = LabelPairs() if pairs is None else pairs
    symmetric = symmetric and selector.symmetric and hook is None and reference is None
    plan = _Plan(row_fn, similarity, selector, q_labels, r_labels, offset, block_size, symmetric, wants_gradient)
    result: Tensor = _RowBlockSums.apply(plan, q, None if r is q else r, *params)
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
