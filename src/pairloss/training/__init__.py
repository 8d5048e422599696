"""Training utilities: a small trainer, the multi-stage large-batch step, and ``pairloss train`` (``launch``)."""

from pairloss.training.large_batch import LargeBatchResult, large_batch_backward, large_batch_step
from pairloss.training.trainer import TrainConfig, TrainHistory, embed, train_embedding

__all__ = [
    "LargeBatchResult",
    "TrainConfig",
    "TrainHistory",
    "embed",
    "large_batch_backward",
    "large_batch_step",
    "train_embedding",
]
