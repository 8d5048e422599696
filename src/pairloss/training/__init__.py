"""Training: the one training loop (:func:`fit`), class-balanced batches, the multi-stage large-batch step, a
small embedding trainer, cross-rank losses and the progress-reporting interface."""

from pairloss.training.large_batch import LargeBatchResult, large_batch_backward, large_batch_step
from pairloss.training.loop import (
    ClassBalancedBatches,
    FitConfig,
    FitResult,
    ShuffledBatches,
    fit,
    optimizer_step,
    torch_threads,
)
from pairloss.training.reporting import Reporter
from pairloss.training.trainer import TrainConfig, TrainHistory, embed, train_embedding

__all__ = [
    "ClassBalancedBatches",
    "FitConfig",
    "FitResult",
    "LargeBatchResult",
    "Reporter",
    "ShuffledBatches",
    "TrainConfig",
    "TrainHistory",
    "embed",
    "fit",
    "large_batch_backward",
    "large_batch_step",
    "optimizer_step",
    "torch_threads",
    "train_embedding",
]
