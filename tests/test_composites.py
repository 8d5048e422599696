"""Composite instance images: exact masks by construction, tight boxes, separated objects, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pairloss.data.composites import PHOTOGRAPHS, _rasterise, _Shape, composite_instances


def test_deterministic_shapes_and_types() -> None:
    a, b = (
        composite_instances(4, size=64, radius=(6.0, 12.0), seed=3),
        composite_instances(4, size=64, radius=(6.0, 12.0), seed=3),
    )
    c = composite_instances(4, size=64, radius=(6.0, 12.0), seed=4)
    for x, y in zip(a, b):
        assert torch.equal(x.image, y.image) and torch.equal(x.masks, y.masks) and torch.equal(x.boxes, y.boxes)
    assert not torch.equal(a[0].image, c[0].image)
    for inst in a:
        assert inst.image.shape == (3, 64, 64) and inst.image.dtype == torch.float32
        assert float(inst.image.min()) >= 0.0 and float(inst.image.max()) <= 1.0
        assert inst.masks.dtype == torch.bool and inst.masks.shape[1:] == (64, 64) and 1 <= len(inst) <= 3
        assert inst.boxes.shape == (len(inst), 4)


def test_boxes_are_tight_and_objects_apart() -> None:
    for inst in composite_instances(10, size=64, radius=(6.0, 12.0), seed=5):
        assert int(inst.masks.sum(dim=0).max()) == 1
        for box, mask in zip(inst.boxes.long().tolist(), inst.masks):
            x1, y1, x2, y2 = box
            assert int(mask.sum()) == int(mask[y1:y2, x1:x2].sum())
            assert bool(mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any())
            assert bool(mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any())
        if len(inst) > 1:  # no mask pixel touches another object's pixel (a 2-pixel gap at least)
            grown = torch.nn.functional.max_pool2d(inst.masks[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
            overlap = grown.sum(dim=0) > 1
            assert not bool(overlap.any())


@pytest.mark.parametrize(("a", "b", "angle"), [(10.0, 6.0, 0.3), (7.5, 7.5, 0.0)])
def test_ellipse_mask_is_the_pixel_centre_rule(a: float, b: float, angle: float) -> None:
    """The mask holds exactly the pixels whose centre lies in the ellipse; the alpha's mass is its area."""
    shape = _Shape("ellipse", (20.3, 18.9), a, (b / a, angle))
    mask, alpha = _rasterise(shape, 40)
    ys, xs = np.mgrid[0:40, 0:40] + 0.5
    u = (xs - 20.3) * math.cos(angle) + (ys - 18.9) * math.sin(angle)
    v = -(xs - 20.3) * math.sin(angle) + (ys - 18.9) * math.cos(angle)
    expected = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    assert np.array_equal(mask, expected)
    assert alpha.sum() == pytest.approx(math.pi * a * b, rel=0.01)
    assert alpha[mask].min() > 0.0 and alpha[~mask].max() < 1.0


def test_regular_polygon_and_blob_are_star_shaped_around_their_centre() -> None:
    triangle = _Shape("polygon", (20.0, 20.0), 10.0, (3.0, 0.0))
    mask, alpha = _rasterise(triangle, 40)
    # a regular triangle of circumradius R has area (3√3/4) R²
    assert alpha.sum() == pytest.approx(3 * math.sqrt(3) / 4 * 100, rel=0.01)
    # a corner at angle 0 (distance R), the middle of a flat side opposite (distance R cos 60° = 5)
    assert mask[20, 20] and mask[20, 27] and mask[20, 16] and not mask[20, 14]
    blob = _Shape("blob", (20.0, 20.0), 8.0, (0.1, 0.0, 0.05, 0.0, 1.0, 2.0))
    theta = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = blob.boundary(theta)
    assert radius.min() > 0 and radius.max() <= blob.extent() + 1e-9


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        composite_instances(1, size=16)
    with pytest.raises(ValueError, match="radius"):
        composite_instances(1, size=64, radius=(10.0, 40.0))
    with pytest.raises(ValueError, match="max_objects"):
        composite_instances(1, max_objects=0)
    with pytest.raises(ValueError, match="n_images"):
        composite_instances(-1)
    assert len(PHOTOGRAPHS) >= 10
