"""Functional forms of every loss: ``pairloss.functional.<name>_loss(inputs..., **hyper_parameters)``."""

from pairloss.losses.metric import contrastive_loss

__all__ = [
    "contrastive_loss",
]
