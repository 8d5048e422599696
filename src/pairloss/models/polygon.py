"""A small polygon-regression head: a box crop → the offsets of V polygon vertices from an initial polygon.

A stand-in, at laptop scale, for BoxSnake's polygon head (Yang et al., ICCV 2023), which refines a 64-vertex
polygon from RoI features with a transformer decoder. Here a small CNN reads the box's image crop and one linear
layer predicts the vertex offsets in box-normalised coordinates; the last layer starts at zero, so an untrained
head returns its initial polygon: by default the paper's (``POLY_INIT = "ellipse"`` in its code), the ellipse
centred in the box with semi-axes 0.49 of the box's width and height; or the box itself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairloss._validation import check_floating

__all__ = [
    "INITIAL_POLYGONS",
    "PolygonHead",
    "box_polygon",
    "from_unit_box",
    "unit_box_polygon",
    "unit_ellipse_polygon",
]

#: The initial polygons of :class:`PolygonHead`.
INITIAL_POLYGONS = ("ellipse", "box")


def unit_box_polygon(
    num_vertices: int, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """``[V, 2]`` points evenly spaced (by arc length) around the unit square, clockwise on screen from (0, 0)."""
    if num_vertices < 4:
        raise ValueError(f"a box polygon needs at least 4 vertices, got {num_vertices}")
    t = torch.arange(num_vertices, dtype=dtype, device=device) * (4.0 / num_vertices)
    side = t.floor()
    f = t - side
    one, zero = torch.ones_like(f), torch.zeros_like(f)
    x = torch.where(side == 0, f, torch.where(side == 1, one, torch.where(side == 2, 1 - f, zero)))
    y = torch.where(side == 0, zero, torch.where(side == 1, f, torch.where(side == 2, one, 1 - f)))
    return torch.stack([x, y], dim=-1)


def unit_ellipse_polygon(
    num_vertices: int,
    *,
    semi_axis: float = 0.49,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor:
    """``[V, 2]`` points at equal angles on the ellipse centred at (½, ½) with semi-axes ``semi_axis`` (box units).

    BoxSnake's initial polygon (its code samples the ellipse of centre 0.5 and semi-axes 0.49 in box space). The
    points run clockwise on screen from angle 0, like :func:`unit_box_polygon`.
    """
    if num_vertices < 3:
        raise ValueError(f"an ellipse polygon needs at least 3 vertices, got {num_vertices}")
    if not 0.0 < semi_axis <= 0.5:
        raise ValueError(f"semi_axis must be in (0, 0.5], got {semi_axis}")
    angle = torch.arange(num_vertices, dtype=dtype, device=device) * (2 * torch.pi / num_vertices)
    return torch.stack([0.5 + semi_axis * torch.cos(angle), 0.5 + semi_axis * torch.sin(angle)], dim=-1)


def box_polygon(boxes: Tensor, num_vertices: int) -> Tensor:
    """``[N, V, 2]`` polygons tracing each box ``(x1, y1, x2, y2)``: the box-shaped initial polygon of BoxSnake."""
    check_floating(boxes, "boxes", ndim=2)
    return from_unit_box(unit_box_polygon(num_vertices, dtype=boxes.dtype, device=boxes.device), boxes)


def from_unit_box(unit: Tensor, boxes: Tensor) -> Tensor:
    """Map box-normalised points ``[N or 1, V, 2]`` into ``boxes [N, 4]``: x = x1 (1 − u) + x2 u (exact at 0 and 1)."""
    return boxes[:, None, :2] * (1 - unit) + boxes[:, None, 2:] * unit


class PolygonHead(nn.Module):
    """Box crop ``[N, C, S, S]`` → polygon vertices ``[N, V, 2]`` in image coordinates.

    vertices = box_min ⊙ (1 − u) + box_max ⊙ u with u = u₀ + f(crop), u₀ the initial polygon in box units
    (``init="ellipse"``: :func:`unit_ellipse_polygon`, the paper's; ``"box"``: :func:`unit_box_polygon`) and f a
    CNN (three stride-2 3×3 convolutions with ReLU, 4 × 4 average pooling, a zero-initialised linear layer).
    """

    def __init__(self, num_vertices: int = 64, in_channels: int = 3, width: int = 32, init: str = "ellipse") -> None:
        super().__init__()
        if init not in INITIAL_POLYGONS:
            raise ValueError(f"init must be one of {INITIAL_POLYGONS}, got {init!r}")
        self.num_vertices = num_vertices
        self.init = init
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.offsets = nn.Linear(width * 16, 2 * num_vertices)
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)
        start = unit_ellipse_polygon(num_vertices) if init == "ellipse" else unit_box_polygon(num_vertices)
        self.register_buffer("start", start, persistent=False)

    def forward(self, crops: Tensor, boxes: Tensor) -> Tensor:
        check_floating(crops, "crops", ndim=4)
        check_floating(boxes, "boxes", ndim=2)
        if crops.shape[0] != boxes.shape[0]:
            raise ValueError(f"{crops.shape[0]} crops but {boxes.shape[0]} boxes")
        offsets = self.offsets(self.features(crops)).view(-1, self.num_vertices, 2)
        return from_unit_box(self.start.to(crops.dtype) + offsets, boxes)
