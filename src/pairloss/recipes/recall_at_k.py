"""RS@k with larger batches, SiMix and a pretrained start (Patel, Tolias, Matas, CVPR 2022), on the shared protocol.

The paper fine-tunes ImageNet/CLIP-pretrained ResNet-50 and ViT-B on SOP, Cars196 and iNaturalist with RS@k on
batches of up to 4000 images (its multi-stage step) and SiMix. None of that fits this CPU machine; this recipe
tests the same claims on an open-set glyph retrieval problem that does (:mod:`pairloss.data.glyphs`, extended
catalog: about 100 fonts of 16 families from the ``glyphs`` extra's font packs):

* **classes**: characters drawn by at least ``min_families`` font families; ``train_classes`` of them are fitted,
  ``validation_classes`` other training-side classes are held out for tuning and early stopping, and
  ``test_classes`` further classes are the test set (retrieval among them, each image against all others);
* **model**: :class:`pairloss.models.cnn.GlyphCNN` (three conv stages, 16×16 grey-level input) with a linear
  embedding head (``build_backbone("glyph_cnn", D)``);
* **pretrained start**: the same backbone trained here with cross-entropy (normalised softmax) on every other
  character of the catalog (a disjoint pool of about 1 700 classes), saved to a file and loaded with
  :func:`pairloss.models.backbones.load_weights` (through ``build_backbone(weights=...)``), as a foundation
  checkpoint would be; made once per configuration and cached;
* **training**: Adam, ``updates`` optimiser updates for every method (equal updates), class-balanced batches of
  ``m_per_class`` = 4 images per class (the paper's), validation MAP@R every ``validate_every`` updates, the best
  validated state kept, early stopping after ``patience`` validations without improvement;
* **larger batch**: ``large_batch_size`` images per update through
  :func:`pairloss.training.large_batch.large_batch_step` in chunks of ``chunk_size`` (= the small batch, so batch-norm
  statistics are over the same number of images in both arms and only the loss's batch grows), at the same number
  of updates, and, as a cost-matched check, at the same number of images (``updates × batch_size /
  large_batch_size`` updates);
* **tuning**: ``trials`` seeded Optuna trials per loss on the validation split (the spaces are in :data:`SPACES`);
  the factor variants (larger batch, SiMix, pretrained, all three) use RS@k's chosen values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pairloss.data.glyphs import font_family, glyph_fonts, glyph_pools, render_glyphs
from pairloss.losses.metric import ContrastiveLoss, MultiSimilarityLoss
from pairloss.losses.proxy import NormalizedSoftmaxLoss
from pairloss.losses.recall import RecallAtKSurrogateLoss
from pairloss.models.backbones import build_backbone
from pairloss.recipes.base import retrieval_scores
from pairloss.recipes.protocol import (
    Claim,
    Experiment,
    ExperimentResult,
    Method,
    PrepareContext,
    RunContext,
    RunResult,
    Splits,
    cache_key,
)
from pairloss.recipes.tuning import Float, Param
from pairloss.training.large_batch import large_batch_step
from pairloss.training.loop import ClassBalancedBatches, FitConfig, fit, optimizer_step
from pairloss.training.reporting import Reporter

__all__ = ["CLAIMS", "METHODS", "RECIPE", "SPACES"]

_EVAL_CHUNK = 256

#: The search space of each loss (learning rate and the loss's own knobs); every loss gets the same trials.
SPACES: dict[str, dict[str, Param]] = {
    "RS@k": {"lr": Float(1e-4, 3e-3, log=True), "tau2": Float(0.003, 0.1, log=True)},
    "contrastive": {"lr": Float(1e-4, 3e-3, log=True), "neg_margin": Float(0.2, 1.2)},
    "multi-similarity": {
        "lr": Float(1e-4, 3e-3, log=True),
        "alpha": Float(0.5, 10.0, log=True),
        "beta": Float(10.0, 80.0, log=True),
    },
    "cross-entropy": {
        "lr": Float(1e-4, 3e-3, log=True),
        "temperature": Float(0.01, 0.2, log=True),
        "proxy_lr_scale": Float(1.0, 100.0, log=True),
    },
}

_RSK = {"loss": "rsk", "batch": "small", "simix": False, "pretrained": False, "budget": "updates"}
METHODS = (
    Method("raw pixels", settings={"loss": "none"}, description="nearest neighbours on the 16×16 pixels"),
    Method("RS@k", space=SPACES["RS@k"], settings=_RSK, description="RS@k, small batch, random start"),
    Method(
        "contrastive",
        space=SPACES["contrastive"],
        settings={**_RSK, "loss": "contrastive"},
        description="contrastive loss (Hadsell et al.), small batch",
    ),
    Method(
        "multi-similarity",
        space=SPACES["multi-similarity"],
        settings={**_RSK, "loss": "multi_similarity"},
        description="multi-similarity loss (Wang et al.), small batch",
    ),
    Method(
        "cross-entropy",
        space=SPACES["cross-entropy"],
        settings={**_RSK, "loss": "cross_entropy"},
        description="normalised-softmax cross-entropy on learned proxies, small batch",
    ),
    Method(
        "RS@k large batch",
        settings={**_RSK, "batch": "large"},
        tuned_as="RS@k",
        description="RS@k, large batch (multi-stage step), same updates",
    ),
    Method(
        "RS@k large batch, equal images",
        settings={**_RSK, "batch": "large", "budget": "images"},
        tuned_as="RS@k",
        description="RS@k, large batch, as many images as the small batch sees (fewer updates)",
    ),
    Method("RS@k + SiMix", settings={**_RSK, "simix": True}, tuned_as="RS@k", description="RS@k with SiMix"),
    Method(
        "RS@k pretrained",
        settings={**_RSK, "pretrained": True},
        tuned_as="RS@k",
        description="RS@k from the pretrained backbone",
    ),
    Method(
        "RS@k + all three",
        settings={**_RSK, "batch": "large", "simix": True, "pretrained": True},
        tuned_as="RS@k",
        description="RS@k, large batch, SiMix, pretrained backbone",
    ),
)

_BOTH = ("recall@1", "map@r")
CLAIMS = (
    Claim("a larger batch helps RS@k (equal updates)", "RS@k large batch", "RS@k", _BOTH),
    Claim("a larger batch helps RS@k (equal images)", "RS@k large batch, equal images", "RS@k", _BOTH),
    Claim("SiMix helps RS@k", "RS@k + SiMix", "RS@k", _BOTH),
    Claim("a pretrained start helps RS@k", "RS@k pretrained", "RS@k", _BOTH),
    Claim("pretraining helps more than SiMix", "RS@k pretrained", "RS@k + SiMix", _BOTH),
    Claim("pretraining helps more than the larger batch", "RS@k pretrained", "RS@k large batch", _BOTH),
    Claim("all three together help RS@k", "RS@k + all three", "RS@k", _BOTH),
    Claim("all three beat pretraining alone", "RS@k + all three", "RS@k pretrained", _BOTH),
    Claim("RS@k beats contrastive", "RS@k", "contrastive", _BOTH),
    Claim("RS@k beats multi-similarity", "RS@k", "multi-similarity", _BOTH),
    Claim("RS@k beats cross-entropy", "RS@k", "cross-entropy", _BOTH),
)


@dataclass(frozen=True)
class _Images:
    x: Tensor
    y: Tensor


@dataclass(frozen=True)
class _Fit(_Images):
    pretrained: Path


_DATA_KEYS = (
    "train_classes",
    "validation_classes",
    "test_classes",
    "pretrain_classes",
    "min_families",
    "samples_per_class",
    "pretrain_samples_per_class",
    "image_size",
    "split_seed",
)
_PRETRAIN_KEYS = (*_DATA_KEYS, "embedding_size", "pretrain_updates", "pretrain_batch_size", "pretrain_lr")


def _render(config: dict[str, Any], cache: Path) -> dict[str, np.ndarray]:
    """Render (or load) the fit, validation, test and pretraining images."""
    path = cache / f"glyphs-{cache_key(config, _DATA_KEYS)}.npz"
    if path.exists():
        with np.load(path) as saved:
            return dict(saved)
    n_train_side = config["train_classes"] + config["validation_classes"]
    pools = glyph_pools(
        n_train_side,
        config["test_classes"],
        config["pretrain_classes"],
        config["split_seed"],
        catalog="extended",
        min_families=config["min_families"],
    )
    fit_classes, validation_classes = pools.train[: config["train_classes"]], pools.train[config["train_classes"] :]
    size, samples = config["image_size"], config["samples_per_class"]
    arrays: dict[str, np.ndarray] = {}
    for name, classes, per_class, seed in (
        ("fit", fit_classes, samples, 1),
        ("validation", validation_classes, samples, 2),
        ("test", pools.test, samples, 3),
        ("pretrain", pools.pretrain, config["pretrain_samples_per_class"], 4),
    ):
        x, y = render_glyphs(classes, per_class, size=size, seed=seed, catalog="extended")
        arrays[f"{name}_x"], arrays[f"{name}_y"] = x.numpy(), y.numpy()
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # (numpy types the first keyword as allow_pickle)
    return arrays


def _optimizer(model: nn.Module, loss: nn.Module, lr: float, config: dict[str, Any], scale: float = 1.0) -> Any:
    groups = [{"params": list(model.parameters()), "lr": lr}]
    if any(True for _ in loss.parameters()):
        groups.append({"params": list(loss.parameters()), "lr": lr * scale})
    return torch.optim.Adam(groups, weight_decay=config["weight_decay"])


def _pretrain(x: Tensor, y: Tensor, config: dict[str, Any], path: Path, reporter: Reporter) -> None:
    """Train the backbone with normalised-softmax cross-entropy on the pretraining classes; save its weights."""
    torch.manual_seed(0)
    model = build_backbone("glyph_cnn", config["embedding_size"])
    loss = NormalizedSoftmaxLoss(int(y.max()) + 1, config["embedding_size"])
    optimizer = _optimizer(model, loss, config["pretrain_lr"], config, scale=10.0)
    batches = ClassBalancedBatches(y, 2, config["pretrain_batch_size"], seed=0)

    def update(step: int) -> float:
        index = batches(step)
        return optimizer_step(optimizer, lambda: loss(model(x[index]), y[index]))

    settings = FitConfig(updates=config["pretrain_updates"], description="pretraining the backbone")
    fit(
        {"model": model, "loss": loss},
        optimizer,
        update,
        settings,
        checkpoint=path.with_suffix(".run.pt"),
        reporter=reporter,
    )
    torch.save(model.backbone.state_dict(), path)


def prepare(ctx: PrepareContext) -> Splits:
    """Render the glyph splits and make (or load) the pretrained backbone checkpoint."""
    config = dict(ctx.config)
    arrays = _render(config, ctx.cache_dir)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    pretrained = ctx.cache_dir / f"pretrained-backbone-{cache_key(config, _PRETRAIN_KEYS)}.pt"
    if not pretrained.exists():
        _pretrain(tensors["pretrain_x"], tensors["pretrain_y"], config, pretrained, ctx.reporter)
    fonts = glyph_fonts("extended")
    info = {
        "catalog": "extended",
        "fonts": len(fonts),
        "font_families": len({font_family(f) for f in fonts}),
        "classes": {s: int(np.unique(arrays[f"{s}_y"]).size) for s in ("fit", "validation", "test", "pretrain")},
        "images": {s: int(arrays[f"{s}_y"].size) for s in ("fit", "validation", "test", "pretrain")},
        "image_size": config["image_size"],
        "pretrained_checkpoint_sha256": hashlib.sha256(pretrained.read_bytes()).hexdigest()[:16],
    }
    return Splits(
        fit=_Fit(tensors["fit_x"], tensors["fit_y"], pretrained),
        validation=_Images(tensors["validation_x"], tensors["validation_y"]),
        test=_Images(tensors["test_x"], tensors["test_y"]),
        info=info,
    )


def _loss(settings: dict[str, Any], n_classes: int, config: dict[str, Any]) -> nn.Module:
    kind = settings["loss"]
    if kind == "rsk":
        return RecallAtKSurrogateLoss(k=tuple(config["k_train"]), tau2=settings["tau2"], use_simix=settings["simix"])
    if kind == "contrastive":
        return ContrastiveLoss(pos_margin=0.0, neg_margin=settings["neg_margin"])
    if kind == "multi_similarity":
        return MultiSimilarityLoss(alpha=settings["alpha"], beta=settings["beta"], base=0.5)
    if kind == "cross_entropy":
        return NormalizedSoftmaxLoss(n_classes, config["embedding_size"], temperature=settings["temperature"])
    raise ValueError(f"unknown loss {kind!r}")


def _scores(model: nn.Module | None, images: _Images) -> dict[str, float]:
    return retrieval_scores(model, images.x, images.y, batch_size=_EVAL_CHUNK)


def run(ctx: RunContext) -> RunResult:
    """Train one method on the fit classes (validation-selected), and score ``ctx.evaluation``."""
    settings, config = dict(ctx.settings), dict(ctx.config)
    if settings["loss"] == "none":
        return RunResult(_scores(None, ctx.evaluation))
    data: _Fit = ctx.data.fit
    weights = data.pretrained if settings["pretrained"] else None
    model = build_backbone("glyph_cnn", config["embedding_size"], weights=weights)
    n_classes = int(data.y.max()) + 1
    loss = _loss(settings, n_classes, config)
    optimizer = _optimizer(model, loss, settings["lr"], config, settings.get("proxy_lr_scale", 1.0))
    large = settings["batch"] == "large"
    batch_size = config["large_batch_size"] if large else config["batch_size"]
    batches = ClassBalancedBatches(data.y, config["m_per_class"], batch_size, seed=ctx.seed)
    updates = config["updates"]
    if settings["budget"] == "images":  # the small batch's images in fewer, larger updates
        updates = max(1, round(updates * config["batch_size"] / batch_size))

    def update(step: int) -> float:
        index = batches(step)
        if large:
            result = large_batch_step(
                model,
                optimizer,
                data.x[index],
                data.y[index],
                loss,
                chunk_size=config["chunk_size"],
                batch_norm="chunk",
            )
            return result.loss
        return optimizer_step(optimizer, lambda: loss(model(data.x[index]), data.y[index]))

    validate_every = max(1, min(config["validate_every"], updates // 3))
    outcome = fit(
        {"model": model, "loss": loss},
        optimizer,
        update,
        FitConfig(updates=updates, validate_every=validate_every, patience=config["patience"], description=ctx.label),
        validate=lambda: _scores(model, ctx.data.validation)["map@r"],
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    extra = {"updates": outcome.updates, "best_update": outcome.best_update, "validation": outcome.validation}
    return RunResult(_scores(model, ctx.evaluation), extra)


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Two stacked panels: test Recall@1 of every method (seeds as dots), and the verdicts on Recall@1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairloss.recipes.report import plot_verdicts

    methods = [m.name for m in METHODS if m.name in result.summary]
    claims = [v for v in result.verdicts if v["metric"] == "recall@1"]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(7.0, 3.0 + 0.3 * (len(methods) + len(claims))),
        gridspec_kw={"height_ratios": [len(methods), len(claims)]},
    )
    rows = range(len(methods))[::-1]
    bars = [result.mean_ci(m, "recall@1") for m in methods]
    top.barh(list(rows), [b[0] for b in bars], xerr=[b[1] for b in bars], color="tab:blue", alpha=0.6, capsize=3)
    for row, method in zip(rows, methods, strict=True):
        seeds = [runs[method]["metrics"]["recall@1"] for runs in result.per_seed.values() if method in runs]
        top.plot(seeds, [row] * len(seeds), "k.", markersize=4)
    top.set_yticks(list(rows), methods, fontsize=9)
    top.set_xlabel("test Recall@1: mean and 95% CI (bars), seeds (dots)", fontsize=9)
    top.set_title("Open-set glyph retrieval (unseen test classes)", fontsize=10)
    plot_verdicts(bottom, claims, metric="recall@1")
    bottom.tick_params(labelsize=9)
    bottom.xaxis.label.set_size(9)
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


RECIPE = Experiment(
    name="recall-at-k",
    title="RS@k with a larger batch, SiMix and a pretrained start (open-set glyphs, small CNN)",
    paper="Patel, Tolias, Matas. Recall@k Surrogate Loss with Large Batches and Similarity Mixup. CVPR 2022",
    claim="Larger batches help RS@k, SiMix helps, pretrained initialisation helps most, and together they are best.",
    config={
        "trials": 8,
        "threads": 1,
        "train_classes": 300,
        "validation_classes": 60,
        "test_classes": 300,
        "pretrain_classes": None,
        "min_families": 5,
        "samples_per_class": 12,
        "pretrain_samples_per_class": 8,
        "image_size": 16,
        "split_seed": 0,
        "embedding_size": 64,
        "m_per_class": 4,
        "batch_size": 128,
        "large_batch_size": 512,
        "chunk_size": 128,
        "updates": 300,
        "validate_every": 50,
        "patience": 3,
        "weight_decay": 1e-4,
        "k_train": [1, 2, 4, 8, 16],
        "pretrain_updates": 1200,
        "pretrain_batch_size": 256,
        "pretrain_lr": 1e-3,
    },
    quick={
        "trials": 2,
        "train_classes": 40,
        "validation_classes": 16,
        "test_classes": 40,
        "pretrain_classes": 200,
        "samples_per_class": 8,
        "pretrain_samples_per_class": 6,
        "batch_size": 64,
        "large_batch_size": 160,
        "chunk_size": 64,
        "updates": 60,
        "validate_every": 20,
        "pretrain_updates": 150,
        "pretrain_batch_size": 128,
    },
    methods=METHODS,
    claims=CLAIMS,
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective="map@r",
)
