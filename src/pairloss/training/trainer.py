"""A small, explicit training loop for embedding models with a pairwise loss, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pairloss.data.samplers import MPerClassSampler
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
    """Train ``model`` so that ``loss_fn(model(x_batch), y_batch)`` decreases; batches from :class:`MPerClassSampler`.

    Parameters of ``loss_fn`` (proxies, classifier weights) are optimised too when it is an ``nn.Module``.
    """
    reporter = reporter or Reporter.silent()
    torch.manual_seed(config.seed)
    params = list(model.parameters())
    if isinstance(loss_fn, nn.Module):
        params += list(loss_fn.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = MPerClassSampler(y, config.m_per_class, config.batch_size, seed=config.seed)
    history = TrainHistory()
    model.train()
    for _ in reporter.track(range(config.epochs), description):
        total = 0.0
        for batch in sampler:
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        history.losses.append(total / len(sampler))
    return history


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Embeddings of ``x`` in evaluation mode, computed in batches without autograd."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(chunk) for chunk in x.split(batch_size)])
    model.train(was_training)
    return out
