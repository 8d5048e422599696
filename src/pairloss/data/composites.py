"""Instance-segmentation images with exact masks: random shapes composited onto scikit-image's photographs.

No instance-segmentation data set can be downloaded here, and masks from classical segmentation (a threshold, a
watershed) are only one guess at the boundary. This generator draws the objects itself, so every reference mask is
known by construction:

* **Background**: a random square crop of one of the bundled photographs (:data:`PHOTOGRAPHS`), resized to
  ``size × size`` RGB in ``[0, 1]`` (grey photographs repeated over the channels).
* **Objects** (1 to ``max_objects`` per image, placed without overlap): star-shaped regions around a centre ``c``
  with a radial boundary ``ρ(θ)``, drawn from three families: a smooth blob
  ``ρ(θ) = R (1 + Σ_{k=2}^{4} a_k cos(k θ + φ_k))`` (``a_k ~ U(0, 0.12)``), a rotated ellipse, and a rotated
  regular polygon with 3 to 6 corners.
* **Appearance**: each object is filled with a crop of another photograph, blended half-and-half with a random
  colour that differs from the background under the object by at least ``min_contrast`` (mean absolute RGB
  difference), and composited with an anti-aliased edge (the fraction of 4 × 4 sub-pixel samples inside).
* **Reference mask**: the pixels whose centre ``p`` satisfies ``‖p − c‖ ≤ ρ(angle(p − c))``, the same pixel-centre
  rule as :func:`pairloss.losses.rasterize.polygon_inside`; the box is the tight box of the mask in pixel-edge
  coordinates.

Everything comes from one ``numpy.random.Generator`` seeded by ``seed``: equal arguments give equal images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from numpy.typing import NDArray

from pairloss.data.instances import InstanceImage

__all__ = ["PHOTOGRAPHS", "SHAPES", "composite_instances"]

#: The bundled photographs used as backgrounds and object textures.
PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "retina",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "clock",
)
#: The shape families of the objects.
SHAPES = ("blob", "ellipse", "polygon")

_SUBSAMPLES = 4
_PHOTO_SIDE = 256
_Array = NDArray[np.float64]


@lru_cache(maxsize=len(PHOTOGRAPHS))
def _photograph(name: str) -> _Array:
    """The photograph as RGB in ``[0, 1]``, its short side resized to :data:`_PHOTO_SIDE` pixels."""
    from skimage import data
    from skimage.transform import rescale

    image = np.asarray(getattr(data, name)(), dtype=np.float64) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    scale = _PHOTO_SIDE / min(image.shape[:2])
    return np.asarray(rescale(image, scale, channel_axis=2, anti_aliasing=scale < 1), dtype=np.float64)


def _crop(rng: np.random.Generator, name: str, height: int, width: int) -> _Array:
    """A random crop of a photograph covering at least half its short side, resized to ``height × width``."""
    from skimage.transform import resize

    photo = _photograph(name)
    short = min(photo.shape[:2])
    side = int(rng.integers(short // 2, short + 1))
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = int(rng.integers(0, photo.shape[1] - side + 1))
    patch = photo[top : top + side, left : left + side]
    return np.asarray(resize(patch, (height, width, 3), anti_aliasing=True), dtype=np.float64)


@dataclass(frozen=True)
class _Shape:
    """A star-shaped region: ``‖p − c‖ ≤ ρ(angle(p − c))``."""

    kind: str
    centre: tuple[float, float]
    radius: float
    params: tuple[float, ...]

    def boundary(self, theta: _Array) -> _Array:
        r = self.radius
        if self.kind == "blob":
            amplitudes, phases = self.params[:3], self.params[3:]
            wave = np.zeros_like(theta)
            for k, a, p in zip((2, 3, 4), amplitudes, phases):
                wave += a * np.cos(k * theta + p)
            return r * (1.0 + wave)
        if self.kind == "ellipse":
            ratio, angle = self.params
            t = theta - angle
            a, b = r, r * ratio
            return a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
        corners, angle = int(self.params[0]), self.params[1]
        sector = 2 * np.pi / corners
        t = np.mod(theta - angle, sector) - sector / 2
        return r * np.cos(sector / 2) / np.cos(t)

    def inside(self, x: _Array, y: _Array) -> NDArray[np.bool_]:
        dx, dy = x - self.centre[0], y - self.centre[1]
        return np.hypot(dx, dy) <= self.boundary(np.arctan2(dy, dx))

    def extent(self) -> float:
        """An upper bound of ``ρ`` (for placement)."""
        if self.kind == "blob":
            return self.radius * (1.0 + sum(self.params[:3]))
        return self.radius


def _draw_shape(rng: np.random.Generator, size: int, radius: tuple[float, float]) -> _Shape:
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    r = float(rng.uniform(*radius))
    if kind == "blob":
        params = (*rng.uniform(0.0, 0.12, 3), *rng.uniform(0.0, 2 * np.pi, 3))
    elif kind == "ellipse":
        params = (float(rng.uniform(0.45, 1.0)), float(rng.uniform(0.0, np.pi)))
    else:
        params = (float(rng.integers(3, 7)), float(rng.uniform(0.0, 2 * np.pi)))
    shape = _Shape(kind, (0.0, 0.0), r, tuple(float(p) for p in params))
    margin = shape.extent() + 2.0
    centre = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
    return _Shape(kind, centre, r, shape.params)


def _rasterise(shape: _Shape, size: int) -> tuple[NDArray[np.bool_], _Array]:
    """The shape's pixel-centre mask and anti-aliased alpha (the fraction of ``4 × 4`` sub-pixel samples inside).

    Both are computed only over the square window that holds the shape; they are zero elsewhere.
    """
    reach = shape.extent() + 1.0
    x0, y0 = (max(int(np.floor(c - reach)), 0) for c in shape.centre)
    x1, y1 = (min(int(np.ceil(c + reach)) + 1, size) for c in shape.centre)
    mask = np.zeros((size, size), dtype=bool)
    alpha = np.zeros((size, size))
    xs, ys = np.arange(x0, x1, dtype=np.float64) + 0.5, np.arange(y0, y1, dtype=np.float64) + 0.5
    mask[y0:y1, x0:x1] = shape.inside(xs[None, :], ys[:, None])
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    fine_x = (np.arange(x0, x1, dtype=np.float64)[:, None] + offsets[None, :]).reshape(-1)
    fine_y = (np.arange(y0, y1, dtype=np.float64)[:, None] + offsets[None, :]).reshape(-1)
    inside = shape.inside(fine_x[None, :], fine_y[:, None])
    alpha[y0:y1, x0:x1] = inside.reshape(y1 - y0, _SUBSAMPLES, x1 - x0, _SUBSAMPLES).mean(axis=(1, 3))
    return mask, alpha


def _composite_one(
    rng: np.random.Generator,
    size: int,
    max_objects: int,
    radius: tuple[float, float],
    min_contrast: float,
) -> tuple[_Array, list[NDArray[np.bool_]]]:
    names = PHOTOGRAPHS
    background = int(rng.integers(len(names)))
    image = _crop(rng, names[background], size, size)
    placed: list[_Shape] = []
    masks: list[NDArray[np.bool_]] = []
    wanted = int(rng.integers(1, max_objects + 1))
    for _ in range(50 * wanted):
        if len(masks) == wanted:
            break
        shape = _draw_shape(rng, size, radius)
        # objects keep 2 pixels apart: their bounding discs must not meet
        if any(
            np.hypot(shape.centre[0] - o.centre[0], shape.centre[1] - o.centre[1]) < shape.extent() + o.extent() + 2
            for o in placed
        ):
            continue
        mask, alpha = _rasterise(shape, size)
        if not mask.any():
            continue
        other = (background + 1 + int(rng.integers(len(names) - 1))) % len(names)
        texture = _crop(rng, names[other], size, size)
        under = image[mask].mean(axis=0)
        colour = rng.random(3)
        for _ in range(100):
            if np.abs(0.5 * (texture[mask].mean(axis=0) + colour) - under).mean() >= min_contrast:
                break
            colour = rng.random(3)
        fill = 0.5 * texture + 0.5 * colour
        image = alpha[..., None] * fill + (1.0 - alpha[..., None]) * image
        placed.append(shape)
        masks.append(mask)
    return image, masks


def composite_instances(
    n_images: int,
    *,
    size: int = 128,
    max_objects: int = 3,
    radius: tuple[float, float] = (12.0, 34.0),
    min_contrast: float = 0.15,
    seed: int = 0,
    name: str = "composite",
) -> list[InstanceImage]:
    """``n_images`` composites with exact reference masks and tight boxes (see the module docstring).

    Args:
        n_images: images to draw.
        size: side of the square images in pixels (>= 32).
        max_objects: at most this many objects per image (at least one).
        radius: range of the objects' base radius ``R`` in pixels.
        min_contrast: least mean absolute RGB difference between an object's fill and the background it covers.
        seed: the random seed (the images are a pure function of the arguments).
        name: the images are named ``f"{name}-{i}"``.

    Returns:
        :class:`pairloss.data.instances.InstanceImage` s (``image [3, size, size]`` float32 in ``[0, 1]``,
        ``boxes [N, 4]`` in pixel-edge coordinates, ``masks [N, size, size]`` bool).
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    low, high = radius
    if not 2.0 <= low <= high or 1.2 * high + 2.0 >= size / 2:
        raise ValueError(
            f"radius must satisfy 2 <= low <= high and fit the image (1.2·high + 2 < size/2), got {radius}"
        )
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        image, masks = _composite_one(rng, size, max_objects, (low, high), min_contrast)
        stacked = np.stack(masks)
        boxes = []
        for mask in stacked:
            rows, cols = np.nonzero(mask)
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        out.append(
            InstanceImage(
                name=f"{name}-{i}",
                image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)),
                boxes=torch.tensor(boxes, dtype=torch.float32),
                masks=torch.from_numpy(stacked),
            )
        )
    return out
