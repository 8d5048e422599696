"""The ``boxsnake`` recipe: a tiny run writes its three files with finite metrics; the IoU helper is exact."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pairloss.losses.rasterize import polygon_inside
from pairloss.models.polygon import box_polygon
from pairloss.recipes import get_recipe, run_recipe
from pairloss.recipes.boxsnake import mask_iou
from pairloss.training.reporting import Reporter


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: a single intra-op thread avoids synchronisation overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_mask_iou_equals_full_image_iou() -> None:
    reference = torch.zeros(2, 30, 40, dtype=torch.bool)
    reference[0, 5:15, 10:22] = True
    reference[1, 20:28, 1:9] = True
    boxes = torch.tensor([[8.0, 4.0, 20.0, 18.0], [-3.0, 18.0, 7.5, 33.0]])  # the second leaves the image
    vertices = box_polygon(boxes, 8)
    inside = polygon_inside(vertices, 30, 40)
    expected = (inside & reference).sum(dim=(1, 2)) / (inside | reference).sum(dim=(1, 2))
    torch.testing.assert_close(mask_iou(vertices, reference), expected.double())


def test_quick_recipe_writes_results(tmp_path: Path) -> None:
    overrides = {
        "images": ["coins"],
        "vertices": 12,
        "crop": 12,
        "padding": 1,
        "fit_steps": 3,
        "head_steps": 2,
    }
    result = run_recipe(
        get_recipe("boxsnake"), out=tmp_path, seeds=1, quick=True, overrides=overrides, reporter=Reporter.silent()
    )
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    rows = saved["per_seed"]["0"]["metrics"]
    assert "fit: unary + local + global" in rows and "head (held-out): unary" in rows
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for row in rows.values() for v in row.values())
    assert "fit: mean IoU box" in saved["verdict"] and "head (held-out): mean IoU box" in saved["verdict"]


@pytest.mark.slow
def test_quick_recipe_terms_raise_iou(tmp_path: Path) -> None:
    result = run_recipe(get_recipe("boxsnake"), out=tmp_path, seeds=1, quick=True, reporter=Reporter.silent())
    summary = result.summary
    for setting, floor in (("fit", "box (all objects)"), ("head (held-out)", "box (held-out objects)")):
        full = summary[f"{setting}: unary + local + global"]["IoU mean"]["mean"]
        assert full > summary[floor]["IoU mean"]["mean"]
