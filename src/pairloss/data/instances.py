"""Multi-object images bundled with scikit-image, with boxes and reference instance masks.

No instance-segmentation data set ships with the library's dependencies, so the reference masks are derived with
classical segmentation on images that scikit-image bundles (no download):

* ``coins`` (303 × 384 grey, 24 coins; Greek coins from Pompeii, Brooklyn Museum): the region-based watershed
  of scikit-image's "comparing edge-based and region-based segmentation" example. The Sobel gradient magnitude
  is flooded from markers (grey < 30: background, grey > 150: coin); the coin basins, holes filled, are labelled
  by connected components, and components under 100 pixels dropped.
* ``hubble`` (872 × 1000 RGB, ``hubble_deep_field``, NASA): the grey level is thresholded at Otsu's value,
  holes are filled, connected components are labelled and the ``count`` largest components that do not touch the
  image border are kept (the biggest galaxies).

Boxes are the tight boxes of the reference masks in pixel-edge coordinates: a mask covering columns
``c0 … c1`` and rows ``r0 … r1`` has the box ``(c0, r0, c1 + 1, r1 + 1)``. The masks are a classical
segmentation, not a human annotation: they are the reference the polygons are scored against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage import color, data, filters, measure, segmentation
from torch import Tensor

__all__ = ["INSTANCE_IMAGES", "InstanceImage", "coins_instances", "hubble_instances", "load_instance_image"]

#: The multi-object images available to :func:`load_instance_image`.
INSTANCE_IMAGES = ("coins", "hubble")


@dataclass
class InstanceImage:
    """An RGB image with one box and one reference mask per object.

    Attributes:
        name: the image's name.
        image: ``[3, H, W]`` float32 RGB in [0, 1].
        boxes: ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` in pixel-edge coordinates.
        masks: ``[N, H, W]`` bool reference masks.
    """

    name: str
    image: Tensor
    boxes: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _from_labels(name: str, rgb: NDArray[np.floating], labels: NDArray[np.integer], keep: list[int]) -> InstanceImage:
    masks = np.stack([labels == k for k in keep]) if keep else np.zeros((0, *labels.shape), dtype=bool)
    boxes = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    return InstanceImage(
        name=name,
        image=torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        masks=torch.from_numpy(masks),
    )


def coins_instances(min_area: int = 100) -> InstanceImage:
    """The 24 coins of ``skimage.data.coins()`` with watershed reference masks (see the module docstring)."""
    grey = data.coins()
    markers = np.zeros_like(grey, dtype=np.int32)
    markers[grey < 30] = 1
    markers[grey > 150] = 2
    basins = segmentation.watershed(filters.sobel(grey), markers)
    labels = measure.label(ndi.binary_fill_holes(basins == 2))
    keep = [region.label for region in measure.regionprops(labels) if region.area >= min_area]
    rgb = np.repeat(grey[..., None].astype(np.float64) / 255.0, 3, axis=2)
    return _from_labels("coins", rgb, labels, keep)


def hubble_instances(count: int = 20) -> InstanceImage:
    """The ``count`` largest galaxies of ``skimage.data.hubble_deep_field()`` (Otsu threshold, see above)."""
    rgb = data.hubble_deep_field().astype(np.float64) / 255.0
    grey = color.rgb2gray(rgb)
    labels = measure.label(ndi.binary_fill_holes(grey > filters.threshold_otsu(grey)))
    height, width = labels.shape
    regions = [
        region
        for region in measure.regionprops(labels)
        if region.bbox[0] > 0 and region.bbox[1] > 0 and region.bbox[2] < height and region.bbox[3] < width
    ]
    regions.sort(key=lambda region: (-region.area, region.label))
    return _from_labels("hubble", rgb, labels, sorted(region.label for region in regions[:count]))


def load_instance_image(name: str) -> InstanceImage:
    """One of :data:`INSTANCE_IMAGES` by name."""
    if name == "coins":
        return coins_instances()
    if name == "hubble":
        return hubble_instances()
    raise ValueError(f"unknown instance image {name!r}; known: {', '.join(INSTANCE_IMAGES)}")
