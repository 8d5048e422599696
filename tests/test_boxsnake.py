"""The ``boxsnake`` recipe: the IoU helper is exact, the object sets line up, a tiny run writes the protocol's files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pairloss.data.composites import composite_instances
from pairloss.losses.rasterize import polygon_inside
from pairloss.models.polygon import PolygonHead, box_polygon
from pairloss.recipes import run_experiment
from pairloss.recipes.boxsnake import RECIPE, ObjectSet, mask_iou


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


def test_object_set_scores_each_object_against_its_own_image() -> None:
    images = composite_instances(3, size=48, radius=(5.0, 9.0), seed=4)
    config = {**RECIPE.config, "crop": 8, "padding": 1}
    objects = ObjectSet(images, config)
    assert len(objects) == sum(len(inst) for inst in images) == len(objects.crops)
    head = PolygonHead(num_vertices=12, width=8)
    vertices = objects.predict(head)
    assert vertices.shape == (len(objects), 12, 2)
    expected = torch.cat([mask_iou(box_polygon(inst.boxes, 4), inst.masks) for inst in images])
    torch.testing.assert_close(objects.ious(box_polygon(objects.boxes, 4)), expected)


TINY = {
    "fit_images": 6,
    "validation_images": 3,
    "test_images": 4,
    "image_size": 48,
    "radius": [5.0, 9.0],
    "vertices": 8,
    "width": 8,
    "crop": 8,
    "padding": 1,
    "updates": 4,
    "validate_every": 2,
}


def test_quick_recipe_writes_results(tmp_path: Path) -> None:
    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert list(saved["summary"]) == ["box", "unary", "+ local pairwise", "+ global level set"]
    for row in saved["summary"].values():
        assert set(row) == {"mask IoU", "IoU >= 0.75"}
        assert all(0.0 <= stats["mean"] <= 1.0 for stats in row.values())
    assert [(v["treatment"], v["control"]) for v in saved["verdicts"][::2]] == [
        ("unary", "box"),
        ("+ local pairwise", "unary"),
        ("+ global level set", "+ local pairwise"),
    ]
    assert saved["tuning"] == {}  # no row is tuned: the paper's weights, a shared learning rate
    assert "polygons" in saved["per_seed"]["0"]["+ global level set"]["extra"]
    assert saved["data"]["test"]["images"] == 4


@pytest.mark.slow
def test_quick_configuration_terms_beat_the_box(tmp_path: Path) -> None:
    result = run_experiment(RECIPE, out=tmp_path, quick=True)
    summary = result.summary
    assert summary["+ global level set"]["mask IoU"]["mean"] > summary["box"]["mask IoU"]["mean"]
