"""One memory budget for every blocked computation in the library, and the block loop that respects it.

A pairwise loss never needs its whole ``N × M`` (or ``B × L × L``) pair tensor at once: it can be evaluated a block
of rows at a time, each block's temporaries freed before the next. How large a block may be is one setting,

    pairloss.set_memory_budget(2**30)          # for the rest of the program
    with pairloss.memory_budget(256 * 2**20):  # for a block of code (restored on exit)
        loss = loss_fn(embeddings, labels)

read by everything that evaluates in blocks: the row-block engine (:mod:`pairloss.engine`, and so every embedding
loss), the pairwise and listwise ranking losses, the multi-label label pairs, the sigmoid rank sums of RS@k and
Smooth-AP, and the optimal-transport tensors of M3G (which cannot be split, so a problem beyond the budget is
refused with a ``ValueError`` that says how much it needs).

Two per-temporary caps are speed settings rather than memory limits and stay below any budget:
:data:`MAX_TEMPORARY_BYTES` keeps each of the engine's ``[b, M]`` temporaries under the C allocator's threshold for
returning memory to the system, and callers whose temporaries should stay in the CPU caches pass a smaller
``max_temporary`` to :func:`rows_per_block`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import cast

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from pairloss._tracing import constant_when_traced

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MAX_TEMPORARY_BYTES",
    "blocked_sum",
    "get_memory_budget",
    "memory_budget",
    "row_blocks",
    "rows_per_block",
    "set_memory_budget",
]

#: Bytes the temporaries of one blocked computation may take unless :func:`set_memory_budget` says otherwise.
DEFAULT_MEMORY_BUDGET = 2**30

#: Largest single ``[b, M]`` temporary of the engine. The C allocator hands larger buffers back to the system when
#: they are freed (glibc's mmap threshold is at most 32 MiB), so every block would page-fault its temporaries in
#: again, which costs about four times the arithmetic on them; smaller blocks reuse the same memory. Measured at
#: N = 8192: contrastive forward + backward 2.2 s with 2730-row blocks, 1.45 s with 256-row blocks.
MAX_TEMPORARY_BYTES = 8 * 2**20

_program_budget = DEFAULT_MEMORY_BUDGET
_scoped_budget: ContextVar[int | None] = ContextVar("pairloss_memory_budget", default=None)


def _check_budget(n_bytes: int) -> int:
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or n_bytes < 1:
        raise ValueError(f"the memory budget must be a positive number of bytes, got {n_bytes!r}")
    return n_bytes


def get_memory_budget() -> int:
    """The bytes one blocked computation's temporaries may take here and now (a constant of the graph under
    :func:`torch.compile`)."""
    return cast(int, _budget_now())


@constant_when_traced
def _budget_now() -> int:
    scoped = _scoped_budget.get()
    return _program_budget if scoped is None else scoped


def set_memory_budget(n_bytes: int | None) -> None:
    """Set the memory budget for the rest of the program (``None``: back to :data:`DEFAULT_MEMORY_BUDGET`).

    A :func:`memory_budget` block in progress keeps its own value until it ends.
    """
    global _program_budget
    _program_budget = DEFAULT_MEMORY_BUDGET if n_bytes is None else _check_budget(n_bytes)


@contextmanager
def memory_budget(n_bytes: int) -> Iterator[None]:
    """Use ``n_bytes`` as the memory budget inside a ``with`` block (and in the code it calls), then restore it."""
    token = _scoped_budget.set(_check_budget(n_bytes))
    try:
        yield
    finally:
        _scoped_budget.reset(token)


def rows_per_block(n_rows: int, row_bytes: int, copies: int = 1, *, max_temporary: int | None = None) -> int:
    """Rows per block such that ``copies`` temporaries of ``row_bytes`` per row fit the memory budget and, when
    ``max_temporary`` is given, each temporary stays under it. At least 1 and at most ``n_rows`` (when positive)."""
    row_bytes = max(1, int(row_bytes))
    rows = get_memory_budget() // (row_bytes * max(1, copies))
    if max_temporary is not None:
        rows = min(rows, max_temporary // row_bytes)
    return int(max(1, min(max(n_rows, 1), rows)))


def row_blocks(n_rows: int, block_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_rows)`` in blocks of ``block_size`` rows."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return [(start, min(start + block_size, n_rows)) for start in range(0, n_rows, block_size)]


def blocked_sum(fn: Callable[..., Tensor], tensors: Sequence[Tensor], *, row_bytes: int, copies: int = 1) -> Tensor:
    """``Σ_blocks fn(*block)`` over blocks of rows (the first dimension of every tensor in ``tensors``).

    ``fn`` maps a block to a small vector of sums; each row costs ``copies`` temporaries of ``row_bytes``. With more
    than one block and a gradient to compute, each block runs under activation checkpointing, so its temporaries are
    freed after the forward pass and recomputed in the backward: the peak is one block's, not the batch's. This is
    the evaluator for functions whose gradient is not known in closed form (listwise losses); the pair losses get
    their slopes from their links instead and never recompute.
    """
    n_rows = int(tensors[0].shape[0])
    size = rows_per_block(n_rows, row_bytes, copies)
    if size >= n_rows:
        return fn(*tensors)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    total: Tensor | None = None
    for start, stop in row_blocks(n_rows, size):
        part = tuple(t[start:stop] for t in tensors)
        value = checkpoint(fn, *part, use_reentrant=False) if needs_grad else fn(*part)
        assert isinstance(value, Tensor)
        total = value if total is None else total + value
    assert total is not None
    return total
