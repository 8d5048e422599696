"""The two ``torch.distributed`` steps that joining per-rank batches needs, shared by the losses and the metrics.

:func:`exchange` hands every rank a small picklable description of the others' data (shapes, dtypes, the outcome
of local checks) so that all ranks take the same decision before any tensor collective; :func:`gather_padded`
then concatenates tensors of known, possibly different shapes with one ``all_gather`` of padded copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Shape", "exchange", "gather_padded"]

Shape = tuple[int, ...]


def exchange(value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` (a small picklable object), in rank order (``all_gather_object``)."""
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, value, group=group)
    return everyone


def gather_padded(tensor: Tensor, shapes: Sequence[Shape], group: Any = None, pad: float = 0.0) -> Tensor:
    """Concatenate every rank's ``tensor`` along axis 0, in rank order, knowing every rank's shape.

    ``shapes[r]`` is rank ``r``'s shape (all of the same length). The other axes are filled with ``pad`` up to their
    largest size over the ranks; the rows are not padded in the result. No gradient (see
    :mod:`pairloss.training.distributed` for the differentiable form).
    """
    target = tuple(max(shape[d] for shape in shapes) for d in range(len(shapes[0])))
    if target[0] == 0:  # no rank has a row: nothing to exchange
        return tensor.new_full((0, *target[1:]), pad)
    padded = tensor.new_full(target, pad)
    padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[: shape[0]] for part, shape in zip(parts, shapes, strict=True)])
