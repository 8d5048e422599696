"""Base classes and input checks shared by the loss modules (the generator and registry live in
:mod:`pairloss.modules`)."""

from __future__ import annotations

import torch
from torch import Tensor

from pairloss._validation import check_pair_inputs
from pairloss.modules import LOSSES, BatchAxis, EmbeddingLoss, PairLoss, Registry, loss_module, registered_losses

__all__ = [
    "LOSSES",
    "BatchAxis",
    "EmbeddingLoss",
    "PairLoss",
    "Registry",
    "check_pair_inputs",
    "loss_module",
    "mean_of_active",
    "registered_losses",
]


def mean_of_active(total: Tensor, count: Tensor) -> Tensor:
    """``total / count`` where ``count > 0``, else 0: PML's ``AvgNonZeroReducer`` on pre-summed statistics."""
    return total / torch.clamp(count, min=1)
