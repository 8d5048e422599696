"""Training utilities: a small trainer, and (in submodules) large-batch and distributed training."""

from pairloss.training.trainer import TrainConfig, TrainHistory, embed, train_embedding

__all__ = ["TrainConfig", "TrainHistory", "embed", "train_embedding"]
