"""A harder open-set retrieval set made here: glyphs of hundreds of characters rendered in many fonts.

Each class is one character (Latin, Greek, Cyrillic, Armenian, Hebrew, digits, punctuation and symbols).
Its samples are the character drawn with the fonts bundled with matplotlib (DejaVu
Sans/Serif/Mono and STIX, in their regular, bold, italic and bold-italic styles:
up to 16 styles) under random augmentation: rotation, anisotropic scale, shear, translation,
stroke-width jitter (a grey-level dilation or erosion) and pixel noise. Characters
whose glyphs look alike (Latin ``A``, Greek ``Α``, Cyrillic ``А``) are merged into
one class by comparing their renderings, and characters missing from a font are never
drawn with it (no ``.notdef`` boxes).

The classes are split at random (per ``split_seed``) into disjoint *pretraining*, *training* and *test* class
pools, so that a backbone can be "pretrained" here on classes that are neither trained on nor tested, and
retrieval is evaluated on classes never seen in training (as in CUB, Cars196 and SOP).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from torch import Tensor

from pairloss.data.digits import OpenSetSplit

__all__ = [
    "GlyphPools",
    "candidate_characters",
    "glyph_fonts",
    "glyph_pools",
    "open_set_glyphs",
    "render_glyphs",
]

_CANVAS = 64
_FONT_SIZE = 40
#: Two characters whose normalised 16×16 renderings (DejaVu Sans) differ by less than this L2 distance are
#: one class
#: (identical shapes such as Latin A and Greek Alpha are at 0; l and I at 0.3; e and é at 0.7).
_DUPLICATE_DISTANCE = 0.5


def glyph_fonts() -> list[Path]:
    """The text fonts bundled with matplotlib, regular, bold, italic and bold-italic (DejaVu and STIX)."""
    directory = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = [
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSans-BoldOblique.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-Italic.ttf",
        "DejaVuSerif-BoldItalic.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSansMono-Bold.ttf",
        "DejaVuSansMono-Oblique.ttf",
        "DejaVuSansMono-BoldOblique.ttf",
        "STIXGeneral.ttf",
        "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf",
        "STIXGeneralBolIta.ttf",
    ]
    return [directory / name for name in names if (directory / name).exists()]


def candidate_characters() -> list[str]:
    """Printable characters from several scripts and symbol blocks (before merging look-alikes)."""
    ranges = [
        (0x21, 0x7E),  # ASCII letters, digits, punctuation
        (0xC0, 0xFF),  # Latin-1 letters
        (0x391, 0x3A9),  # Greek capitals
        (0x3B1, 0x3C9),  # Greek small
        (0x410, 0x44F),  # Cyrillic
        (0x531, 0x556),  # Armenian capitals
        (0x5D0, 0x5EA),  # Hebrew
        (0x2190, 0x2199),  # arrows
        (0x2200, 0x222B),  # mathematical operators
    ]
    return [chr(code) for start, stop in ranges for code in range(start, stop + 1) if chr(code).isprintable()]


@cache
def _font_characters(path: str) -> frozenset[str]:
    with TTFont(path, lazy=True) as font:
        cmap = font.getBestCmap() or {}
    return frozenset(chr(code) for code in cmap)


@cache
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _FONT_SIZE)


def _draw(character: str, font_path: str) -> Image.Image:
    """The character centred on a ``_CANVAS``² grey-level canvas (white ink on black)."""
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    draw.text((_CANVAS / 2, _CANVAS / 2), character, fill=255, font=_font(font_path), anchor="mm")
    return image


def _to_array(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


@lru_cache(maxsize=4)
def _classes() -> tuple[str, ...]:
    """One representative per look-alike group, among characters that at least 4 fonts can draw."""
    fonts = [str(p) for p in glyph_fonts()]
    reference = fonts[0]
    kept: list[str] = []
    kept_images: list[np.ndarray] = []
    for character in candidate_characters():
        if character not in _font_characters(reference):
            continue
        if sum(character in _font_characters(f) for f in fonts) < 4:
            continue
        image = _to_array(_draw(character, reference), 16)
        if image.sum() < 1.0:
            continue
        if (
            kept_images
            and float(np.linalg.norm(np.stack(kept_images) - image, axis=(1, 2)).min()) < _DUPLICATE_DISTANCE
        ):
            continue
        kept.append(character)
        kept_images.append(image)
    return tuple(kept)


def _augment(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    angle = np.deg2rad(rng.uniform(-15, 15) * strength)
    scale_x, scale_y = 1 + rng.uniform(-0.15, 0.15, size=2) * strength
    shear = rng.uniform(-0.2, 0.2) * strength
    shift = rng.uniform(-4, 4, size=2) * strength
    cos, sin = np.cos(angle), np.sin(angle)
    # Output pixel p maps to input A·(p − c) + c + shift, with A the inverse of rotation·shear·scale.
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([scale_x, scale_y])
    inverse = np.linalg.inv(forward)
    centre = np.array([_CANVAS / 2, _CANVAS / 2])
    offset = centre - inverse @ centre + shift
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    image = image.transform(image.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    stroke = rng.integers(0, 3) if strength > 0 else 0
    if stroke == 1:
        image = image.filter(ImageFilter.MaxFilter(3))
    elif stroke == 2:
        image = image.filter(ImageFilter.MinFilter(3))
    return image


def render_glyphs(
    characters: list[str],
    samples_per_class: int,
    *,
    size: int = 16,
    augment: float = 1.0,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Render ``samples_per_class`` augmented images of each character, cycling through its fonts.

    Args:
        characters: the classes (label ``i`` is ``characters[i]``).
        samples_per_class: images per character.
        size: side of the square output images.
        augment: strength of the geometric augmentation (0 = none).
        noise: standard deviation of the additive Gaussian pixel noise (values are clipped to [0, 1]).
        seed: random seed of the augmentation.

    Returns:
        ``(images [N, 1, size, size] float32 in [0, 1], labels [N] int64)``.
    """
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    if size < 4:
        raise ValueError(f"size must be >= 4, got {size}")
    rng = np.random.default_rng(seed)
    fonts = [str(p) for p in glyph_fonts()]
    images = np.empty((len(characters) * samples_per_class, size, size), dtype=np.float32)
    labels = np.repeat(np.arange(len(characters)), samples_per_class)
    for label, character in enumerate(characters):
        usable = [f for f in fonts if character in _font_characters(f)]
        if not usable:
            raise ValueError(f"no bundled font can draw {character!r}")
        order = rng.permutation(len(usable))
        for i in range(samples_per_class):
            base = _draw(character, usable[order[i % len(usable)]])
            images[label * samples_per_class + i] = _to_array(_augment(base, rng, augment), size)
    if noise > 0:
        images = np.clip(images + rng.normal(0.0, noise, images.shape).astype(np.float32), 0.0, 1.0)
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64))


@dataclass(frozen=True)
class GlyphPools:
    """Disjoint class pools (characters) for pretraining, training and testing."""

    pretrain: list[str]
    train: list[str]
    test: list[str]


def glyph_pools(
    n_train: int = 150, n_test: int = 150, n_pretrain: int | None = None, split_seed: int = 0
) -> GlyphPools:
    """Split the available characters at random into disjoint pretraining, training and test pools.

    ``n_pretrain = None`` gives every character that is not in the training or test pool to pretraining.
    """
    classes = list(_classes())
    needed = n_train + n_test + (n_pretrain or 0)
    if n_train < 1 or n_test < 1 or needed > len(classes):
        raise ValueError(
            f"asked for {n_train} train + {n_test} test + {n_pretrain or 0} pretrain classes, "
            f"but {len(classes)} distinct characters are available"
        )
    order = np.random.default_rng(split_seed).permutation(len(classes))
    shuffled = [classes[i] for i in order]
    test, train = shuffled[:n_test], shuffled[n_test : n_test + n_train]
    rest = shuffled[n_test + n_train :]
    pretrain = rest if n_pretrain is None else rest[:n_pretrain]
    return GlyphPools(pretrain=pretrain, train=train, test=test)


def open_set_glyphs(
    n_train: int = 150,
    n_test: int = 150,
    samples_per_class: int = 16,
    *,
    size: int = 16,
    split_seed: int = 0,
    seed: int = 0,
) -> OpenSetSplit:
    """Open-set glyph retrieval: ``n_train`` training and ``n_test`` test characters (disjoint), flattened
    images.

    Training labels are ``0 .. n_train − 1``; test labels are ``n_train .. n_train + n_test − 1``.
    """
    pools = glyph_pools(n_train, n_test, 0, split_seed)
    train_x, train_y = render_glyphs(pools.train, samples_per_class, size=size, seed=seed)
    test_x, test_y = render_glyphs(pools.test, samples_per_class, size=size, seed=seed + 1)
    return OpenSetSplit(train_x.flatten(1), train_y, test_x.flatten(1), test_y + n_train)
