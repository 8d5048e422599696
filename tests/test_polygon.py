"""BoxSnake's losses, the LAB conversion, the box crops, the polygon head and the instance images."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from pairloss.data.instances import coins_instances, hubble_instances, load_instance_image
from pairloss.losses import BoxSnakeLoss, LevelSetLoss, LocalPairwiseLoss, PolygonBoxLoss, registered_losses
from pairloss.losses.color import rgb_to_lab
from pairloss.losses.polygon import (
    BoxCrops,
    box_ciou,
    box_crops,
    boxsnake_loss,
    boxsnake_loss_terms,
    color_affinity,
    level_set_loss,
    local_pairwise_loss,
    polygon_box_loss,
    polygon_boxes,
)
from pairloss.models.polygon import PolygonHead, box_polygon, unit_box_polygon, unit_ellipse_polygon


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: a single intra-op thread avoids synchronisation overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OFFSETS = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)]


# ------------------------------------------------------------------------------------------------ colour


def test_rgb_to_lab_matches_skimage() -> None:
    rgb = np.random.default_rng(0).random((7, 5, 3))
    rgb[0, 0] = 0.0  # black: the linear branch of f
    rgb[0, 1] = 1.0  # white
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2lab(rgb), atol=1e-9)
    batched = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float()[None].repeat(2, 1, 1, 1))
    assert batched.shape == (2, 3, 7, 5) and batched.dtype == torch.float32


def test_rgb_to_lab_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="channels first"):
        rgb_to_lab(torch.rand(5, 5, 3))
    with pytest.raises(ValueError, match="NaN"):
        rgb_to_lab(torch.full((3, 2, 2), math.nan))


# ------------------------------------------------------------------------------------------------ unary


def test_ciou_equals_hand_computed_values() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 4.0, 3.0]], dtype=torch.float64)
    # pair 1: IoU 1/7 < 1/2 (no aspect term), centres 1 apart on each axis, enclosing diagonal² 18
    first = 1 / 7 - 2 / 18
    # pair 2: IoU 8/12, centre gap 0.5, enclosing box 4 × 3 (c² = 25), aspect 4/3 vs 2
    v = 4 / math.pi**2 * (math.atan(4 / 3) - math.atan(2)) ** 2
    second = 2 / 3 - 0.25 / 25 - v / (1 - 2 / 3 + v) * v
    torch.testing.assert_close(box_ciou(pred, target), torch.tensor([first, second], dtype=torch.float64))


def test_unary_loss_is_exactly_zero_when_boxes_match() -> None:
    boxes = torch.tensor([[3.1, 4.7, 20.3, 11.9], [0.0, 0.0, 5.0, 7.0]])
    vertices = box_polygon(boxes, 16)
    assert torch.equal(polygon_boxes(vertices), boxes)
    assert polygon_box_loss(vertices, boxes).item() == 0.0
    vertices[0, 3, 1] -= 0.5
    assert polygon_box_loss(vertices, boxes).item() > 0.0


def test_unary_loss_matches_loop_reference_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    vertices = (torch.rand(3, 6, 2, generator=g, dtype=torch.float64) * 10).requires_grad_()
    boxes = torch.tensor([[1.0, 1.0, 8.0, 9.0], [2.0, 0.5, 9.0, 6.0], [0.0, 0.0, 10.0, 10.0]], dtype=torch.float64)
    expected = 0.0
    for poly, box in zip(vertices.tolist(), boxes.tolist()):
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        pred = torch.tensor([[min(xs), min(ys), max(xs), max(ys)]], dtype=torch.float64)
        expected += 1 - float(box_ciou(pred, torch.tensor([box], dtype=torch.float64)))
    assert polygon_box_loss(vertices, boxes).item() == pytest.approx(expected / 3)
    assert torch.autograd.gradcheck(lambda v: polygon_box_loss(v, boxes), (vertices,))


def test_unary_loss_empty_batch_and_errors() -> None:
    vertices = torch.zeros(0, 5, 2, requires_grad=True)
    loss = polygon_box_loss(vertices, torch.zeros(0, 4))
    loss.backward()
    assert loss.item() == 0.0 and vertices.grad is not None and not bool(vertices.grad.any())
    with pytest.raises(ValueError, match="2 polygons but 1 boxes"):
        polygon_box_loss(torch.rand(2, 4, 2), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        polygon_box_loss(torch.rand(1, 4, 2), torch.tensor([[2.0, 0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        polygon_box_loss(torch.rand(1, 4, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        polygon_box_loss(torch.full((1, 4, 2), math.nan), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


# ------------------------------------------------------------------------------------------ local pairwise


def _local_reference(masks, lab, box_masks, variant: str, sigma: float = 2.0, threshold: float = 0.1) -> float:
    n, h, w = masks.shape
    total, norm = 0.0, 0.0
    for k in range(n):
        for i in range(h):
            for j in range(w):
                if not box_masks[k, i, j]:
                    continue
                for dy, dx in OFFSETS:
                    a, b = i + dy, j + dx
                    if not (0 <= a < h and 0 <= b < w):
                        continue
                    weight = math.exp(-float(torch.linalg.vector_norm(lab[k, :, i, j] - lab[k, :, a, b])) / sigma)
                    mi, mj = float(masks[k, i, j]), float(masks[k, a, b])
                    if variant == "distance":
                        total += weight * abs(mi - mj)
                        norm += weight
                    elif weight >= threshold:
                        total += -math.log(mi * mj + (1 - mi) * (1 - mj))
                        norm += 1
    return total / max(norm, 1.0)


@pytest.mark.parametrize("variant", ["distance", "boxinst"])
def test_local_pairwise_matches_loop_reference(variant: str) -> None:
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(2, 6, 7, generator=g, dtype=torch.float64) * 0.9 + 0.05
    lab = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64) * 8
    box_masks = torch.zeros(2, 6, 7, dtype=torch.bool)
    box_masks[0, 1:5, 2:6] = True
    box_masks[1] = True
    affinity = color_affinity(lab)
    ours = local_pairwise_loss(masks, affinity, box_masks, variant=variant, threshold=0.1)
    assert ours.item() == pytest.approx(_local_reference(masks, lab, box_masks, variant), rel=1e-12)
    module = LocalPairwiseLoss(variant=variant)
    assert module(masks, lab, box_masks).item() == pytest.approx(ours.item(), rel=1e-12)
    masks.requires_grad_()
    assert torch.autograd.gradcheck(lambda m: local_pairwise_loss(m, affinity, box_masks, variant=variant), (masks,))


def test_local_pairwise_without_pairs_is_zero() -> None:
    masks = torch.rand(2, 5, 5, requires_grad=True)
    affinity = color_affinity(torch.rand(2, 3, 5, 5))
    cases = [(affinity, torch.zeros(2, 5, 5, dtype=torch.bool)), (affinity * 0, torch.ones(2, 5, 5, dtype=torch.bool))]
    for aff, box_masks in cases:  # no pixel in a box; no similar neighbour
        for variant in ("distance", "boxinst"):
            masks.grad = None
            loss = local_pairwise_loss(masks, aff, box_masks, variant=variant)
            loss.backward()
            assert masks.grad is not None
            assert loss.item() == 0.0 and not bool(masks.grad.any()) and bool(torch.isfinite(masks.grad).all())


def test_local_pairwise_uniform_mask_and_errors() -> None:
    affinity = color_affinity(torch.rand(1, 3, 6, 6))
    assert float(local_pairwise_loss(torch.ones(1, 6, 6), affinity, torch.ones(1, 6, 6, dtype=torch.bool))) == 0.0
    with pytest.raises(ValueError, match="bool tensor"):
        local_pairwise_loss(torch.ones(1, 6, 6), affinity, torch.ones(1, 6, 6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        local_pairwise_loss(torch.full((1, 6, 6), 2.0), affinity, torch.ones(1, 6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="neighbours"):
        local_pairwise_loss(torch.ones(1, 6, 6), affinity[:, :4], torch.ones(1, 6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="variant"):
        local_pairwise_loss(torch.ones(1, 6, 6), affinity, torch.ones(1, 6, 6, dtype=torch.bool), variant="l2")
    with pytest.raises(ValueError, match="dilation"):
        color_affinity(torch.rand(1, 3, 4, 4), dilation=0)
    with pytest.raises(ValueError, match="NaN"):
        color_affinity(torch.full((1, 3, 4, 4), math.nan))


# ------------------------------------------------------------------------------------------- level set


def _level_set_reference(masks: torch.Tensor, images: torch.Tensor) -> float:
    n, c, h, w = images.shape
    total = 0.0
    for k in range(n):
        energy = 0.0
        for ch in range(c):
            pixels = [(float(images[k, ch, i, j]), float(masks[k, i, j])) for i in range(h) for j in range(w)]
            mu_in = sum(v * m for v, m in pixels) / sum(m for _, m in pixels)
            mu_out = sum(v * (1 - m) for v, m in pixels) / sum(1 - m for _, m in pixels)
            energy += sum((v - mu_in) ** 2 * m + (v - mu_out) ** 2 * (1 - m) for v, m in pixels)
        total += energy / (c * h * w)
    return total / n


def test_level_set_matches_loop_reference_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    masks = torch.rand(2, 4, 5, generator=g, dtype=torch.float64)
    images = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    assert level_set_loss(masks, images).item() == pytest.approx(_level_set_reference(masks, images), rel=1e-12)
    assert LevelSetLoss()(masks, images).item() == pytest.approx(level_set_loss(masks, images).item())
    masks.requires_grad_()
    assert torch.autograd.gradcheck(lambda m: level_set_loss(m, images), (masks,))


def test_level_set_edge_cases() -> None:
    masks = torch.zeros(0, 4, 4, requires_grad=True)
    loss = level_set_loss(masks, torch.zeros(0, 3, 4, 4))
    loss.backward()
    assert loss.item() == 0.0 and masks.grad is not None and not bool(masks.grad.any())
    images = torch.zeros(1, 3, 4, 4)
    images[:, :, :2] = 1.0
    perfect = torch.zeros(1, 4, 4)
    perfect[:, :2] = 1.0
    assert float(level_set_loss(perfect, images)) == 0.0
    assert float(level_set_loss(torch.ones(1, 4, 4), images)) > 0.0  # one region holding two colours
    with pytest.raises(ValueError, match="matching masks"):
        level_set_loss(torch.ones(1, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        level_set_loss(torch.full((1, 4, 4), math.nan), images)


# ---------------------------------------------------------------------------------- crops and full loss


def test_box_crops_geometry() -> None:
    image = torch.rand(3, 40, 50)
    boxes = torch.tensor([[10.0, 5.0, 26.0, 13.0]])
    crops = box_crops(image, boxes, size=16, padding=2)
    assert crops.lab.shape == (1, 3, 20, 20) and crops.affinity.shape == (1, 8, 20, 20)
    assert int(crops.box_masks.sum()) == 256
    corners = torch.tensor([[[10.0, 5.0], [26.0, 13.0]]])
    torch.testing.assert_close(crops.to_crop(corners), torch.tensor([[[2.0, 2.0], [18.0, 18.0]]]))
    two = box_crops(image, torch.tensor([[10.0, 5.0, 26.0, 13.0], [3.3, 7.1, 40.2, 33.9]]), size=16, padding=2)
    lab = rgb_to_lab(image)
    for k, i, j in ((0, 7, 11), (1, 3, 14)):  # bilinear interpolation by hand at a crop pixel centre
        x = float(two.origin[k, 0] + (j + 0.5) / two.scale[k, 0]) - 0.5
        y = float(two.origin[k, 1] + (i + 0.5) / two.scale[k, 1]) - 0.5
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        expected = (
            lab[:, y0, x0] * (1 - fx) * (1 - fy)
            + lab[:, y0, x0 + 1] * fx * (1 - fy)
            + lab[:, y0 + 1, x0] * (1 - fx) * fy
            + lab[:, y0 + 1, x0 + 1] * fx * fy
        )
        torch.testing.assert_close(two.lab[k, :, i, j], expected, rtol=1e-4, atol=1e-4)
    flat = box_crops(torch.full((3, 40, 50), 0.5), torch.tensor([[0.0, 0.0, 50.0, 40.0]]), size=8, padding=1)
    inner = flat.affinity[0, :, 3:7, 3:7]
    torch.testing.assert_close(inner, torch.ones_like(inner))  # the same colour everywhere: w = 1
    assert float(flat.affinity[0, :, 0, 0].max()) == 0.0  # pixels outside the image have no pairs


def test_boxsnake_loss_combines_the_terms() -> None:
    image = torch.rand(3, 30, 30)
    boxes = torch.tensor([[5.0, 6.0, 20.0, 25.0], [2.0, 2.0, 12.0, 9.0]])
    crops = box_crops(image, boxes, size=16, padding=2)
    vertices = (box_polygon(boxes, 12) + torch.randn(2, 12, 2) * 0.5).requires_grad_()
    terms = boxsnake_loss_terms(vertices, boxes, crops)
    expected = terms["unary"] + 0.5 * 0.3 * terms["local"] + 0.03 * terms["global"]
    torch.testing.assert_close(boxsnake_loss(vertices, boxes, crops, warmup=0.3), expected)
    module = BoxSnakeLoss(warmup_steps=10)
    torch.testing.assert_close(module(vertices, boxes, crops, step=3), expected)
    torch.testing.assert_close(module(vertices, boxes, crops), boxsnake_loss(vertices, boxes, crops))
    only_unary = boxsnake_loss(vertices, boxes, crops, weights=(1.0, 0.0, 0.0))
    torch.testing.assert_close(only_unary, terms["unary"])
    boxsnake_loss(vertices, boxes, crops).backward()
    assert vertices.grad is not None and bool(torch.isfinite(vertices.grad).all()) and bool(vertices.grad.any())
    with pytest.raises(ValueError, match="weights"):
        boxsnake_loss(vertices, boxes, crops, weights=(1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="warmup"):
        boxsnake_loss(vertices, boxes, crops, warmup=2.0)
    with pytest.raises(ValueError, match="3 polygons but 2 crops"):
        boxsnake_loss_terms(torch.rand(3, 5, 2), torch.rand(3, 4).sort(dim=1).values, crops)


def test_losses_are_registered() -> None:
    names = registered_losses()
    for cls in (PolygonBoxLoss, LocalPairwiseLoss, LevelSetLoss, BoxSnakeLoss):
        assert names[cls.__name__] is cls and cls.family == "polygon" and cls.formula and cls.paper


# ------------------------------------------------------------------------------------------ head and data


def test_unit_box_polygon_and_box_head_start_at_the_box() -> None:
    unit = unit_box_polygon(8)
    expected = [[0, 0], [0.5, 0], [1, 0], [1, 0.5], [1, 1], [0.5, 1], [0, 1], [0, 0.5]]
    torch.testing.assert_close(unit, torch.tensor(expected, dtype=torch.float32))
    head = PolygonHead(num_vertices=16, init="box")
    boxes = torch.tensor([[3.0, 4.0, 30.0, 17.5], [0.0, 0.0, 9.0, 9.0]])
    vertices = head(torch.rand(2, 3, 20, 20), boxes)
    assert vertices.shape == (2, 16, 2)
    torch.testing.assert_close(vertices, box_polygon(boxes, 16))
    loss = polygon_box_loss(vertices + torch.tensor([0.3, 0.0]), boxes)
    loss.backward()
    assert head.offsets.weight.grad is not None and bool(head.offsets.weight.grad.any())
    with pytest.raises(ValueError, match="2 crops but 1 boxes"):
        head(torch.rand(2, 3, 20, 20), boxes[:1])
    with pytest.raises(ValueError, match="at least 4"):
        unit_box_polygon(3)
    with pytest.raises(ValueError, match="init must be one of"):
        PolygonHead(init="circle")


def test_head_starts_at_the_papers_ellipse() -> None:
    """The default start: the ellipse of centre ½ and semi-axes 0.49 in box units, so the unary term pulls."""
    unit = unit_ellipse_polygon(4)
    torch.testing.assert_close(unit, torch.tensor([[0.99, 0.5], [0.5, 0.99], [0.01, 0.5], [0.5, 0.01]]))
    head = PolygonHead(num_vertices=32)
    boxes = torch.tensor([[10.0, 20.0, 60.0, 40.0]])
    vertices = head(torch.rand(1, 3, 16, 16), boxes)
    centre = boxes[:, None, :2] + 0.5 * (boxes[:, None, 2:] - boxes[:, None, :2])
    radii = 0.49 * (boxes[:, None, 2:] - boxes[:, None, :2])
    torch.testing.assert_close(((vertices - centre) / radii).pow(2).sum(-1), torch.ones(1, 32))
    loss = polygon_box_loss(vertices, boxes)
    assert loss.item() > 0  # the ellipse's box is 2 % smaller than the box: the unary term has work to do
    loss.backward()
    assert bool(head.offsets.bias.grad.any())
    with pytest.raises(ValueError, match="semi_axis"):
        unit_ellipse_polygon(8, semi_axis=0.6)
    with pytest.raises(ValueError, match="at least 3"):
        unit_ellipse_polygon(2)


def test_box_crops_select_and_cat() -> None:
    image = torch.rand(3, 40, 50)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 30.0], [10.0, 5.0, 45.0, 25.0], [0.0, 0.0, 8.0, 9.0]])
    crops = box_crops(image, boxes, size=8, padding=1)
    assert len(crops) == 3
    first, rest = crops.select(torch.tensor([0])), crops.select(torch.tensor([1, 2]))
    joined = BoxCrops.cat([first, rest])
    for name in ("lab", "normalized", "affinity", "box_masks", "origin", "scale"):
        torch.testing.assert_close(getattr(joined, name), getattr(crops, name))
    assert joined.dilation == crops.dilation
    with pytest.raises(ValueError, match="share their grid"):
        BoxCrops.cat([crops, box_crops(image, boxes, size=6, padding=1)])
    with pytest.raises(ValueError, match="empty"):
        BoxCrops.cat([])


def test_instance_images() -> None:
    coins = coins_instances()
    assert len(coins) == 24 and coins.image.shape == (3, 303, 384)
    hubble = hubble_instances(count=5)
    assert len(hubble) == 5
    for inst in (coins, hubble):
        assert int(inst.masks.sum(dim=0).max()) == 1  # masks are disjoint
        for box, mask in zip(inst.boxes.long().tolist(), inst.masks):
            x1, y1, x2, y2 = box
            assert int(mask.sum()) == int(mask[y1:y2, x1:x2].sum())
            assert bool(mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any())
            assert bool(mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any())
    with pytest.raises(ValueError, match="unknown instance image"):
        load_instance_image("astronaut")
