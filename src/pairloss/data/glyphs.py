"""Open-set retrieval sets made here: glyphs of hundreds to thousands of characters rendered in many fonts.

Each class is one character. Its samples are the character drawn with every font of the catalog that has it,
under random augmentation: rotation, anisotropic scale, shear, translation, stroke-width jitter (a grey-level
dilation or erosion) and pixel noise. Characters whose glyphs look alike (Latin ``A``, Greek ``Α``, Cyrillic
``А``) are merged into one class by comparing their renderings, and characters missing from a font are never
drawn with it (no ``.notdef`` boxes). Two catalogs:

* ``"bundled"``: the 16 text fonts bundled with matplotlib (DejaVu Sans/Serif/Mono and STIX, regular, bold,
  italic, bold-italic) and about 320 characters (Latin, Greek, Cyrillic, Armenian, Hebrew, digits, punctuation,
  arrows, mathematical operators);
* ``"extended"``: those fonts plus the font packs of the ``glyphs`` extra (:data:`FONT_PACKS`, PyPI packages that
  ship Google/Adobe fonts: Roboto, Source Sans and Serif, Lato, Red Hat Display, Manrope, Hanken Grotesk, Caladea,
  and the display and hand-drawn faces Fjalla One, Fredoka One, Amatic SC and Intuitive: about 120 font files of
  16 families) and more Unicode blocks (Latin extended and IPA, Greek extended, Cyrillic supplement, Georgian,
  letterlike and technical symbols, geometric shapes, dingbats, supplemental mathematical operators): about 2 300
  classes, some 800 of them drawn by at least five font families. Install with ``pip install "pairloss[glyphs]"``;
  nothing is downloaded at run time.

The classes are split at random (per ``split_seed``) into disjoint *pretraining*, *training* and *test* class
pools, so that a backbone can be "pretrained" here on classes that are neither trained on nor tested, and
retrieval is evaluated on classes never seen in training (as in CUB, Cars196 and SOP). ``min_families`` keeps
the training and test pools to characters drawn by several font families (the varied, harder classes); every
other character goes to pretraining.
"""

from __future__ import annotations

import importlib.util
import unicodedata
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
    "CATALOGS",
    "FONT_PACKS",
    "GlyphPools",
    "GlyphRetrievalSplits",
    "LabelledImages",
    "candidate_characters",
    "font_family",
    "glyph_classes",
    "glyph_families",
    "glyph_fonts",
    "glyph_pools",
    "glyph_retrieval_splits",
    "open_set_glyphs",
    "render_glyphs",
]

#: The glyph catalogs: matplotlib's fonts only, or those and the font packs with more Unicode blocks.
CATALOGS = ("bundled", "extended")
#: The font packs of the ``glyphs`` extra (import names); each ships its font files in its ``files/`` folder.
FONT_PACKS = (
    "font_roboto",
    "font_source_sans_pro",
    "font_source_serif_pro",
    "font_lato",
    "font_rhd",
    "font_manrope",
    "font_hanken_grotesk",
    "font_caladea",
    "font_fjallaone",
    "font_fredoka_one",
    "font_amatic_sc",
    "font_intuitive",
)

_CANVAS = 64
_FONT_SIZE = 40
#: Two characters whose normalised 16×16 renderings (DejaVu Sans) differ by less than this L2 distance are
#: one class
#: (identical shapes such as Latin A and Greek Alpha are at 0; l and I at 0.3; e and é at 0.7).
_DUPLICATE_DISTANCE = 0.5


def _bundled_fonts() -> list[Path]:
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


def _pack_fonts(pack: str) -> list[Path]:
    """The static font files of one font pack (a ``.ttf`` preferred over an ``.otf`` of the same face)."""
    spec = importlib.util.find_spec(pack)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f'the extended glyph catalog needs the font pack {pack!r}: pip install "pairloss[glyphs]"')
    directory = Path(next(iter(spec.submodule_search_locations))) / "files"
    fonts: dict[str, Path] = {}
    for path in sorted(directory.glob("*.otf")) + sorted(directory.glob("*.ttf")):
        if "Variable" not in path.stem:
            fonts[path.stem] = path  # the .ttf, read last, replaces an .otf of the same name
    return sorted(fonts.values())


def glyph_fonts(catalog: str = "bundled") -> list[Path]:
    """The font files of a catalog: matplotlib's DejaVu and STIX (``"bundled"``), plus the packs (``"extended"``)."""
    if catalog not in CATALOGS:
        raise ValueError(f"catalog must be one of {CATALOGS}, got {catalog!r}")
    return list(_fonts(catalog))


@cache
def _fonts(catalog: str) -> tuple[Path, ...]:
    fonts = _bundled_fonts()
    if catalog == "extended":
        fonts += [path for pack in FONT_PACKS for path in _pack_fonts(pack)]
    return tuple(fonts)


@cache
def font_family(path: str | Path) -> str:
    """The typographic family of a font file ("DejaVu Sans", "Roboto"): its weights and slants share it."""
    with TTFont(str(path), lazy=True) as font:
        names = font["name"]
        family = names.getDebugName(16) or names.getDebugName(1)
    return family or Path(path).stem


def candidate_characters(catalog: str = "bundled") -> list[str]:
    """Printable characters of the catalog's Unicode blocks (before merging look-alikes)."""
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
    if catalog == "extended":
        ranges = [
            (0x21, 0x7E),  # ASCII
            (0xA1, 0x24F),  # Latin-1 symbols and letters, Latin Extended-A and -B
            (0x250, 0x2AF),  # IPA
            (0x370, 0x3FF),  # Greek and Coptic
            (0x400, 0x52F),  # Cyrillic and its supplement
            (0x531, 0x58A),  # Armenian
            (0x5D0, 0x5EA),  # Hebrew
            (0x10A0, 0x10FF),  # Georgian
            (0x1E00, 0x1FFF),  # Latin Extended Additional, Greek Extended
            (0x2010, 0x205E),  # general punctuation
            (0x20A0, 0x20BF),  # currency symbols
            (0x2100, 0x23FF),  # letterlike, number forms, arrows, mathematical operators, technical
            (0x2460, 0x24FF),  # enclosed alphanumerics
            (0x25A0, 0x27EF),  # geometric shapes, miscellaneous symbols, dingbats, mathematical symbols-A
            (0x2980, 0x2AFF),  # mathematical symbols-B, supplemental mathematical operators
            (0x2C60, 0x2C7F),  # Latin Extended-C
            (0xA720, 0xA7FF),  # Latin Extended-D
        ]
    elif catalog not in CATALOGS:
        raise ValueError(f"catalog must be one of {CATALOGS}, got {catalog!r}")
    characters = [chr(code) for start, stop in ranges for code in range(start, stop + 1)]
    if catalog == "extended":
        return [c for c in characters if unicodedata.category(c)[0] in "LNPS"]
    return [c for c in characters if c.isprintable()]


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
def _classes(catalog: str = "bundled") -> tuple[str, ...]:
    """One representative per look-alike group, among characters that DejaVu Sans and at least 4 fonts draw."""
    fonts = [str(p) for p in glyph_fonts(catalog)]
    reference = fonts[0]
    drawable = [
        c
        for c in candidate_characters(catalog)
        if c in _font_characters(reference) and sum(c in _font_characters(f) for f in fonts) >= 4
    ]
    images = np.stack([_to_array(_draw(c, reference), 16) for c in drawable]) if drawable else np.zeros((0, 16, 16))
    flat = torch.from_numpy(images.reshape(len(drawable), -1))
    inked = [i for i in range(len(drawable)) if float(flat[i].sum()) >= 1.0]
    distances = torch.cdist(flat[inked], flat[inked]) if inked else torch.zeros(0, 0)
    kept: list[int] = []
    for position in range(len(inked)):
        if kept and float(distances[position, kept].min()) < _DUPLICATE_DISTANCE:
            continue
        kept.append(position)
    return tuple(drawable[inked[position]] for position in kept)


def glyph_classes(catalog: str = "bundled") -> tuple[str, ...]:
    """Every class (one representative character per look-alike group) of a catalog, in Unicode order."""
    if catalog not in CATALOGS:
        raise ValueError(f"catalog must be one of {CATALOGS}, got {catalog!r}")
    return _classes(catalog)


def glyph_families(character: str, catalog: str = "bundled") -> int:
    """How many font families of the catalog draw ``character`` (a measure of its classes' style variety)."""
    return len(_families(catalog).get(character, ()))


@cache
def _families(catalog: str) -> dict[str, frozenset[str]]:
    families: dict[str, set[str]] = {}
    for font in glyph_fonts(catalog):
        family = font_family(font)
        for character in _font_characters(str(font)):
            families.setdefault(character, set()).add(family)
    return {character: frozenset(names) for character, names in families.items()}


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
    catalog: str = "bundled",
) -> tuple[Tensor, Tensor]:
    """Render ``samples_per_class`` augmented images of each character, cycling through the catalog's fonts
    that draw it (in a random order per character).

    Args:
        characters: the classes (label ``i`` is ``characters[i]``).
        samples_per_class: images per character.
        size: side of the square output images.
        augment: strength of the geometric augmentation (0 = none).
        noise: standard deviation of the additive Gaussian pixel noise (values are clipped to [0, 1]).
        seed: random seed of the augmentation.
        catalog: ``"bundled"`` or ``"extended"`` (the fonts to draw with; see the module docstring).

    Returns:
        ``(images [N, 1, size, size] float32 in [0, 1], labels [N] int64)``.
    """
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    if size < 4:
        raise ValueError(f"size must be >= 4, got {size}")
    rng = np.random.default_rng(seed)
    fonts = [str(p) for p in glyph_fonts(catalog)]
    images = np.empty((len(characters) * samples_per_class, size, size), dtype=np.float32)
    labels = np.repeat(np.arange(len(characters)), samples_per_class)
    for label, character in enumerate(characters):
        usable = [f for f in fonts if character in _font_characters(f)]
        if not usable:
            raise ValueError(f"no font of the {catalog!r} catalog can draw {character!r}")
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
    n_train: int = 150,
    n_test: int = 150,
    n_pretrain: int | None = None,
    split_seed: int = 0,
    *,
    catalog: str = "bundled",
    min_families: int = 1,
) -> GlyphPools:
    """Split the catalog's characters at random into disjoint pretraining, training and test pools.

    Training and test characters are drawn among those that at least ``min_families`` font families draw;
    ``n_pretrain = None`` gives every other character to pretraining.
    """
    classes = list(glyph_classes(catalog))
    order = np.random.default_rng(split_seed).permutation(len(classes))
    shuffled = [classes[i] for i in order]
    eligible = [c for c in shuffled if min_families <= 1 or glyph_families(c, catalog) >= min_families]
    if n_train < 1 or n_test < 1 or n_train + n_test > len(eligible):
        raise ValueError(
            f"asked for {n_train} train + {n_test} test classes, but {len(eligible)} distinct characters "
            f"drawn by >= {min_families} font families are available in the {catalog!r} catalog"
        )
    test, train = eligible[:n_test], eligible[n_test : n_test + n_train]
    taken = set(test) | set(train)
    rest = [c for c in shuffled if c not in taken]
    if n_pretrain is not None and n_pretrain > len(rest):
        raise ValueError(
            f"asked for {n_pretrain} pretraining classes, but {len(rest)} distinct characters are left in the "
            f"{catalog!r} catalog"
        )
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
    catalog: str = "bundled",
    min_families: int = 1,
) -> OpenSetSplit:
    """Open-set glyph retrieval: ``n_train`` training and ``n_test`` test characters (disjoint), flattened
    images.

    Training labels are ``0 .. n_train − 1``; test labels are ``n_train .. n_train + n_test − 1``.
    """
    pools = glyph_pools(n_train, n_test, 0, split_seed, catalog=catalog, min_families=min_families)
    train_x, train_y = render_glyphs(pools.train, samples_per_class, size=size, seed=seed, catalog=catalog)
    test_x, test_y = render_glyphs(pools.test, samples_per_class, size=size, seed=seed + 1, catalog=catalog)
    return OpenSetSplit(train_x.flatten(1), train_y, test_x.flatten(1), test_y + n_train)


@dataclass(frozen=True)
class LabelledImages:
    """Images ``x [N, 1, S, S]`` (float32 in ``[0, 1]``) and their class ids ``y [N]`` (int64, ``0 .. C − 1``)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x must be [N, C, H, W] and y [N], got {tuple(self.x.shape)} and {tuple(self.y.shape)}")

    @property
    def classes(self) -> int:
        return int(torch.unique(self.y).numel())


@dataclass(frozen=True)
class GlyphRetrievalSplits:
    """Open-set glyph retrieval with a validation split carved from the training side: three disjoint class sets.

    ``fit`` is trained on, ``validation`` (other training-side characters) tunes and early-stops, ``test``
    (characters never seen in training) is evaluated once; each split's labels start at 0.
    """

    fit: LabelledImages
    validation: LabelledImages
    test: LabelledImages
    characters: dict[str, list[str]]


def glyph_retrieval_splits(
    train_classes: int = 300,
    validation_classes: int = 60,
    test_classes: int = 300,
    samples_per_class: int = 12,
    *,
    min_families: int = 5,
    size: int = 16,
    split_seed: int = 0,
    catalog: str = "extended",
) -> GlyphRetrievalSplits:
    """Fit, validation and test glyph sets on disjoint characters (the recipes' open-set retrieval problem).

    The training side is ``glyph_pools(train_classes + validation_classes, test_classes, ...).train``: its first
    ``train_classes`` characters are fitted, the others are the validation classes. The splits are rendered with
    the augmentation seeds 1 (fit), 2 (validation) and 3 (test), so the same arguments give the same images.
    """
    if validation_classes < 2:
        raise ValueError(f"validation_classes must be >= 2 (retrieval needs other classes), got {validation_classes}")
    pools = glyph_pools(
        train_classes + validation_classes, test_classes, 0, split_seed, catalog=catalog, min_families=min_families
    )
    characters = {
        "fit": pools.train[:train_classes],
        "validation": pools.train[train_classes:],
        "test": pools.test,
    }
    splits = {
        name: LabelledImages(
            *render_glyphs(chars, samples_per_class, size=size, seed=seed, catalog=catalog),
        )
        for seed, (name, chars) in enumerate(characters.items(), start=1)
    }
    return GlyphRetrievalSplits(splits["fit"], splits["validation"], splits["test"], characters)
