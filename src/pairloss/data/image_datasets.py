"""``torch.utils.data.Dataset`` views of images on disk or in memory, decoded with PIL and transformed per item."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageArrayDataset", "ImageFileDataset"]

ImageTransform = Callable[[Image.Image], Tensor]


class ImageFileDataset(Dataset[tuple[Tensor, Tensor]]):
    """Item ``i``: ``(transform(image at paths[i]), labels[i])``; an unreadable image raises naming its path."""

    def __init__(self, paths: Sequence[Path], labels: NDArray[np.int64], transform: ImageTransform) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                tensor = self.transform(image)
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{path}: cannot be read as an image ({error})") from None
        return tensor, self.labels[index]


class ImageArrayDataset(Dataset[tuple[Tensor, Tensor]]):
    """Item ``i``: ``(transform(images[i]), labels[i])`` for images held as a uint8 ``[N, H, W, 3]`` array."""

    def __init__(self, images: NDArray[np.uint8], labels: NDArray[np.int64], transform: ImageTransform) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]
