"""The soft polygon rasteriser against loop references, exact areas, monotonicity in τ and finite differences."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch

from pairloss.losses.rasterize import polygon_inside, soft_polygon_mask, squared_distance_to_polygon


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: a single intra-op thread avoids synchronisation overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference(vertices: torch.Tensor, height: int, width: int, tau: float) -> torch.Tensor:
    """Loops over polygons, pixels and edges: nearest-edge distance and the crossing-rule winding number."""
    out = torch.zeros(vertices.shape[0], height, width, dtype=torch.float64)
    for p, poly in enumerate(vertices.tolist()):
        edges = list(zip(poly, poly[1:] + poly[:1]))
        for i in range(height):
            for j in range(width):
                px, py = j + 0.5, i + 0.5
                best, winding = math.inf, 0
                for (x0, y0), (x1, y1) in edges:
                    ex, ey = x1 - x0, y1 - y0
                    length2 = ex * ex + ey * ey
                    t = 0.0 if length2 == 0 else min(max(((px - x0) * ex + (py - y0) * ey) / length2, 0.0), 1.0)
                    best = min(best, (px - x0 - t * ex) ** 2 + (py - y0 - t * ey) ** 2)
                    cross = ex * (py - y0) - ey * (px - x0)
                    if y0 <= py < y1 and cross > 0:
                        winding += 1
                    elif y1 <= py < y0 and cross < 0:
                        winding -= 1
                sign = 1.0 if winding != 0 else -1.0
                out[p, i, j] = 1.0 / (1.0 + math.exp(-sign * best / tau))
    return out


def _shoelace(vertices: torch.Tensor) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float((x * torch.roll(y, -1) - torch.roll(x, -1) * y).sum()))


def _star(points: int = 5, outer: float = 40.0, inner: float = 17.0) -> torch.Tensor:
    k = torch.arange(2 * points, dtype=torch.float64)
    radius = torch.where(k % 2 == 0, outer, inner)
    angle = k * math.pi / points + 0.1
    return torch.stack([50.3 + radius * angle.cos(), 50.1 + radius * angle.sin()], dim=-1)


SQUARE = torch.tensor([[10.0, 10.0], [60.0, 10.0], [60.0, 60.0], [10.0, 60.0]], dtype=torch.float64)
TRIANGLE = torch.tensor([[20.3, 80.1], [90.7, 75.2], [50.2, 10.9]], dtype=torch.float64)


def test_matches_loop_reference_on_random_polygons() -> None:
    g = torch.Generator().manual_seed(1)
    vertices = torch.rand(3, 6, 2, generator=g, dtype=torch.float64) * 12 - 1  # partly off the grid, crossing
    ours = soft_polygon_mask(vertices, 9, 11, tau=0.7, chunk=13)
    torch.testing.assert_close(ours, _reference(vertices, 9, 11, 0.7), rtol=1e-12, atol=1e-12)


def test_star_matches_reference_and_orientation_does_not_matter() -> None:
    star = _star(outer=5.0, inner=2.0) / 10 * 1.0 + torch.tensor([-0.5, -0.5], dtype=torch.float64)
    star = star.unsqueeze(0)
    ours = soft_polygon_mask(star, 10, 10, tau=0.3)
    torch.testing.assert_close(ours, _reference(star, 10, 10, 0.3), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(soft_polygon_mask(star.flip(1), 10, 10, tau=0.3), ours)


@pytest.mark.parametrize("polygon", [SQUARE, TRIANGLE, _star()], ids=["square", "triangle", "star"])
def test_area_within_one_percent_at_small_tau(polygon: torch.Tensor) -> None:
    area = float(soft_polygon_mask(polygon[None], 100, 100, tau=0.01).sum())
    assert abs(area / _shoelace(polygon) - 1) < 0.01


def test_square_with_integer_corners_has_exact_area() -> None:
    assert float(soft_polygon_mask(SQUARE[None], 70, 70, tau=1e-3).sum()) == pytest.approx(2500.0, abs=1e-9)
    assert int(polygon_inside(SQUARE[None], 70, 70).sum()) == 2500


def test_soft_mask_is_monotone_in_tau() -> None:
    star = _star()[None]
    masks = [soft_polygon_mask(star, 100, 100, tau=tau) for tau in (0.05, 0.5, 5.0, 50.0)]
    inside = polygon_inside(star, 100, 100)
    for sharp, smooth in itertools.pairwise(masks):
        assert bool((sharp[inside] >= smooth[inside]).all())
        assert bool((sharp[~inside] <= smooth[~inside]).all())
        assert bool((sharp != smooth).any())


def test_vertex_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(3)
    angle = torch.linspace(0, 2 * math.pi, 8, dtype=torch.float64)[:-1]
    radius = 2.5 + torch.rand(2, 7, generator=g, dtype=torch.float64)
    vertices = torch.stack([4.1 + radius * angle.cos(), 3.9 + radius * angle.sin()], dim=-1)
    vertices.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: soft_polygon_mask(v, 8, 8, tau=1.0), (vertices,))


def test_distance_and_sign() -> None:
    d2, sign = squared_distance_to_polygon(SQUARE[None], 70, 70)
    assert float(d2[0, 35, 35]) == pytest.approx(24.5**2)  # centre (35.5, 35.5) to the nearest side at 60 or 10
    assert float(d2[0, 0, 0]) == pytest.approx(2 * 9.5**2)  # nearest point: the corner (10, 10)
    assert float(sign[0, 35, 35]) == 1.0 and float(sign[0, 0, 0]) == -1.0


def test_follows_dtype_and_handles_degenerate_edges() -> None:
    vertices = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [5.0, 1.0], [5.0, 5.0]]])
    mask = soft_polygon_mask(vertices, 6, 6)
    assert mask.dtype == torch.float32 and bool(torch.isfinite(mask).all())
    assert soft_polygon_mask(vertices.double(), 6, 6).dtype == torch.float64


def test_invalid_inputs() -> None:
    good = SQUARE[None]
    with pytest.raises(ValueError, match="3 dimensions"):
        soft_polygon_mask(SQUARE, 4, 4)
    with pytest.raises(ValueError, match=r"\[P, V, 2\]"):
        soft_polygon_mask(torch.zeros(1, 4, 3), 4, 4)
    with pytest.raises(ValueError, match="at least 3 vertices"):
        soft_polygon_mask(torch.zeros(1, 2, 2), 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        soft_polygon_mask(torch.full((1, 3, 2), math.nan), 4, 4)
    with pytest.raises(ValueError, match="floating"):
        soft_polygon_mask(torch.zeros(1, 3, 2, dtype=torch.long), 4, 4)
    with pytest.raises(ValueError, match="tau"):
        soft_polygon_mask(good, 4, 4, tau=0.0)
    with pytest.raises(ValueError, match="height and width"):
        polygon_inside(good, 0, 4)
    with pytest.raises(ValueError, match="chunk"):
        soft_polygon_mask(good, 4, 4, chunk=0)
