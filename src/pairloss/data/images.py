"""A second small image set cut from scikit-image's bundled photographs: texture patches, one class per source.

Ten bundled images (brick, grass, gravel, the retina fundus photograph, moon, coins, camera, text, page, coffee) are
turned to grey levels in ``[0, 1]``, resized to 256×256, and cut into random ``patch × patch`` crops; the class of a
crop is its source image. With ``multi_label=True`` each sample is the left half of a crop from one source next to
the right half of a crop from another (or the same) source, labelled with both: a multi-label retrieval set whose
similarity is "shares a source".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from skimage import color, data, transform
from torch import Tensor

__all__ = ["TEXTURE_SOURCES", "TexturePatches", "texture_crops", "texture_patches"]

#: The bundled images used as classes, in label order.
TEXTURE_SOURCES = ("brick", "grass", "gravel", "retina", "moon", "coins", "camera", "text", "page", "coffee")

_SIDE = 256


@dataclass(frozen=True)
class TexturePatches:
    """``images [N, 1, patch, patch]`` float32 in ``[0, 1]``; ``labels [N]`` (int64) or ``[N, 10]`` multi-hot."""

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]


@lru_cache(maxsize=len(TEXTURE_SOURCES))
def _source(name: str) -> np.ndarray:
    image = getattr(data, name)()
    if image.ndim == 3:
        image = color.rgb2gray(image[..., :3])
    image = transform.resize(image.astype(np.float64), (_SIDE, _SIDE), anti_aliasing=True)
    low, high = float(image.min()), float(image.max())
    return (image - low) / max(high - low, 1e-12)


def _crop(rng: np.random.Generator, image: np.ndarray, patch: int) -> np.ndarray:
    top, left = rng.integers(0, _SIDE - patch + 1, size=2)
    return image[top : top + patch, left : left + patch]


def texture_patches(
    n_per_class: int = 150, *, patch: int = 16, multi_label: bool = False, same_source: float = 0.3, seed: int = 0
) -> TexturePatches:
    """Random crops of the bundled images, ``n_per_class`` per source (``10 · n_per_class`` in all).

    Args:
        n_per_class: samples per source image (per left-half source when ``multi_label``).
        patch: crop side in pixels (even, 4..64).
        multi_label: two half-crops per sample, labelled with both sources.
        same_source: with ``multi_label``, probability that both halves come from the same source.
        seed: random seed (the set is a pure function of its arguments).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if patch % 2 or not 4 <= patch <= 64:
        raise ValueError(f"patch must be even and in [4, 64], got {patch}")
    rng = np.random.default_rng(seed)
    sources = [_source(name) for name in TEXTURE_SOURCES]
    n_classes = len(sources)
    images = np.empty((n_classes * n_per_class, 1, patch, patch), dtype=np.float32)
    first = np.repeat(np.arange(n_classes), n_per_class)
    if multi_label:
        other = rng.integers(0, n_classes - 1, size=first.size)
        second = np.where(rng.random(first.size) < same_source, first, other + (other >= first))
    else:
        second = first
    half = patch // 2
    for i, (a, b) in enumerate(zip(first, second)):
        images[i, 0] = _crop(rng, sources[a], patch)
        if multi_label:
            images[i, 0, :, half:] = _crop(rng, sources[b], patch)[:, half:]
    if multi_label:
        labels = torch.zeros(first.size, n_classes, dtype=torch.int64)
        labels[torch.arange(first.size), torch.from_numpy(first)] = 1
        labels[torch.arange(first.size), torch.from_numpy(second)] = 1
    else:
        labels = torch.from_numpy(first.astype(np.int64))
    return TexturePatches(torch.from_numpy(images), labels, TEXTURE_SOURCES)


def texture_crops(n: int, size: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` random ``size × size`` crops of the bundled images, each from a source drawn at random.

    Returns ``(images [n, 1, size, size] float32 in [0, 1], sources [n] int64)``, the source indexing
    :data:`TEXTURE_SOURCES`; a pure function of its arguments. Used as cluttered backgrounds
    (:func:`pairloss.data.salient.salient_glyphs`).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 4 <= size <= _SIDE:
        raise ValueError(f"size must be in [4, {_SIDE}], got {size}")
    rng = np.random.default_rng(seed)
    sources = [_source(name) for name in TEXTURE_SOURCES]
    chosen = rng.integers(0, len(sources), size=n)
    images = np.stack([_crop(rng, sources[c], size) for c in chosen]) if n else np.zeros((0, size, size))
    return torch.from_numpy(images.astype(np.float32)[:, None]), torch.from_numpy(chosen.astype(np.int64))
