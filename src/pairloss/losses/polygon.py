"""BoxSnake's box-supervised polygon losses: a point-based unary loss and two pairwise losses on soft masks.

Yang, Song, Ge, Li, "BoxSnake: Polygonal Instance Segmentation with Box Supervision", ICCV 2023. A polygon is
predicted for each ground-truth box and trained from the box alone:

* **unary** (:func:`polygon_box_loss`): the polygon's bounding box (min/max of its vertices) against the box,
  1 − CIoU;
* **local pairwise** (:func:`local_pairwise_loss`): neighbouring pixels of similar colour should share the mask
  value, L = Σ w_ij |m_i − m_j| / max(Σ w_ij, 1) with w_ij = exp(−‖LAB_i − LAB_j‖/σ) over the 8 neighbours at
  dilation 2 of every pixel in the box (or BoxInst's −log(m_i m_j + (1 − m_i)(1 − m_j)) on pairs with w ≥ 0.1);
* **global pairwise** (:func:`level_set_loss`): the Chan–Vese region energy, each region should be homogeneous,
  Σ_c Σ_p (I − μ_in)² m + (I − μ_out)² (1 − m).

:func:`boxsnake_loss` puts the three together on box-aligned crops of the image, with the paper's weights
1.0 / 0.5 (after a linear warm-up) / 0.03. The soft masks come from :func:`pairloss.losses.rasterize.soft_polygon_mask`.

The pixel pairs are the public :class:`pairloss.pairs.NeighbourPairs` and their weights
:class:`pairloss.weights.DistanceAware`; the losses are not built by :func:`pairloss.pair_loss`, whose pairs are
rows of an ``N × N`` score matrix: a pixel has a fixed 8 neighbours, so each offset is one shifted image and the
whole loss is ``8`` elementwise passes, with no pair matrix to block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._validation import check_choice, check_floating, check_positive
from pairloss.losses.base import PairLoss, loss_module
from pairloss.losses.color import rgb_to_lab
from pairloss.losses.rasterize import soft_polygon_mask
from pairloss.pairs import NeighbourPairs
from pairloss.weights import DistanceAware

__all__ = [
    "BoxCrops",
    "BoxSnakeLoss",
    "LevelSetLoss",
    "LocalPairwiseLoss",
    "PolygonBoxLoss",
    "box_ciou",
    "box_crops",
    "boxsnake_loss",
    "boxsnake_loss_terms",
    "color_affinity",
    "level_set_loss",
    "local_pairwise_loss",
    "polygon_box_loss",
    "polygon_boxes",
]

BOXSNAKE_PAPER = "Yang, Song, Ge, Li. BoxSnake: Polygonal Instance Segmentation with Box Supervision. ICCV 2023"
#: detectron2's ImageNet pixel statistics (RGB, 0–255 scale): BoxSnake's level-set term sees the normalised image.
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)


# ----------------------------------------------------------------------------------------------- checks


def _check_boxes(boxes: Tensor, name: str = "boxes") -> Tensor:
    check_floating(boxes, name, ndim=2)
    if boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.numel() and not bool((boxes[:, 2:] >= boxes[:, :2]).all()):
        raise ValueError(f"{name} must satisfy x2 >= x1 and y2 >= y1")
    return boxes


def _check_polygons(vertices: Tensor) -> Tensor:
    check_floating(vertices, "vertices", ndim=3)
    if vertices.shape[-1] != 2 or vertices.shape[1] < 3:
        raise ValueError(f"vertices must have shape [N, V >= 3, 2], got {tuple(vertices.shape)}")
    return vertices


def _check_masks(masks: Tensor, images: Tensor, images_name: str) -> None:
    check_floating(masks, "masks", ndim=3)
    check_floating(images, images_name, ndim=4)
    if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[1:]:
        raise ValueError(
            f"{images_name} {tuple(images.shape)} must be [N, C, H, W] matching masks {tuple(masks.shape)}"
        )
    if masks.numel() and not bool(((masks >= 0) & (masks <= 1)).all()):
        raise ValueError("masks must be soft masks with values in [0, 1]")


# ------------------------------------------------------------------------------------------- unary loss


def polygon_boxes(vertices: Tensor) -> Tensor:
    """The bounding boxes ``[N, 4]`` (x1, y1, x2, y2) of polygons ``[N, V, 2]``: min and max of the vertices."""
    _check_polygons(vertices)
    return torch.cat([vertices.amin(dim=1), vertices.amax(dim=1)], dim=1)


def box_ciou(pred: Tensor, target: Tensor) -> Tensor:
    """Complete IoU of box pairs ``[N, 4]`` (x1, y1, x2, y2) → ``[N]`` (Zheng et al., AAAI 2020 / TCYB 2021).

        CIoU = IoU − ρ²/c² − α v,   v = (4/π²) (atan(w_t/h_t) − atan(w/h))²,   α = [IoU ≥ ½] · v / (1 − IoU + v),

    with ρ the distance between the box centres and c the diagonal of the smallest enclosing box. α is a
    constant weight (no gradient), gated at IoU ≥ ½ as in the TCYB version used by BoxSnake. Identical boxes give
    exactly 1.
    """
    _check_boxes(pred, "pred")
    _check_boxes(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    tiny = torch.finfo(pred.dtype).tiny
    wh = (torch.minimum(pred[:, 2:], target[:, 2:]) - torch.maximum(pred[:, :2], target[:, :2])).clamp_min(0)
    overlap = wh[:, 0] * wh[:, 1]
    pred_wh, target_wh = pred[:, 2:] - pred[:, :2], target[:, 2:] - target[:, :2]
    union = pred_wh.prod(dim=1) + target_wh.prod(dim=1) - overlap
    iou = overlap / union.clamp_min(tiny)
    enclose = torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])
    c2 = (enclose * enclose).sum(dim=1).clamp_min(tiny)
    centre_gap = (pred[:, :2] + pred[:, 2:] - target[:, :2] - target[:, 2:]) / 2
    rho2 = (centre_gap * centre_gap).sum(dim=1)
    aspect = torch.atan(target_wh[:, 0] / target_wh[:, 1].clamp_min(tiny)) - torch.atan(
        pred_wh[:, 0] / pred_wh[:, 1].clamp_min(tiny)
    )
    v = 4 / math.pi**2 * aspect * aspect
    with torch.no_grad():
        gate = (iou >= 0.5).to(v.dtype)
        alpha = torch.where(v > 0, gate * v / (1 - iou + v).clamp_min(tiny), torch.zeros_like(v))
    return iou - rho2 / c2 - alpha * v


def polygon_box_loss(vertices: Tensor, boxes: Tensor) -> Tensor:
    """BoxSnake's point-based unary loss: mean over polygons of 1 − CIoU(bbox(vertices), box).

    ``vertices [N, V, 2]`` (x, y) and ``boxes [N, 4]`` (x1, y1, x2, y2) in the same units. 0 exactly when every
    polygon's bounding box equals its box; 0 (with a zero gradient) for N = 0. Paper: see the module docstring.
    """
    _check_polygons(vertices)
    _check_boxes(boxes)
    if boxes.shape[0] != vertices.shape[0]:
        raise ValueError(
            f"{vertices.shape[0]} polygons but {boxes.shape[0]} boxes: vertices and boxes need one per object"
        )
    if vertices.shape[0] == 0:
        return vertices.sum() * 0.0
    return (1 - box_ciou(polygon_boxes(vertices), boxes.to(vertices.dtype))).mean()


@loss_module(
    polygon_box_loss,
    formula="mean_n 1 − CIoU([min_k v_nk, max_k v_nk], box_n)",
    paper=BOXSNAKE_PAPER,
    family="polygon",
)
class PolygonBoxLoss(PairLoss):
    """1 − CIoU between each polygon's bounding box and its ground-truth box (BoxSnake's unary term).

    ``loss(vertices [N, V, 2], boxes [N, 4])``; see :func:`polygon_box_loss`.
    """


# ------------------------------------------------------------------------------------ local pairwise loss


def color_affinity(images_lab: Tensor, *, sigma: float = 2.0, dilation: int = 2, kernel_size: int = 3) -> Tensor:
    """Colour similarity of each pixel with its ``k² − 1`` neighbours at ``dilation``: ``[N, k² − 1, H, W]``.

        w_ij = exp(−‖LAB_i − LAB_j‖₂ / σ)

    (BoxInst and BoxSnake); 0 where the neighbour falls off the grid. Neighbours are ordered row by row.
    """
    check_floating(images_lab, "images_lab", ndim=4)
    check_positive(sigma, "sigma")
    offsets = NeighbourPairs(kernel_size, dilation).offsets
    n, _, h, w = images_lab.shape
    out = images_lab.new_zeros(n, len(offsets), h, w)
    for k, (dy, dx) in enumerate(offsets):
        centre, neighbour = NeighbourPairs.shifted(images_lab, dy, dx)
        target, _ = NeighbourPairs.shifted(out[:, k], dy, dx)
        target.copy_(DistanceAware(sigma)(centre, neighbour))
    return out


def local_pairwise_loss(
    masks: Tensor,
    affinity: Tensor,
    box_masks: Tensor,
    *,
    dilation: int = 2,
    kernel_size: int = 3,
    variant: str = "distance",
    threshold: float = 0.1,
) -> Tensor:
    """BoxSnake's local distance-aware pairwise loss on soft masks (summed over the batch, then normalised).

    For every pixel i inside its box (``box_masks``) and each of its ``k² − 1`` neighbours j at ``dilation`` that lie
    on the grid, with the colour affinity w_ij = exp(−‖LAB_i − LAB_j‖/σ) of :func:`color_affinity`:

    * ``variant="distance"`` (BoxSnake):  L = Σ w_ij |m_i − m_j| / max(Σ w_ij, 1);
    * ``variant="boxinst"`` (BoxInst's form, Tian et al., CVPR 2021):
      L = Σ_{w_ij ≥ t} −log(m_i m_j + (1 − m_i)(1 − m_j)) / max(#{w_ij ≥ t}, 1), t = ``threshold``.

    Args:
        masks: ``[N, H, W]`` soft masks in [0, 1].
        affinity: ``[N, k² − 1, H, W]`` from ``color_affinity(images_lab, sigma=2, dilation=2)`` (computed once
            per image: it does not depend on the masks).
        box_masks: ``[N, H, W]`` bool, the pixels inside each box.
        dilation, kernel_size: the neighbourhood, as given to :func:`color_affinity` (BoxSnake: 2, 3).
        variant, threshold: see above.

    A batch with no pair inside a box gives 0 with a zero gradient.
    """
    offsets = NeighbourPairs(kernel_size, dilation).offsets
    _check_masks(masks, affinity, "affinity")
    check_choice(variant, "variant", ("distance", "boxinst"))
    if affinity.shape[1] != len(offsets):
        raise ValueError(f"affinity has {affinity.shape[1]} neighbours, expected {len(offsets)} for this kernel")
    if not isinstance(box_masks, Tensor) or box_masks.shape != masks.shape or box_masks.dtype != torch.bool:
        raise ValueError(f"box_masks must be a bool tensor (torch.Tensor) of shape {tuple(masks.shape)}")
    total = masks.new_zeros(())
    norm = masks.new_zeros(())
    for k, (dy, dx) in enumerate(offsets):
        m_i, m_j = NeighbourPairs.shifted(masks, dy, dx)
        inside, _ = NeighbourPairs.shifted(box_masks, dy, dx)
        w, _ = NeighbourPairs.shifted(affinity[:, k], dy, dx)
        if variant == "distance":
            w = w * inside
            total = total + (w * (m_i - m_j).abs()).sum()
            norm = norm + w.sum()
        else:
            keep = inside & (w >= threshold)
            same = m_i * m_j + (1 - m_i) * (1 - m_j)
            term = -torch.log(same.clamp_min(torch.finfo(masks.dtype).eps))
            total = total + torch.where(keep, term, torch.zeros_like(term)).sum()
            norm = norm + keep.sum()
    return total / norm.clamp_min(1)


@loss_module(
    local_pairwise_loss,
    formula="Σ_(i,j)∈N₈(box) w_ij |m_i − m_j| / max(Σ w_ij, 1),  w_ij = exp(−‖LAB_i − LAB_j‖/σ)",
    paper=BOXSNAKE_PAPER,
    family="polygon",
)
class LocalPairwiseLoss(PairLoss):
    """BoxSnake's local distance-aware pairwise loss, ``loss(masks, images_lab, box_masks)``.

    The module computes the colour affinity of ``images_lab [N, 3, H, W]`` (σ, dilation) on each call; see
    :func:`local_pairwise_loss` and :func:`color_affinity`.
    """

    def __init__(
        self,
        sigma: float = 2.0,
        dilation: int = 2,
        kernel_size: int = 3,
        variant: str = "distance",
        threshold: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive(sigma, "sigma")
        check_choice(variant, "variant", ("distance", "boxinst"))
        NeighbourPairs(kernel_size, dilation)  # checks the neighbourhood
        self.sigma, self.dilation, self.kernel_size = sigma, dilation, kernel_size
        self.variant, self.threshold = variant, threshold

    def forward(self, masks: Tensor, images_lab: Tensor, box_masks: Tensor) -> Tensor:
        _check_masks(masks, images_lab, "images_lab")
        affinity = color_affinity(images_lab, sigma=self.sigma, dilation=self.dilation, kernel_size=self.kernel_size)
        return local_pairwise_loss(
            masks,
            affinity,
            box_masks,
            dilation=self.dilation,
            kernel_size=self.kernel_size,
            variant=self.variant,
            threshold=self.threshold,
        )


# ----------------------------------------------------------------------------------- global level-set loss


def level_set_loss(masks: Tensor, images: Tensor) -> Tensor:
    """BoxSnake's global pairwise loss: the Chan–Vese (Chan & Vese, IEEE TIP 2001) region energy of soft masks.

    For each mask m ``[H, W]`` over its image I ``[C, H, W]``, with region means
    μ_in = Σ_p I m / Σ_p m and μ_out = Σ_p I (1 − m) / Σ_p (1 − m) per channel:

        E = (1 / (C H W)) Σ_c Σ_p [(I_c(p) − μ_in,c)² m(p) + (I_c(p) − μ_out,c)² (1 − m(p))],

    averaged over the N masks (0 for N = 0). The means are differentiable, as in the paper's code.
    """
    _check_masks(masks, images, "images")
    n, c, h, w = images.shape
    if n == 0:
        return masks.sum() * 0.0
    eps = torch.finfo(masks.dtype).eps
    energy = masks.new_zeros(n)
    for region in (masks.unsqueeze(1), 1 - masks.unsqueeze(1)):
        mean = (images * region).sum(dim=(2, 3), keepdim=True) / region.sum(dim=(2, 3), keepdim=True).clamp_min(eps)
        energy = energy + ((images - mean) ** 2 * region).sum(dim=(1, 2, 3))
    return (energy / (c * h * w)).mean()


@loss_module(
    level_set_loss,
    formula="mean_n Σ_c Σ_p (I − μ_in)² m + (I − μ_out)² (1 − m) / (C·H·W)",
    paper=BOXSNAKE_PAPER,
    family="polygon",
)
class LevelSetLoss(PairLoss):
    """BoxSnake's global level-set pairwise loss, ``loss(masks [N, H, W], images [N, C, H, W])``.

    See :func:`level_set_loss`.
    """


# ------------------------------------------------------------------------------- crops and the full loss


@dataclass
class BoxCrops:
    """Box-aligned crops of one image, as BoxSnake builds its training targets.

    Each box is enlarged by ``padding / size`` of its width and height on every side and resampled to a
    ``(size + 2 padding)²`` grid. Attributes: ``lab`` and ``normalized`` ``[N, 3, S, S]`` (L*a*b* and ImageNet-
    normalised RGB, zero outside the image); ``affinity`` ``[N, 8, S, S]`` the colour affinity of
    :func:`color_affinity` (0 for pairs with a pixel outside the image); ``box_masks`` ``[N, S, S]`` (the box's own
    pixels); ``origin`` and ``scale`` ``[N, 2]`` (crop coordinate u = (x − origin) · scale); ``dilation``.
    """

    lab: Tensor
    normalized: Tensor
    affinity: Tensor
    box_masks: Tensor
    origin: Tensor
    scale: Tensor
    dilation: int

    def __len__(self) -> int:
        return int(self.box_masks.shape[0])

    def to_crop(self, vertices: Tensor) -> Tensor:
        """Map image coordinates ``[N, V, 2]`` into each box's crop grid."""
        return (vertices - self.origin.unsqueeze(1)) * self.scale.unsqueeze(1)

    def select(self, index: Tensor) -> BoxCrops:
        """The crops of the boxes ``index`` (a 1-D index or boolean tensor)."""
        return BoxCrops(
            self.lab[index],
            self.normalized[index],
            self.affinity[index],
            self.box_masks[index],
            self.origin[index],
            self.scale[index],
            self.dilation,
        )

    @staticmethod
    def cat(parts: Sequence[BoxCrops]) -> BoxCrops:
        """The crops of several images, one after the other (same grid size and dilation)."""
        if not parts:
            raise ValueError("parts is empty: give at least one BoxCrops")
        sides = {p.box_masks.shape[-1] for p in parts}
        dilations = {p.dilation for p in parts}
        if len(sides) != 1 or len(dilations) != 1:
            raise ValueError(f"crops must share their grid and dilation, got sides {sides} and dilations {dilations}")
        return BoxCrops(
            torch.cat([p.lab for p in parts]),
            torch.cat([p.normalized for p in parts]),
            torch.cat([p.affinity for p in parts]),
            torch.cat([p.box_masks for p in parts]),
            torch.cat([p.origin for p in parts]),
            torch.cat([p.scale for p in parts]),
            parts[0].dilation,
        )


def box_crops(
    image: Tensor, boxes: Tensor, *, size: int = 64, padding: int = 4, sigma: float = 2.0, dilation: int = 2
) -> BoxCrops:
    """Crop ``image [3, H, W]`` (RGB in [0, 1]) around ``boxes [N, 4]`` (image pixels) with bilinear sampling.

    ``size`` and ``padding`` are BoxSnake's crop (64, 4); ``sigma`` and ``dilation`` its colour affinity (2, 2).
    """
    check_floating(image, "image", ndim=3)
    if image.shape[0] != 3:
        raise ValueError(f"image must be RGB with shape [3, H, W], got {tuple(image.shape)}")
    _check_boxes(boxes)
    if size < 1 or padding < 0:
        raise ValueError(f"size must be >= 1 and padding >= 0, got {size} and {padding}")
    boxes = boxes.to(image.dtype)
    side = size + 2 * padding
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(torch.finfo(image.dtype).eps)
    origin = boxes[:, :2] - padding * wh / size
    scale = size / wh
    centres = (torch.arange(side, dtype=image.dtype, device=image.device) + 0.5).view(1, side, 1)
    x = origin[:, 0].view(-1, 1, 1) + centres.transpose(1, 2) / scale[:, 0].view(-1, 1, 1)  # [N, 1, S]
    y = origin[:, 1].view(-1, 1, 1) + centres / scale[:, 1].view(-1, 1, 1)  # [N, S, 1]
    height, width = image.shape[1:]
    grid = torch.stack(torch.broadcast_tensors(2 * x / width - 1, 2 * y / height - 1), dim=-1)
    n = boxes.shape[0]
    lab = rgb_to_lab(image.clamp(0, 1))
    mean = torch.tensor(_PIXEL_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(_PIXEL_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    normalized = (image * 255 - mean) / std
    stacked = torch.cat([lab, normalized, torch.ones_like(image[:1])]).unsqueeze(0)
    # one image, the N sampling grids stacked along the rows: no per-box copy of the image
    crops = F.grid_sample(stacked, grid.reshape(1, n * side, side, 2), align_corners=False)
    crops = crops.view(stacked.shape[1], n, side, side).transpose(0, 1)  # also for n = 0 (an image without boxes)
    valid = (crops[:, 6] > 0.5).to(image.dtype)
    affinity = color_affinity(crops[:, :3], sigma=sigma, dilation=dilation)
    for k, (dy, dx) in enumerate(NeighbourPairs(3, dilation).offsets):
        valid_i, valid_j = NeighbourPairs.shifted(valid, dy, dx)
        NeighbourPairs.shifted(affinity[:, k], dy, dx)[0].mul_(valid_i * valid_j)
    box_masks = torch.zeros(n, side, side, dtype=torch.bool, device=image.device)
    box_masks[:, padding : padding + size, padding : padding + size] = True
    return BoxCrops(crops[:, :3], crops[:, 3:6] * valid.unsqueeze(1), affinity, box_masks, origin, scale, dilation)


def boxsnake_loss_terms(
    vertices: Tensor,
    boxes: Tensor,
    crops: BoxCrops,
    *,
    tau: float = 0.1,
    variant: str = "distance",
    terms: tuple[str, ...] = ("unary", "local", "global"),
) -> dict[str, Tensor]:
    """BoxSnake's unweighted terms for polygons ``vertices [N, V, 2]`` (image pixels) and ``boxes [N, 4]``.

    Returns the requested ``terms`` among ``"unary"`` (:func:`polygon_box_loss` in image coordinates),
    ``"local"`` and ``"global"`` (:func:`local_pairwise_loss` / :func:`level_set_loss` on the soft masks
    rasterised with smoothness ``tau`` in each box's crop from :func:`box_crops`).
    """
    _check_polygons(vertices)
    for term in terms:
        check_choice(term, "term", ("unary", "local", "global"))
    n, side = crops.box_masks.shape[0], crops.box_masks.shape[-1]
    if vertices.shape[0] != n:
        raise ValueError(f"{vertices.shape[0]} polygons but {n} crops: vertices and crops need one per object")
    out = {}
    if "unary" in terms:
        out["unary"] = polygon_box_loss(vertices, boxes)
    if "local" in terms or "global" in terms:
        masks = soft_polygon_mask(crops.to_crop(vertices), side, side, tau=tau)
        if "local" in terms:
            out["local"] = local_pairwise_loss(
                masks, crops.affinity, crops.box_masks, dilation=crops.dilation, variant=variant
            )
        if "global" in terms:
            out["global"] = level_set_loss(masks, crops.normalized)
    return out


def boxsnake_loss(
    vertices: Tensor,
    boxes: Tensor,
    crops: BoxCrops,
    *,
    weights: tuple[float, float, float] = (1.0, 0.5, 0.03),
    warmup: float = 1.0,
    tau: float = 0.1,
    variant: str = "distance",
) -> Tensor:
    """BoxSnake's training loss: L = λ_u L_unary + warmup · λ_l L_local + λ_g L_global.

    ``weights = (λ_u, λ_l, λ_g)``, the paper's (1.0, 0.5, 0.03); ``warmup`` ∈ [0, 1] scales the local term
    (the paper ramps it linearly over the first 10k iterations). ``crops`` from :func:`box_crops` (which holds
    the colour affinity, σ and dilation). A zero weight skips its term. See :func:`boxsnake_loss_terms`.
    """
    if len(weights) != 3 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be three non-negative numbers, got {weights}")
    if not 0.0 <= warmup <= 1.0:
        raise ValueError(f"warmup must be in [0, 1], got {warmup}")
    factors = {"unary": weights[0], "local": weights[1] * warmup, "global": weights[2]}
    active = tuple(name for name, factor in factors.items() if factor > 0)
    terms = boxsnake_loss_terms(vertices, boxes, crops, tau=tau, variant=variant, terms=active)
    total = vertices.sum() * 0.0
    for name, term in terms.items():
        total = total + factors[name] * term
    return total


@loss_module(
    boxsnake_loss,
    formula="1 − CIoU(bbox(P), B) + 0.5·Σ w_ij|m_i − m_j|/Σ w_ij + 0.03·Chan–Vese(m, I)",
    paper=BOXSNAKE_PAPER,
    family="polygon",
)
class BoxSnakeLoss(PairLoss):
    """BoxSnake's full box-supervised loss, ``loss(vertices, boxes, crops, step=None)`` (crops: :func:`box_crops`).

    ``warmup_steps`` > 0 ramps the local pairwise weight linearly from 0 to its value over the first steps
    (the paper: 10k iterations); ``step=None`` means "after the warm-up". See :func:`boxsnake_loss`.
    """

    def __init__(
        self,
        weights: tuple[float, float, float] = (1.0, 0.5, 0.03),
        warmup_steps: int = 0,
        tau: float = 0.1,
        variant: str = "distance",
    ) -> None:
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        check_positive(tau, "tau")
        check_choice(variant, "variant", ("distance", "boxinst"))
        self.weights, self.warmup_steps = weights, warmup_steps
        self.tau, self.variant = tau, variant

    def forward(self, vertices: Tensor, boxes: Tensor, crops: BoxCrops, step: int | None = None) -> Tensor:
        warmup = 1.0
        if step is not None and self.warmup_steps > 0:
            warmup = min(max(step, 0) / self.warmup_steps, 1.0)
        return boxsnake_loss(
            vertices,
            boxes,
            crops,
            weights=self.weights,
            warmup=warmup,
            tau=self.tau,
            variant=self.variant,
        )
