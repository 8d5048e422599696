"""Every loss of the library, as ``nn.Module`` classes (the functional forms live in :mod:`pairloss.functional`)."""

from pairloss.losses.base import EmbeddingLoss, PairLoss, registered_losses
from pairloss.losses.metric import ContrastiveLoss

__all__ = [
    "ContrastiveLoss",
    "EmbeddingLoss",
    "PairLoss",
    "registered_losses",
]
