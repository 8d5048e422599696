"""Cross-rank pairs: a pairwise loss over the batches of every process of a ``torch.distributed`` group.

A loss computed per rank sees B of the P·B samples and misses most pairs. This module makes the loss on P ranks
equal to the loss on the concatenated batch, for any loss of the library, with gradients that DDP's averaging turns
into the gradient of that global loss.

Two ways, chosen per loss by :class:`CrossRankLoss` (``mode="auto"``):

* **engine** (losses on the row-block engine, ``PairLoss.supports_cross_rank``): each rank's anchors are its own rows,
  its references are the gathered batch of all ranks, so each rank computes 1/P of the pairs. The engine's row
  statistics are summed over ranks (``all_reduce``) before the loss combines them, so the value is the global loss
  on every rank. Gradients flow back to the owner of each reference row through the gather.
* **gather** (any other loss, e.g. ranking losses whose groups are split across ranks): every tensor argument is
  gathered with its gradient path and every rank computes the loss on the global batch (P-fold duplicated work).

Scaling: DDP averages parameter gradients over ranks. In both modes the gradient that reaches a rank's own
embeddings is P times its share of the global gradient, so that the average over ranks is the global gradient.
Unequal batch sizes are padded for the collectives and the padding removed again. Collectives come from
``torch.distributed`` (gloo on CPU, nccl on GPU); nothing here talks to the network itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pairloss.engine import CROSS_RANK

__all__ = [
    "CrossRankLoss",
    "all_gather_with_grad",
    "average_gradients",
    "cross_rank_pairs",
    "process_group_from_environment",
    "sum_across_ranks",
]


def _sizes(n: int, device: torch.device, group: Any) -> list[int]:
    local = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, local, group=group)
    return [int(s) for s in sizes]


class _GatherRows(torch.autograd.Function):
    """All-gather of row blocks of unequal length; backward sums every rank's gradient for this rank's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, sizes: list[int], rank: int, group: Any) -> Tensor:
        width = max(sizes)
        padded = tensor.new_zeros((width, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None, None


def all_gather_with_grad(tensor: Tensor, group: Any = None) -> tuple[Tensor, int]:
    """Concatenate ``tensor`` (rows may differ in number per rank) from every rank, in rank order.

    Returns the global tensor and the offset of this rank's rows in it. The gradient of every row goes back to the
    rank that owns it, summed over all ranks that used it. Integer tensors (labels) are gathered without gradient.
    """
    sizes = _sizes(tensor.shape[0], tensor.device, group)
    rank = dist.get_rank(group)
    offset = sum(sizes[:rank])
    if not tensor.is_floating_point():
        width = max(sizes)
        padded = tensor.new_zeros((width, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]), offset
    gathered: Tensor = _GatherRows.apply(tensor, sizes, rank, group)
    return gathered, offset


class _SumAcrossRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` whose backward hands each rank ``world_size ×`` the incoming gradient (DDP scaling)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        ctx.world_size = dist.get_world_size(group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.world_size, None


def sum_across_ranks(tensor: Tensor, group: Any = None) -> Tensor:
    """Σ over ranks of ``tensor``; the gradient each rank receives is scaled by the world size (see module doc)."""
    result: Tensor = _SumAcrossRanks.apply(tensor, group)
    return result


@dataclass(frozen=True)
class _EngineHook:
    group: Any

    def gather(self, prepared: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, int]:
        reference, offset = all_gather_with_grad(prepared, self.group)
        reference_labels, _ = all_gather_with_grad(labels, self.group)
        return reference, reference_labels, offset

    def reduce(self, sums: Tensor) -> Tensor:
        return sum_across_ranks(sums, self.group)


@contextmanager
def cross_rank_pairs(group: Any = None) -> Iterator[None]:
    """Within this block, every loss on the row-block engine pairs the local rows with the batches of all ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("cross_rank_pairs needs an initialised torch.distributed process group")
    token = CROSS_RANK.set(_EngineHook(group))
    try:
        yield
    finally:
        CROSS_RANK.reset(token)


class CrossRankLoss(nn.Module):
    """Wrap any loss so that, under ``torch.distributed``, it is the loss of the concatenated global batch.

    Args:
        loss: the loss module (any of the library's).
        mode: ``"engine"`` (anchors local, references global, 1/P of the work; only for losses whose value comes
            entirely from the row-block engine, marked ``supports_cross_rank``), ``"gather"`` (gather every tensor
            argument and compute the whole loss on each rank), or ``"auto"`` (engine when supported).
        group: the process group (default: the world).

    Outside an initialised process group the wrapper is the plain loss. With DDP, call ``backward`` on the returned
    value as usual: DDP's gradient averaging then yields the gradient of the global loss.
    """

    def __init__(self, loss: nn.Module, mode: Literal["auto", "engine", "gather"] = "auto", group: Any = None):
        super().__init__()
        if mode not in ("auto", "engine", "gather"):
            raise ValueError(f"mode must be 'auto', 'engine' or 'gather', got {mode!r}")
        supported = bool(getattr(loss, "supports_cross_rank", False))
        if mode == "engine" and not supported:
            raise ValueError(f"{type(loss).__name__} does not compute its value on the engine alone; use 'gather'")
        self.loss = loss
        self.mode = "engine" if mode == "engine" or (mode == "auto" and supported) else "gather"
        self.group = group

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            result: Tensor = self.loss(*args, **kwargs)
            return result
        if self.mode == "engine":
            with cross_rank_pairs(self.group):
                result = self.loss(*args, **kwargs)
            return result
        gathered_args = [self._gather(a) for a in args]
        gathered_kwargs = {k: self._gather(v) for k, v in kwargs.items()}
        result = self.loss(*gathered_args, **gathered_kwargs)
        # every rank computed the same global loss; the gather's backward already sums all P copies of each
        # row's gradient, which is the P-fold scaling that DDP's averaging expects.
        return result

    def _gather(self, value: Any) -> Any:
        if isinstance(value, Tensor) and value.ndim >= 1:
            return all_gather_with_grad(value, self.group)[0]
        return value


@contextmanager
def process_group_from_environment() -> Iterator[None]:
    """Inside: the process group that ``torchrun`` describes (``WORLD_SIZE > 1``; nccl on CUDA, else gloo), started
    here and destroyed on leaving once every rank is done; a group that already exists is used and left to its
    owner; nothing happens for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
        dist.barrier()  # every rank is done before the group (and rank 0's store) goes away
    finally:
        dist.destroy_process_group()


def average_gradients(parameters: Iterable[nn.Parameter], group: Any = None) -> None:
    """Replace each parameter's gradient by its mean over the ranks (what ``DistributedDataParallel`` does), in
    one ``all_reduce`` of the flattened gradients; a missing gradient counts as zero. No-op without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
