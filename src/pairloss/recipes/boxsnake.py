"""Recipe ``boxsnake``: a polygon head learned from boxes alone, and the ablation of BoxSnake's loss terms.

BoxSnake (Yang, Song, Ge, Li, ICCV 2023) trains a polygon head from box annotations with a point-based unary loss
(1 − CIoU of the polygon's box), a local distance-aware pairwise loss and a global level-set loss; its ablation
reports that each added term raises mask AP. Here the head (:class:`pairloss.models.polygon.PolygonHead`, from
the paper's initial ellipse) is trained on the objects of many images that see **only their boxes**, and scored on
the objects of held-out images against **exact reference masks**: the images are composites of random shapes on
scikit-image's photographs (:func:`pairloss.data.composites.composite_instances`), so every mask is known by
construction, not thresholded.

Rows: the box itself (the floor), then the head trained with the unary term, + the local pairwise term, + the global
level-set term (the paper's weights 1.0 / 0.5 / 0.03, the local term warmed up linearly). Every trained row makes
the same number of updates with the same learning rate and batches; no row is tuned (the weights are the paper's,
and a box-supervised model has no mask to tune on). The validation split selects each run's checkpoint by its own
box-supervised loss. Metrics on the test objects: mean mask IoU and the share of objects with IoU ≥ 0.75.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairloss.data.composites import composite_instances
from pairloss.data.instances import InstanceImage
from pairloss.losses.polygon import BoxCrops, box_crops, boxsnake_loss
from pairloss.losses.rasterize import polygon_inside
from pairloss.models.polygon import PolygonHead, box_polygon
from pairloss.recipes._figures import DPI, FONT, WIDTH, stacked, verdict_panel
from pairloss.recipes.protocol import (
    Claim,
    Experiment,
    ExperimentResult,
    Method,
    PrepareContext,
    RunContext,
    RunResult,
    Splits,
)
from pairloss.training.loop import FitConfig, fit, optimizer_step

__all__ = ["RECIPE", "ObjectSet", "mask_iou"]

#: Loss weights (unary, local pairwise, global level set) of the trained rows: the paper's, one term added per row.
TERMS = {"unary": (1.0, 0.0, 0.0), "+ local pairwise": (1.0, 0.5, 0.0), "+ global level set": (1.0, 0.5, 0.03)}
#: The colour of each trained row in the figure.
COLOURS = {"unary": "tab:orange", "+ local pairwise": "tab:blue", "+ global level set": "tab:green"}
METRICS = ("mask IoU", "IoU >= 0.75")
#: Test images whose polygons (seed 0) the figure draws.
FIGURE_IMAGES = 6


def mask_iou(vertices: Tensor, reference: Tensor) -> Tensor:
    """IoU ``[N]`` of the polygons' pixel masks (non-zero winding at pixel centres) with reference masks.

    Each polygon is rasterised only over the image region that holds it and its reference mask.
    """
    vertices = vertices.detach()
    height, width = reference.shape[1:]
    ious = []
    for poly, ref in zip(vertices, reference):
        rows, cols = ref.any(dim=1).nonzero(), ref.any(dim=0).nonzero()
        low = torch.stack([poly[:, 0].min().floor(), poly[:, 1].min().floor()]).long()
        high = torch.stack([poly[:, 0].max().ceil(), poly[:, 1].max().ceil()]).long()
        if rows.numel():
            low = torch.minimum(low, torch.stack([cols.min(), rows.min()]))
            high = torch.maximum(high, torch.stack([cols.max() + 1, rows.max() + 1]))
        x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
        x1, y1 = min(int(high[0]), width), min(int(high[1]), height)
        inside = polygon_inside((poly - poly.new_tensor([x0, y0]))[None], max(y1 - y0, 1), max(x1 - x0, 1))[0]
        ref_crop = ref[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]]
        inside = inside[: ref_crop.shape[0], : ref_crop.shape[1]]
        union = int((inside | ref_crop).sum()) + int(ref.sum()) - int(ref_crop.sum())
        ious.append(int((inside & ref_crop).sum()) / max(union, 1))
    return torch.tensor(ious, dtype=torch.float64)


class ObjectSet:
    """The objects of a list of images: their boxes, their box crops (all images stacked) and their images."""

    def __init__(self, images: list[InstanceImage], config: dict[str, Any]) -> None:
        if not images:
            raise ValueError("an object set needs at least one image")
        self.images = images
        self.boxes = torch.cat([inst.boxes for inst in images])
        self.crops = BoxCrops.cat(
            [
                box_crops(
                    inst.image,
                    inst.boxes,
                    size=config["crop"],
                    padding=config["padding"],
                    sigma=config["sigma"],
                    dilation=config["dilation"],
                )
                for inst in images
            ]
        )
        self.image_of = torch.cat([torch.full((len(inst),), i) for i, inst in enumerate(images)])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @torch.no_grad()
    def predict(self, head: PolygonHead, chunk: int = 256) -> Tensor:
        """The head's polygons ``[N, V, 2]`` for every object."""
        parts = [
            head(self.crops.normalized[i : i + chunk], self.boxes[i : i + chunk]) for i in range(0, len(self), chunk)
        ]
        return torch.cat(parts)

    def ious(self, vertices: Tensor) -> Tensor:
        """The mask IoU ``[N]`` of polygons (one per object, in order) with the reference masks."""
        out = torch.empty(len(self), dtype=torch.float64)
        for i, inst in enumerate(self.images):
            rows = self.image_of == i
            out[rows] = mask_iou(vertices[rows], inst.masks)
        return out


def _scores(ious: Tensor) -> dict[str, float]:
    return {"mask IoU": float(ious.mean()), "IoU >= 0.75": float((ious >= 0.75).double().mean())}


def _images(config: dict[str, Any], count: int, seed: int, name: str, cache_dir: Path) -> list[InstanceImage]:
    """Composite images, cached in ``cache_dir`` (their generation takes a while)."""
    spec = {
        "count": count,
        "seed": seed,
        "size": config["image_size"],
        "max_objects": config["max_objects"],
        "radius": list(config["radius"]),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"composites-{name}-{key}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return [InstanceImage(f"{name}-{i}", *item) for i, item in enumerate(saved)]
    images = composite_instances(
        count,
        size=config["image_size"],
        max_objects=config["max_objects"],
        radius=tuple(config["radius"]),
        seed=seed,
        name=name,
    )
    torch.save([(inst.image, inst.boxes, inst.masks) for inst in images], path)
    return images


def prepare(ctx: PrepareContext) -> Splits:
    """Three disjoint sets of composite images (different seeds): fit, validation and test."""
    config = dict(ctx.config)
    sets = {}
    for offset, split in enumerate(("fit", "validation", "test")):
        images = _images(config, config[f"{split}_images"], 100 + offset, split, ctx.cache_dir)
        sets[split] = ObjectSet(images, config)
    info = {split: {"images": len(objects.images), "objects": len(objects)} for split, objects in sets.items()} | {
        "generator": "pairloss.data.composites.composite_instances",
        "image_size": config["image_size"],
    }
    return Splits(sets["fit"], sets["validation"], sets["test"], info=info)


def _batch(step: int, seed: int, count: int, size: int) -> Tensor:
    """The objects of one update: a function of the step and the seed (a resumed run draws the same)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(count, (min(size, count),), generator=generator)


def run(ctx: RunContext) -> RunResult:
    config = ctx.config
    evaluation: ObjectSet = ctx.evaluation
    terms = ctx.settings["terms"]
    if terms is None:  # the box itself
        vertices = box_polygon(evaluation.boxes, 4)
        return RunResult(_scores(evaluation.ious(vertices)))
    weights = TERMS[terms]
    head = PolygonHead(num_vertices=config["vertices"], width=config["width"])
    optimizer = torch.optim.Adam(head.parameters(), lr=config["lr"])
    train: ObjectSet = ctx.data.fit
    validation: ObjectSet = ctx.data.validation
    updates = int(config["updates"])
    warmup_steps = config["warmup_fraction"] * updates

    def loss_of(objects: ObjectSet, index: Tensor, warmup: float) -> Tensor:
        boxes, crops = objects.boxes[index], objects.crops.select(index)
        return boxsnake_loss(
            head(crops.normalized, boxes), boxes, crops, weights=weights, warmup=warmup, tau=config["tau"]
        )

    def update(step: int) -> float:
        index = _batch(step, ctx.seed, len(train), config["batch_size"])
        warmup = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
        return optimizer_step(optimizer, lambda: loss_of(train, index, warmup))

    def validate() -> float:
        chunks = torch.arange(len(validation)).split(config["batch_size"])
        total = sum(float(loss_of(validation, index, 1.0)) * len(index) for index in chunks)
        return -total / len(validation)

    result = fit(
        head,
        optimizer,
        update,
        FitConfig(
            updates=updates,
            validate_every=config["validate_every"],
            patience=config["patience"],
            description=ctx.label,
        ),
        validate=validate,
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    head.eval()
    vertices = evaluation.predict(head)
    extra: dict[str, Any] = {"best_update": result.best_update, "losses": result.losses[:: max(1, updates // 50)]}
    if ctx.phase == "final" and ctx.seed == 0:
        shown = evaluation.image_of < FIGURE_IMAGES
        extra["polygons"] = [[[round(x, 2) for x in p] for p in poly] for poly in vertices[shown].tolist()]
    return RunResult(_scores(evaluation.ious(vertices)), extra)


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Test images with the three trained rows' polygons (seed 0) over the reference masks, the verdicts below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = result.config
    images = composite_instances(
        min(FIGURE_IMAGES, config["test_images"]),
        size=config["image_size"],
        max_objects=config["max_objects"],
        radius=tuple(config["radius"]),
        seed=102,
        name="test",
    )
    runs = result.per_seed.get(0, {})
    columns = 3
    rows = -(-len(images) // columns)
    fig = plt.figure(figsize=(WIDTH, 2.4 * rows + 3.6), layout="constrained")
    top, bottom = stacked(fig, 2.4 * rows + 0.5, 3.1)
    axes = top.subplots(rows, columns, squeeze=False)
    offsets = np.cumsum([0] + [len(inst) for inst in images])
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        inst = images[i]
        ax.imshow(inst.image.permute(1, 2, 0).numpy(), interpolation="nearest")
        for mask in inst.masks:
            ax.contour(mask.numpy(), levels=[0.5], colors="white", linewidths=1.6)
        for label, colour in COLOURS.items():
            polygons = runs.get(label, {}).get("extra", {}).get("polygons")
            for poly in (polygons or [])[offsets[i] : offsets[i + 1]]:
                xy = np.asarray(poly + poly[:1])
                ax.plot(xy[:, 0], xy[:, 1], color=colour, linewidth=1.1)
    handles = [plt.Line2D([], [], color="0.6", linewidth=1.6, label="reference mask (white)")]
    handles += [plt.Line2D([], [], color=c, linewidth=1.6, label=label) for label, c in COLOURS.items()]
    top.legend(handles=handles, loc="outside upper center", ncol=2, fontsize=FONT, frameon=False)
    verdict_panel(bottom, result.verdicts)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


CONFIG: dict[str, Any] = {
    "trials": 1,
    "threads": 1,
    "image_size": 128,
    "max_objects": 3,
    "radius": [12.0, 34.0],
    "fit_images": 300,
    "validation_images": 60,
    "test_images": 150,
    "vertices": 32,
    "width": 32,
    "crop": 32,
    "padding": 2,
    "tau": 0.1,
    "sigma": 2.0,
    "dilation": 2,
    "lr": 1e-3,
    "batch_size": 32,
    "updates": 3000,
    "warmup_fraction": 1 / 9,
    "validate_every": 100,
    "patience": None,
}
QUICK: dict[str, Any] = {
    "fit_images": 30,
    "validation_images": 8,
    "test_images": 12,
    "vertices": 16,
    "crop": 16,
    "padding": 1,
    "updates": 40,
    "validate_every": 20,
}

RECIPE = Experiment(
    name="boxsnake",
    title="BoxSnake: a polygon head learned from boxes on composite images with exact masks, one loss term at a time",
    paper="Yang, Song, Ge, Li. BoxSnake: Polygonal Instance Segmentation with Box Supervision. ICCV 2023",
    claim="Trained from boxes alone, the local pairwise term and then the global level-set term each raise the mask "
    "quality of the predicted polygons (the paper's ablation of its loss terms).",
    config=CONFIG,
    quick=QUICK,
    methods=(
        Method("box", settings={"terms": None}, description="the box itself as the mask (the floor)"),
        Method("unary", settings={"terms": "unary"}, description="head trained with 1 − CIoU of the polygon's box"),
        Method(
            "+ local pairwise",
            settings={"terms": "+ local pairwise"},
            description="unary + 0.5 × local distance-aware pairwise term (warmed up)",
        ),
        Method(
            "+ global level set",
            settings={"terms": "+ global level set"},
            description="unary + local + 0.03 × global level-set (Chan–Vese) term: the full BoxSnake loss",
        ),
    ),
    claims=(
        Claim("unary beats the box", "unary", "box", METRICS),
        Claim("+ local beats unary", "+ local pairwise", "unary", METRICS),
        Claim("+ global beats + local", "+ global level set", "+ local pairwise", METRICS),
    ),
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective="mask IoU",
)
