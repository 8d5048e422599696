"""A small VGG-style CNN for low-resolution grey-level images (the glyph retrieval sets)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GlyphCNN"]


class GlyphCNN(nn.Module):
    """Conv–batch-norm–ReLU–max-pool stages, then the flattened map: ``[N, C, S, S]`` → ``[N, F]``.

    Each stage is a 3×3 convolution (``widths[i]`` channels, padding 1), batch-norm, ReLU and a 2×2 max-pool, so
    ``S`` must be divisible by ``2^len(widths)``. The last map (``widths[-1]`` channels of ``S / 2^len(widths)``
    squared pixels) is flattened rather than averaged, so the features keep where each stroke is:
    ``F = widths[-1] · (S / 2^len(widths))²`` (512 for 16×16 inputs and the default widths). Wrap it in
    :class:`~pairloss.models.backbones.EmbeddingHead` (``build_backbone("glyph_cnn", D)``) for a ``D``-dimensional
    embedding; its weights alone are what a "pretrained backbone" checkpoint holds.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64), image_size: int = 16) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths}")
        if image_size % 2 ** len(widths):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(widths)} (one halving per stage)")
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        side = image_size // 2 ** len(widths)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.image_size = image_size
        self.num_features = channels * side * side

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"x must be [N, C, {self.image_size}, {self.image_size}] images, got {tuple(x.shape)}")
        features: Tensor = self.features(x)
        return features
