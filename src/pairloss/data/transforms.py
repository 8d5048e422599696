"""Image augmentation of the deep-metric-learning papers on PIL images, without torchvision.

torchvision is not needed (its wheel on the package index is a CUDA build that does not load beside a CPU torch).
The augmentations run in the DataLoader workers on each decoded image, as torchvision's would, which also suits the
variable image sizes of the benchmarks (batched GPU augmentation would first need a common size):

* training: optional resize, optional colour jitter, random resized crop (torchvision's sampling: an area fraction
  in ``scale`` and a log-uniform aspect ratio in ``ratio``, ten tries, then a centre crop), horizontal flip;
* evaluation: resize, centre crop;

then conversion to a float tensor ``[3, H, W]`` normalised with the backbone's mean and standard deviation.
``resize``: an int resizes the shorter side (aspect kept); a pair ``(h, w)`` resizes to exactly that size.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "TrainTransform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Resize = int | tuple[int, int] | None


def _resize(image: Image.Image, size: Resize) -> Image.Image:
    if size is None:
        return image
    if isinstance(size, int):
        width, height = image.size
        scale = size / min(width, height)
        return image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
    return image.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def _check_normalisation(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each (std > 0), got {list(mean)} and {list(std)}")


def _to_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _crop_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling: ``(left, top, right, bottom)``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = random.randint(0, width - w)
            top = random.randint(0, height - h)
            return left, top, left + w, top + h
    # fallback: the largest centred crop whose aspect ratio is within the range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _jitter_hue(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation (see the module docstring); a picklable callable ``PIL image -> [3, size, size]``.

    ``color_jitter = (brightness, contrast, saturation, hue)``: factors drawn uniformly in ``[1 − b, 1 + b]``
    (hue: a shift in ``[−h, h]`` of the hue circle), applied in that order.
    """

    size: int
    resize: Resize = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: tuple[float, ...] | None = None
    flip: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_normalisation(self.mean, self.std)
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise ValueError(f"color_jitter must be (brightness, contrast, saturation, hue), got {self.color_jitter}")

    def __call__(self, image: Image.Image) -> Tensor:
        image = _resize(image.convert("RGB"), self.resize)
        if self.color_jitter is not None:
            image = self._jitter(image)
        box = _crop_box(*image.size, self.scale, self.ratio)
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if self.flip and random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _to_tensor(image, self.mean, self.std)

    def _jitter(self, image: Image.Image) -> Image.Image:
        assert self.color_jitter is not None
        brightness, contrast, saturation, hue = self.color_jitter
        for amount, enhancer in (
            (brightness, ImageEnhance.Brightness),
            (contrast, ImageEnhance.Contrast),
            (saturation, ImageEnhance.Color),
        ):
            if amount > 0:
                image = enhancer(image).enhance(random.uniform(max(0.0, 1 - amount), 1 + amount))
        if hue > 0:
            image = _jitter_hue(image, random.uniform(-hue, hue))
        return image


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation preprocessing: resize (default: ``size · 256/224`` on the shorter side), centre crop ``size``."""

    size: int
    resize: Resize = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_normalisation(self.mean, self.std)

    def __call__(self, image: Image.Image) -> Tensor:
        resize = self.resize if self.resize is not None else round(self.size * 256 / 224)
        image = _resize(image.convert("RGB"), resize)
        width, height = image.size
        left, top = max(0, (width - self.size) // 2), max(0, (height - self.size) // 2)
        image = image.crop((left, top, left + self.size, top + self.size))
        return _to_tensor(image, self.mean, self.std)
