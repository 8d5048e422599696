"""Images where a small salient region decides the class: one small glyph at a random place on cluttered texture.

Each image is a ``size × size`` crop of one of scikit-image's bundled photographs (brick, grass, gravel, the retina
fundus image, moon, coins, camera, text, page, coffee; :func:`pairloss.data.images.texture_crops`), drawn at random
and independently of the class, with one glyph of the class's character (``glyph_size`` pixels, augmented as in
:func:`pairloss.data.glyphs.render_glyphs`) painted at a random position. The ink is lighter or darker than the
local background by a random ``contrast``; ``distractors`` more glyphs of other characters (never a class) can be
painted elsewhere. The class is decided by a region of about ``(glyph_size / size)²`` of the image (10 % for the
defaults), the rest is clutter whose statistics do not depend on the class: a spatial-attention module has
something to find, and the glyph's box is returned with every image so that one can check whether it found it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pairloss.data.glyphs import render_glyphs
from pairloss.data.images import texture_crops

__all__ = ["DISTRACTOR_CHARACTERS", "SALIENT_CHARACTERS", "SalientImages", "salient_glyphs"]

#: The class characters by default (20 capital letters whose shapes differ at 10 pixels).
SALIENT_CHARACTERS = tuple("ABCDEFGHKLMNPRSTUVXY")
#: Characters of the distractor glyphs by default (never a class).
DISTRACTOR_CHARACTERS = tuple("abdeghkmnqrsuwz")
#: Rendered side / box side of a glyph (see ``_glyph_masks``).
_FILL = 1.75


@dataclass(frozen=True)
class SalientImages:
    """``images [N, 1, S, S]`` in ``[0, 1]``, ``labels [N]`` (class ids), ``boxes [N, 4]`` (top, left, height,
    width of the class glyph) and the class characters."""

    images: Tensor
    labels: Tensor
    boxes: Tensor
    characters: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def glyph_mask(self) -> Tensor:
        """``[N, 1, S, S]`` booleans: the pixels of each image's class-glyph box."""
        n, _, height, width = self.images.shape
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        top, left, h, w = (self.boxes[:, i].view(n, 1, 1) for i in range(4))
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return inside[:, None]


def _glyph_masks(characters: list[str], per_character: int, glyph_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Augmented glyphs filling a ``glyph_size`` box: rendered larger, the central box cut out (a capital letter
    covers about 45 % of the renderer's canvas, so this makes it about 80 % of the box)."""
    rendered = round(glyph_size * _FILL)
    images, labels = render_glyphs(characters, per_character, size=rendered, noise=0.0, seed=seed)
    start = (rendered - glyph_size) // 2
    return images[..., start : start + glyph_size, start : start + glyph_size].contiguous(), labels


def _place(rng: np.random.Generator, size: int, glyph: int, taken: list[tuple[int, int]]) -> tuple[int, int]:
    """A random top-left corner whose box overlaps no box in ``taken`` (any corner after 50 tries)."""
    for _ in range(50):
        top, left = (int(v) for v in rng.integers(0, size - glyph + 1, size=2))
        if all(abs(top - t) >= glyph or abs(left - s) >= glyph for t, s in taken):
            return top, left
    return top, left


def _paint(image: np.ndarray, mask: np.ndarray, top: int, left: int, contrast: float, rng: np.random.Generator) -> None:
    """Blend ink into ``image`` through ``mask``: lighter or darker than the local background by ``contrast``."""
    h, w = mask.shape
    region = image[top : top + h, left : left + w]
    local = float(region.mean())
    lighter = local < 0.5
    ink = min(1.0, local + contrast) if lighter else max(0.0, local - contrast)
    image[top : top + h, left : left + w] = (1 - mask) * region + mask * ink


def salient_glyphs(
    n_per_class: int,
    characters: Sequence[str] = SALIENT_CHARACTERS,
    *,
    size: int = 32,
    glyph_size: int = 10,
    contrast: tuple[float, float] = (0.35, 0.7),
    background_contrast: float = 0.5,
    distractors: int = 0,
    distractor_characters: Sequence[str] = DISTRACTOR_CHARACTERS,
    noise: float = 0.03,
    seed: int = 0,
) -> SalientImages:
    """``n_per_class`` images of each character: its glyph at a random place on a random texture crop.

    Args:
        n_per_class: images per class.
        characters: the classes (label ``i`` is ``characters[i]``), drawn with the bundled fonts.
        size: image side in pixels.
        glyph_size: side of the glyph's box (``4 <= glyph_size <= size``).
        contrast: range of the ink's difference to the local background mean (uniform).
        background_contrast: the texture's grey levels are scaled by this factor around 0.5 (1: the photograph's
            full range), which makes the glyph the most contrasted region when ``contrast`` is larger.
        distractors: glyphs of ``distractor_characters`` painted per image besides the class glyph.
        distractor_characters: characters of the distractors (must not be classes).
        noise: standard deviation of the added Gaussian pixel noise (clipped to ``[0, 1]`` after).
        seed: random seed; the set is a pure function of the arguments.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if len(characters) < 2 or len(set(characters)) != len(characters):
        raise ValueError(f"characters must be at least two distinct characters, got {list(characters)}")
    if not 4 <= glyph_size <= size:
        raise ValueError(f"glyph_size must be in [4, size = {size}], got {glyph_size}")
    low, high = contrast
    if not 0 < low <= high <= 1:
        raise ValueError(f"contrast must be a range inside (0, 1], got {contrast}")
    if not 0 <= background_contrast <= 1:
        raise ValueError(f"background_contrast must be in [0, 1], got {background_contrast}")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if distractors and (not distractor_characters or set(distractor_characters) & set(characters)):
        raise ValueError("distractor_characters must be non-empty and share no character with the classes")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n = n_per_class * len(characters)
    glyphs, labels = _glyph_masks(list(characters), n_per_class, glyph_size, seed)
    backgrounds, _ = texture_crops(n, size, seed=seed + 1)
    images = 0.5 + background_contrast * (backgrounds[:, 0].numpy() - 0.5)
    masks = glyphs[:, 0].numpy()
    others = np.zeros((0, glyph_size, glyph_size), dtype=np.float32)
    if distractors:
        per_character = -(-n * distractors // len(distractor_characters))
        rendered, _ = _glyph_masks(list(distractor_characters), per_character, glyph_size, seed + 2)
        others = rendered[rng.permutation(rendered.shape[0])[: n * distractors], 0].numpy()
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        top, left = _place(rng, size, glyph_size, [])
        _paint(images[i], masks[i], top, left, float(rng.uniform(low, high)), rng)
        boxes[i] = (top, left, glyph_size, glyph_size)
        taken = [(top, left)]
        for d in range(distractors):
            corner = _place(rng, size, glyph_size, taken)
            _paint(images[i], others[i * distractors + d], *corner, float(rng.uniform(low, high)), rng)
            taken.append(corner)
    if noise > 0:
        images = np.clip(images + rng.normal(0.0, noise, images.shape).astype(np.float32), 0.0, 1.0)
    return SalientImages(
        torch.from_numpy(images[:, None].astype(np.float32)), labels, torch.from_numpy(boxes), tuple(characters)
    )
