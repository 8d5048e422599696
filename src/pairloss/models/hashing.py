"""Deep-hashing networks: an optional spatial-attention module, a small CNN and a ``K``-bit ``tanh`` head.

The attention module is ASH's (Fang et al., Attention-based saliency hashing for ophthalmic image retrieval, BIBM
2020), itself CBAM's spatial attention (Woo et al., ECCV 2018):

    A(x) = σ(conv3×3([mean_c x ; max_c x])),   x' = A(x) ⊙ x

a one-channel saliency map in ``(0, 1)`` computed from the channel-mean and channel-max maps and multiplied into
every channel. Two networks use it: :class:`HashingCNN` (two convolutions at full resolution, for 8×8 and 16×16
images) and :class:`AttentionHashingNet` (ASH's layout: attention on the input image, then a feature extractor
that can be pretrained, e.g. :class:`SalientFeatures`, then the hash layers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AttentionHashingNet", "HashHead", "HashingCNN", "SalientFeatures", "SpatialAttention"]


class SpatialAttention(nn.Module):
    """``x ⊙ σ(conv3×3([mean over channels ; max over channels]))`` for ``x [B, C, H, W]``."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, x: Tensor) -> Tensor:
        """The saliency map ``[B, 1, H, W]`` in ``(0, 1)``."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"SpatialAttention expects [B, C, H, W], got shape {tuple(x.shape)}")
        return x * self.attention_map(x)


class HashHead(nn.Module):
    """``u = tanh(β · BN(W h + b))``: ``K`` relaxed bits. ``scale`` (β) is HashNet's continuation parameter.

    The batch normalisation keeps each bit centred over a batch at the start of training, so that the codes do not
    start (and stay) saturated on one side, a collapse that every pair loss here can otherwise fall into when
    trained from scratch.
    """

    def __init__(self, in_features: int, n_bits: int) -> None:
        super().__init__()
        if n_bits < 1:
            raise ValueError(f"n_bits must be >= 1, got {n_bits}")
        self.linear = nn.Linear(in_features, n_bits)
        self.norm = nn.BatchNorm1d(n_bits)
        self.scale = 1.0

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.scale * self.norm(self.linear(h)))


class HashingCNN(nn.Module):
    """Small CNN hashing network for small images ``[B, C, H, W]`` (e.g. 8×8 digits, 16×16 patches).

    ``[attention] → conv3×3(C→w) → ReLU → [attention] → conv3×3(w→2w) → ReLU → average pool to p×p → linear
    (→hidden) → ReLU → HashHead(K)``, with ``p = 2`` for images under 16 pixels and 4 otherwise;
    ``attention=True`` puts a :class:`SpatialAttention` on the input image and on the first feature map.
    """

    def __init__(
        self,
        n_bits: int,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        width: int = 16,
        hidden: int = 128,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.input_attention = SpatialAttention() if attention else nn.Identity()
        self.feature_attention = SpatialAttention() if attention else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        pooled = 2 if image_size < 16 else 4
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.fc = nn.Linear(2 * width * pooled * pooled, hidden)
        self.head = HashHead(hidden, n_bits)

    def features(self, images: Tensor) -> Tensor:
        """The ``hidden``-dimensional features before the hash head."""
        x = self.input_attention(images)
        x = torch.relu(self.conv1(x))
        x = self.feature_attention(x)
        x = torch.relu(self.conv2(x))
        return torch.relu(self.fc(self.pool(x).flatten(1)))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class SalientFeatures(nn.Module):
    """Conv–batch-norm–ReLU stages with a 2×2 max-pool between them, then a global max-pool: ``[N, C, S, S]`` →
    ``[N, widths[-1]]``.

    The global max-pool makes the features independent of where a small object lies in the image (the salient
    region of :func:`pairloss.data.salient.salient_glyphs`); ``S`` must be divisible by ``2^(len(widths) − 1)``.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.layers = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.num_features = channels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"SalientFeatures expects [N, C, H, W] images, got shape {tuple(x.shape)}")
        features: Tensor = self.layers(x)
        return features


class AttentionHashingNet(nn.Module):
    """ASH's network: ``[SpatialAttention on the image] → features → linear(→hidden) → ReLU → HashHead(K)``.

    As in the authors' code (``x = sa(x) * x``, then the pretrained backbone), the attention module weighs the
    input pixels; ``attention=False`` gives the same network without it (the baselines' layout). ``features``
    is any module mapping images to ``[N, num_features]`` (e.g. a :class:`SalientFeatures` loaded from a
    pretraining checkpoint).
    """

    def __init__(
        self, n_bits: int, features: nn.Module, num_features: int, *, attention: bool = True, hidden: int = 128
    ) -> None:
        super().__init__()
        self.attention = SpatialAttention() if attention else None
        self.features = features
        self.fc = nn.Linear(num_features, hidden)
        self.head = HashHead(hidden, n_bits)

    def attention_map(self, images: Tensor) -> Tensor | None:
        """The saliency map ``[B, 1, H, W]`` the network multiplies into the image (``None`` without attention)."""
        return None if self.attention is None else self.attention.attention_map(images)

    def forward(self, images: Tensor) -> Tensor:
        x = images if self.attention is None else self.attention(images)
        return self.head(torch.relu(self.fc(self.features(x))))
