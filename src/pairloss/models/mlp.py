"""A small multi-layer perceptron embedder for tabular or flattened-image inputs."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPEmbedder"]


class MLPEmbedder(nn.Module):
    """``x ↦ W_L σ(… σ(W_1 x))``: Linear (+ BatchNorm) + ReLU hidden layers, then a linear embedding layer.

    ``batch_norm=False`` makes every sample's embedding independent of the rest of the batch (needed where a batch is
    split across processes and the result must not depend on the split).
    """

    def __init__(
        self,
        in_features: int,
        embedding_size: int = 32,
        hidden: tuple[int, ...] = (128, 128),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h) if batch_norm else nn.Identity(), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, embedding_size))
        self.net = nn.Sequential(*layers)
        self.embedding_size = embedding_size

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))
