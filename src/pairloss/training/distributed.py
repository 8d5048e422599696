"""Cross-rank pairs: a pairwise loss over the batches of every process of a ``torch.distributed`` group.

A loss computed per rank sees B of the P·B samples and misses most pairs. This module makes the loss on P ranks
equal to the loss on the concatenated batch, for any loss of the library, with gradients that DDP's averaging turns
into the gradient of that global loss.

Two ways, chosen per loss by :class:`CrossRankLoss` (``mode="auto"``):

* **engine** (losses on the row-block engine, ``PairLoss.supports_cross_rank``): each rank's anchors are its own rows,
  its references are the gathered batch of all ranks, so each rank computes 1/P of the pairs. The engine's row
  statistics are summed over ranks (``all_reduce``) before the loss combines them, so the value is the global loss
  on every rank. Gradients flow back to the owner of each reference row through the gather.
* **gather** (any other loss, e.g. ranking losses whose groups are split across ranks, multi-view losses): every
  tensor argument is gathered along its sample axis (``PairLoss.batch_axes``: axis 1 of the views ``[k, n, d]``,
  each matrix of a list of views, padded ranking lists) with its gradient path, and every rank computes the loss on
  the global batch (P-fold duplicated work).

Before any gather, the ranks exchange the shapes and dtypes of their arguments (and, in engine mode, the outcome of
the local input checks), so that every rank takes the same decision: shards of different sizes are padded for the
collectives; ranking lists of different lengths are padded to the longest with the padding convention (relevance
``-1``); a rank without samples is fine as long as the global batch has some (engine losses then run in gather
mode for that call); inputs that cannot be joined, or that fail the checks on one rank, raise the same
``ValueError`` on every rank, before any collective that could wait for a missing partner or abort.

Scaling: DDP averages parameter gradients over ranks. In both modes the gradient that reaches a rank's own
embeddings is P times its share of the global gradient, so that the average over ranks is the global gradient.
Collectives come from ``torch.distributed`` (gloo on CPU, nccl on GPU); nothing here talks to the network itself.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pairloss._collectives import Shape, exchange, gather_padded
from pairloss.engine import CROSS_RANK
from pairloss.losses.base import BatchAxis, check_pair_inputs

__all__ = [
    "CrossRankLoss",
    "all_gather_with_grad",
    "average_gradients",
    "cross_rank_pairs",
    "process_group_from_environment",
    "sum_across_ranks",
]


class _GatherRows(torch.autograd.Function):
    """``gather_padded`` whose backward sums every rank's gradient for this rank's rows (and crops the padding)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, shapes: list[Shape], rank: int, group: Any, pad: float) -> Tensor:
        ctx.shapes, ctx.rank, ctx.group = shapes, rank, group
        return gather_padded(tensor, shapes, group, pad)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        own = ctx.shapes[ctx.rank]
        if grad.shape[0] == 0:
            return grad.new_zeros(own), None, None, None, None
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(shape[0] for shape in ctx.shapes[: ctx.rank])
        rows = grad[start : start + own[0]]
        return rows[(slice(None), *(slice(0, n) for n in own[1:]))], None, None, None, None


def _moved(shape: Shape, axis: int) -> Shape:
    return (shape[axis], *shape[:axis], *shape[axis + 1 :])


def _gather_known(tensor: Tensor, shapes: Sequence[Shape], axis: int, pad: float | None, group: Any) -> Tensor:
    """Gather ``tensor`` along ``axis`` from every rank, knowing every rank's shape (checked to be joinable)."""
    moved = [_moved(shape, axis) for shape in shapes]
    local = tensor.movedim(axis, 0)
    fill = 0.0 if pad is None else pad
    if tensor.is_floating_point() or tensor.is_complex():
        gathered: Tensor = _GatherRows.apply(local, moved, dist.get_rank(group), group, fill)
    else:
        gathered = gather_padded(local, moved, group, fill)
    return gathered.movedim(0, axis)


def _joinable(name: str, shapes: Sequence[Shape], dtypes: Sequence[str], axis: int, pad: float | None) -> str | None:
    """Why the shards ``shapes`` of one argument cannot be joined along ``axis`` (``None``: they can)."""
    described = ", ".join(f"rank {r}: {tuple(shape)} {dtype}" for r, (shape, dtype) in enumerate(zip(shapes, dtypes)))
    if len({len(shape) for shape in shapes}) > 1 or len(set(dtypes)) > 1:
        return f"{name} must have the same number of dimensions and dtype on every rank ({described})"
    if not 0 <= axis < len(shapes[0]):
        return f"{name} has no sample axis {axis} ({described})"
    if pad is None and len({_moved(shape, axis)[1:] for shape in shapes}) > 1:
        return f"{name} must have the same size on every rank along all axes but the sample axis {axis} ({described})"
    return None


def all_gather_with_grad(
    tensor: Tensor, group: Any = None, *, axis: int = 0, pad: float | None = None
) -> tuple[Tensor, int]:
    """Concatenate ``tensor`` from every rank along ``axis``, in rank order.

    Shards may differ in size along ``axis``; with ``pad`` given they may also differ along the other axes, which
    are then filled with ``pad`` up to the largest size. Returns the global tensor and the offset of this rank's
    samples in it. The gradient of every sample goes back to the rank that owns it, summed over all ranks that used
    it. Integer tensors (labels) are gathered without gradient. Shards that cannot be joined raise the same
    ``ValueError`` on every rank (the ranks exchange their shapes first).
    """
    everyone = exchange((tuple(tensor.shape), str(tensor.dtype)), group)
    shapes = [shape for shape, _ in everyone]
    problem = _joinable("tensor", shapes, [dtype for _, dtype in everyone], axis, pad)
    if problem is not None:
        raise ValueError(f"all_gather_with_grad: {problem}")
    offset = sum(shape[axis] for shape in shapes[: dist.get_rank(group)])
    return _gather_known(tensor, shapes, axis, pad, group), offset


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
    """Within this block, every loss on the row-block engine pairs the local rows with the batches of all ranks.

    Only for losses marked ``supports_cross_rank`` (their value is a function of the engine's sums alone) and with a
    non-empty shard on every rank; :class:`CrossRankLoss` checks both and handles every other case.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("cross_rank_pairs needs an initialised torch.distributed process group")
    token = CROSS_RANK.set(_EngineHook(group))
    try:
        yield
    finally:
        CROSS_RANK.reset(token)


@dataclass(frozen=True)
class _Argument:
    """What one rank tells the others about one argument of the loss before anything is gathered."""

    name: str
    kind: Literal["tensor", "tensors", "other"]
    shapes: tuple[Shape, ...] = ()
    dtypes: tuple[str, ...] = ()

    @staticmethod
    def describe(name: str, value: Any) -> _Argument:
        if isinstance(value, Tensor) and value.ndim >= 1:
            return _Argument(name, "tensor", (tuple(value.shape),), (str(value.dtype),))
        if (
            isinstance(value, list | tuple)
            and len(value) > 0
            and all(isinstance(v, Tensor) and v.ndim >= 1 for v in value)
        ):
            return _Argument(name, "tensors", tuple(tuple(v.shape) for v in value), tuple(str(v.dtype) for v in value))
        return _Argument(name, "other")


def _join_problem(arguments: Sequence[Sequence[_Argument]], axes: dict[str, BatchAxis]) -> str | None:
    """Why the arguments of all ranks cannot be joined into one batch (``None``: they can)."""
    names = [[a.name for a in rank_arguments] for rank_arguments in arguments]
    if any(other != names[0] for other in names[1:]):
        listed = "; ".join(f"rank {r}: {', '.join(n) or 'none'}" for r, n in enumerate(names))
        return f"the loss was called with different arguments on different ranks ({listed})"
    for column in zip(*arguments, strict=True):
        first = column[0]
        if any(a.kind != first.kind or len(a.shapes) != len(first.shapes) for a in column):
            kinds = ", ".join(f"rank {r}: {a.kind} ×{max(1, len(a.shapes))}" for r, a in enumerate(column))
            return f"argument {first.name!r} is not the same kind of value on every rank ({kinds})"
        spec = axes.get(first.name, BatchAxis())
        if first.kind == "other" or spec.axis is None:
            continue
        if first.kind == "tensors" and spec.axis == 0:
            return (
                f"argument {first.name!r} is a sequence of tensors, read as their stack along a new first axis: give "
                "its sample axis (>= 1) in batch_axes"
            )
        axis = spec.axis - 1 if first.kind == "tensors" else spec.axis
        for element in range(len(first.shapes)):
            label = first.name if first.kind == "tensor" else f"{first.name}[{element}]"
            problem = _joinable(
                label, [a.shapes[element] for a in column], [a.dtypes[element] for a in column], axis, spec.pad
            )
            if problem is not None:
                return problem
    return None


class CrossRankLoss(nn.Module):
    """Wrap any loss so that, under ``torch.distributed``, it is the loss of the concatenated global batch.

    Args:
        loss: the loss module (any of the library's, or any module whose tensor arguments hold samples along the
            axes given by its ``batch_axes``, axis 0 by default).
        mode: ``"engine"`` (anchors local, references global, 1/P of the work; only for losses whose value comes
            entirely from the row-block engine, marked ``supports_cross_rank``), ``"gather"`` (gather every tensor
            argument and compute the whole loss on each rank), or ``"auto"`` (engine when supported).
        group: the process group (default: the world).
        batch_axes: the sample axis (and padding) of arguments by name, over the loss's own ``batch_axes``
            (:class:`~pairloss.losses.base.BatchAxis`); an argument named nowhere has its samples along axis 0.

    Outside an initialised process group the wrapper is the plain loss. With DDP, call ``backward`` on the returned
    value as usual: DDP's gradient averaging then yields the gradient of the global loss. Every call first exchanges
    the arguments' shapes (one small collective), so that shards of any size, ranks without samples, and inputs that
    cannot be joined are handled alike on every rank (see the module notes).
    """

    def __init__(
        self,
        loss: nn.Module,
        mode: Literal["auto", "engine", "gather"] = "auto",
        group: Any = None,
        batch_axes: Mapping[str, BatchAxis] | None = None,
    ):
        super().__init__()
        if mode not in ("auto", "engine", "gather"):
            raise ValueError(f"mode must be 'auto', 'engine' or 'gather', got {mode!r}")
        supported = bool(getattr(loss, "supports_cross_rank", False))
        if mode == "engine" and not supported:
            raise ValueError(f"{type(loss).__name__} does not compute its value on the engine alone; use 'gather'")
        self.loss = loss
        self.mode = "engine" if mode == "engine" or (mode == "auto" and supported) else "gather"
        self.group = group
        self.batch_axes: dict[str, BatchAxis] = {**getattr(loss, "batch_axes", {}), **(batch_axes or {})}
        self._positional = _positional_names(loss)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            result: Tensor = self.loss(*args, **kwargs)
            return result
        names = [self._positional[i] if i < len(self._positional) else f"argument {i}" for i in range(len(args))]
        if set(names) & set(kwargs):
            raise TypeError(f"{type(self.loss).__name__} got {sorted(set(names) & set(kwargs))} twice")
        named = dict(zip(names, args, strict=True)) | kwargs
        local = [_Argument.describe(name, value) for name, value in named.items()]
        status = self._local_status(named) if self.mode == "engine" else None
        everyone = exchange((local, status), self.group)
        problem = _join_problem([arguments for arguments, _ in everyone], self.batch_axes)
        if problem is not None:
            raise ValueError(f"CrossRankLoss({type(self.loss).__name__}): {problem}")
        statuses = [s for _, s in everyone]
        for rank, message in enumerate(statuses):
            if message not in (None, "empty"):
                raise ValueError(f"{message} (on rank {rank})")
        if self.mode == "engine" and "empty" not in statuses:
            with cross_rank_pairs(self.group):
                result = self.loss(*args, **kwargs)
            return result
        shapes = [{a.name: a.shapes for a in arguments} for arguments, _ in everyone]
        gathered = {name: self._gather(name, value, [s[name] for s in shapes]) for name, value in named.items()}
        values = list(gathered.values())
        result = self.loss(*values[: len(args)], **dict(list(gathered.items())[len(args) :]))
        # every rank computed the same global loss; the gather's backward already sums all P copies of each
        # row's gradient, which is the P-fold scaling that DDP's averaging expects.
        return result

    def _local_status(self, named: dict[str, Any]) -> str | None:
        """The local input check of an engine loss: ``None`` (fine), ``"empty"`` (no sample here), or its error."""
        for name in ("embeddings", "ref_emb"):
            value = named.get(name)
            if isinstance(value, Tensor) and value.ndim == 2 and value.shape[0] == 0:
                return "empty"
        try:
            check_pair_inputs(*(named.get(name) for name in ("embeddings", "labels", "ref_emb", "ref_labels")))  # type: ignore[arg-type]
        except ValueError as error:
            return str(error)
        return None

    def _gather(self, name: str, value: Any, shapes: Sequence[tuple[Shape, ...]]) -> Any:
        spec = self.batch_axes.get(name, BatchAxis())
        if spec.axis is None:
            return value
        if isinstance(value, Tensor) and value.ndim >= 1:
            return _gather_known(value, [s[0] for s in shapes], spec.axis, spec.pad, self.group)
        if shapes[0]:  # a sequence of tensors: their stack along a new first axis
            return [
                _gather_known(v, [s[i] for s in shapes], spec.axis - 1, spec.pad, self.group)
                for i, v in enumerate(value)
            ]
        return value


def _positional_names(loss: nn.Module) -> list[str]:
    """The names of the positional parameters of ``loss.forward`` (empty when it has no inspectable signature)."""
    try:
        parameters = inspect.signature(loss.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


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
