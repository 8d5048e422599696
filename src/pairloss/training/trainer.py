"""Train an embedding model with a pairwise loss on class-balanced batches (epochs of :func:`fit` updates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pairloss.training.loop import ClassBalancedBatches, FitConfig, fit, optimizer_step
from pairloss.training.reporting import Reporter

__all__ = ["TrainConfig", "TrainHistory", "embed", "train_embedding"]

EmbeddingLossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: Adam with weight decay, class-balanced batches of ``m_per_class`` samples per class."""

    epochs: int = 30
    batch_size: int = 128
    m_per_class: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass
class TrainHistory:
    """Mean training loss per epoch."""

    losses: list[float] = field(default_factory=list)


def train_embedding(
    model: nn.Module,
    loss_fn: EmbeddingLossFn,
    x: Tensor,
    y: Tensor,
    config: TrainConfig = TrainConfig(),
    reporter: Reporter | None = None,
    description: str = "training",
) -> TrainHistory:
    """Train ``model`` so that ``loss_fn(model(x_batch), y_batch)`` decreases, ``config.epochs`` epochs of
    class-balanced batches (:class:`~pairloss.training.loop.ClassBalancedBatches`) through :func:`fit`.

    Parameters of ``loss_fn`` (proxies, classifier weights) are optimised too when it is an ``nn.Module``.
    """
    torch.manual_seed(config.seed)
    params = list(model.parameters())
    modules: dict[str, nn.Module] = {"model": model}
    if isinstance(loss_fn, nn.Module):
        params += list(loss_fn.parameters())
        modules["loss"] = loss_fn
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    batches = ClassBalancedBatches(y, config.m_per_class, config.batch_size, seed=config.seed)

    def update(step: int) -> float:
        index = batches(step)
        return optimizer_step(optimizer, lambda: loss_fn(model(x[index]), y[index]))

    per_epoch = batches.batches_per_epoch
    result = fit(
        modules,
        optimizer,
        update,
        FitConfig(updates=config.epochs * per_epoch, description=description),
        reporter=reporter,
    )
    losses = result.losses
    return TrainHistory([sum(losses[i : i + per_epoch]) / per_epoch for i in range(0, len(losses), per_epoch)])


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Embeddings of ``x`` in evaluation mode, computed in batches without autograd."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(chunk) for chunk in x.split(batch_size)])
    model.train(was_training)
    return out
