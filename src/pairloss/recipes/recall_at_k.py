"""RS@k with large batches, SiMix and pretrained initialisation (Patel, Tolias, Matas, CVPR 2022), small.

The paper fine-tunes ImageNet/CLIP-pretrained ResNet-50 and ViT-B on SOP, Cars196 and iNaturalist with RS@k on
batches of up to 4000 images (its multi-stage step) and SiMix, and reports Recall@1 of 88.0 / 89.5 / 83.0
(ViT-B/16) and 82.7 / 88.3 / 71.8 (ResNet-50). None of that fits this CPU machine;
this recipe tests the same four claims on two open-set retrieval problems that do
(train classes and test classes disjoint):

* ``digits``: scikit-learn's 8×8 handwritten digits, train on 0–4 (the first ``digits_train_per_class`` images
  of each, 100 by default, so that a whole-training-set batch stays cheap) and retrieve among all images of 5–9;
* ``glyphs``: :mod:`pairloss.data.glyphs`, hundreds of characters rendered in 16 fonts with augmentation.

Every method trains the same MLP embedder (:class:`pairloss.models.mlp.MLPEmbedder`) with Adam for the same
number of epochs. Rows: RS@k vs contrastive vs multi-similarity vs cross-entropy (normalised softmax) at batch
256; RS@k at batch 64, 256 and the whole training set (through
:func:`pairloss.training.large_batch.large_batch_step`, chunks of ``chunk_size``,
per-chunk batch-norm statistics); RS@k with SiMix; RS@k from a "pretrained" initialisation;
and all three together. "Pretrained" means trained here, with cross-entropy, on glyph classes
that are neither training nor test classes (no digit characters), then loaded from a local file through
:func:`pairloss.models.backbones.load_weights`, as a foundation model's checkpoint would be. Test metrics:
Recall@1, 2, 4, 8 and MAP@R (:func:`pairloss.metrics.retrieval`), test set against itself.
"""

from __future__ import annotations

import math
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from pairloss.data.digits import open_set_digits
from pairloss.data.glyphs import glyph_pools, render_glyphs
from pairloss.data.samplers import MPerClassSampler
from pairloss.losses.metric import ContrastiveLoss, MultiSimilarityLoss
from pairloss.losses.proxy import NormalizedSoftmaxLoss
from pairloss.losses.recall import RecallAtKSurrogateLoss
from pairloss.metrics.retrieval import retrieval
from pairloss.models.backbones import load_weights
from pairloss.models.mlp import MLPEmbedder
from pairloss.recipes.base import Recipe, RecipeResult, SeedResult
from pairloss.training.large_batch import large_batch_step
from pairloss.training.reporting import Reporter
from pairloss.training.trainer import embed

__all__ = ["RECIPE", "RUNS"]

#: ``row name -> (loss, batch size or "full", SiMix, pretrained)``.
RUNS: dict[str, tuple[str, int | str, bool, bool]] = {
    "contrastive b=256": ("contrastive", 256, False, False),
    "multi-similarity b=256": ("multi_similarity", 256, False, False),
    "cross-entropy b=256": ("cross_entropy", 256, False, False),
    "RS@k b=64": ("rsk", 64, False, False),
    "RS@k b=256": ("rsk", 256, False, False),
    "RS@k b=full": ("rsk", "full", False, False),
    "RS@k + SiMix b=256": ("rsk", 256, True, False),
    "RS@k pretrained b=256": ("rsk", 256, False, True),
    "RS@k + SiMix + pretrained b=full": ("rsk", "full", True, True),
}

_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


@lru_cache(maxsize=4)
def _glyph_data(n_train: int, n_test: int, n_pretrain: int, samples: int, pretrain_samples: int) -> dict[str, Tensor]:
    """Glyph train/test sets at 16×16 and pretraining sets at 16×16 and 8×8 (pretraining pool without
    digits)."""
    pools = glyph_pools(n_train, n_test, split_seed=0)
    pretrain_chars = [c for c in pools.pretrain if not c.isdigit()][:n_pretrain]
    train_x, train_y = render_glyphs(pools.train, samples, size=16, seed=1)
    test_x, test_y = render_glyphs(pools.test, samples, size=16, seed=2)
    pre16_x, pre_y = render_glyphs(pretrain_chars, pretrain_samples, size=16, seed=3)
    pre8_x, _ = render_glyphs(pretrain_chars, pretrain_samples, size=8, seed=3)
    return {
        "train_x": train_x.flatten(1),
        "train_y": train_y,
        "test_x": test_x.flatten(1),
        "test_y": test_y,
        "pre16_x": pre16_x.flatten(1),
        "pre8_x": pre8_x.flatten(1),
        "pre_y": pre_y,
    }


def _first_per_class(labels: Tensor, per_class: int) -> Tensor:
    """Indices of the first ``per_class`` samples of every class."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)])


def _datasets(config: dict[str, Any]) -> dict[str, dict[str, Tensor]]:
    glyphs = _glyph_data(
        config["glyph_train_classes"],
        config["glyph_test_classes"],
        config["glyph_pretrain_classes"],
        config["glyph_samples_per_class"],
        config["pretrain_samples_per_class"],
    )
    digits = open_set_digits()
    keep = _first_per_class(digits.train_y, config["digits_train_per_class"])
    # Digits pixels are 0..1 on a black background like the glyphs; the 8×8 glyphs pretrain the digits model.
    data = {
        "digits": {
            "train_x": digits.train_x[keep],
            "train_y": digits.train_y[keep],
            "test_x": digits.test_x,
            "test_y": digits.test_y,
            "pre_x": glyphs["pre8_x"],
            "pre_y": glyphs["pre_y"],
        },
        "glyphs": {
            "train_x": glyphs["train_x"],
            "train_y": glyphs["train_y"],
            "test_x": glyphs["test_x"],
            "test_y": glyphs["test_y"],
            "pre_x": glyphs["pre16_x"],
            "pre_y": glyphs["pre_y"],
        },
    }
    return {name: data[name] for name in config["datasets"]}


def _model(in_features: int, config: dict[str, Any]) -> nn.Module:
    return MLPEmbedder(in_features, config["embedding_size"], tuple(config["hidden"]))


def _loss(kind: str, n_classes: int, simix_cap: int | None, config: dict[str, Any]) -> nn.Module:
    if kind == "rsk":
        return RecallAtKSurrogateLoss(
            k=tuple(config["k_train"]), use_simix=simix_cap is not None, simix_max_pairs_per_class=simix_cap
        )
    if kind == "contrastive":
        return ContrastiveLoss()
    if kind == "multi_similarity":
        return MultiSimilarityLoss()
    if kind == "cross_entropy":
        return NormalizedSoftmaxLoss(n_classes, config["embedding_size"])
    raise ValueError(f"unknown loss {kind!r}")


def _per_class(batch: int, n_classes: int) -> int:
    """Samples per class in a batch: 4 as in the paper, more when there are too few classes to fill the
    batch."""
    return max(4, batch // n_classes)


def _train(
    model: nn.Module,
    kind: str,
    batch: int | str,
    simix: bool,
    x: Tensor,
    y: Tensor,
    epochs: int,
    config: dict[str, Any],
    seed: int,
    reporter: Reporter,
    description: str,
) -> None:
    classes, y = torch.unique(y, return_inverse=True)
    n, n_classes = y.numel(), classes.numel()
    full = batch == "full"
    m = math.ceil(n / n_classes) if full else _per_class(int(batch), n_classes)
    simix_cap = min(math.ceil(config["simix_ratio"] * m), config["simix_max_pairs_per_class"]) if simix else None
    loss = _loss(kind, n_classes, simix_cap, config)
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=config["lr"], weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    if full:
        for _ in reporter.track(range(epochs), description):
            order = torch.randperm(n, generator=generator)
            large_batch_step(
                model,
                optimizer,
                x[order],
                y[order],
                loss,
                chunk_size=config["chunk_size"],
                batch_norm="chunk",
            )
        return
    size = m * min(int(batch) // m, n_classes)
    sampler = MPerClassSampler(y, m, size, seed=seed)
    for _ in reporter.track(range(epochs), description):
        for indices in sampler:
            value = loss(model(x[indices]), y[indices])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()


def _pretrained_file(
    data: dict[str, Tensor], config: dict[str, Any], seed: int, reporter: Reporter, folder: Path
) -> Path:
    """Pretrain the embedder with cross-entropy on the pretraining glyph classes; save its weights to a
    file."""
    torch.manual_seed(seed + 1000)
    model = _model(data["pre_x"].shape[1], config)
    _train(
        model,
        "cross_entropy",
        256,
        False,
        data["pre_x"],
        data["pre_y"],
        config["pretrain_epochs"],
        config,
        seed,
        reporter,
        "pretraining",
    )
    path = folder / f"pretrained_{data['pre_x'].shape[1]}.pt"
    torch.save(model.state_dict(), path)
    return path


def _evaluate(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    scores = retrieval(embed(model, x), y, k=(1, 2, 4, 8))
    return {name: scores[name] for name in _METRICS}


def run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    """Train every row on every data set; small models run fastest on one thread of a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config["threads"])
    try:
        return _run_seed(config, seed, reporter)
    finally:
        torch.set_num_threads(threads)


def _run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    metrics: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for dataset, data in _datasets(config).items():
            pretrained = _pretrained_file(data, config, seed, reporter, Path(folder))
            for row, (kind, batch, simix, use_pretrained) in RUNS.items():
                if row not in config["rows"]:
                    continue
                torch.manual_seed(seed)
                model = _model(data["train_x"].shape[1], config)
                if use_pretrained:
                    load_weights(model, pretrained)
                _train(
                    model,
                    kind,
                    batch,
                    simix,
                    data["train_x"],
                    data["train_y"],
                    config["epochs"],
                    config,
                    seed,
                    reporter,
                    f"{dataset}: {row}",
                )
                metrics[f"{dataset} · {row}"] = _evaluate(model, data["test_x"], data["test_y"])
    return SeedResult(metrics)


def _mean_std(result: RecipeResult, row: str, metric: str = "recall@1") -> tuple[float, float]:
    entry = result.summary.get(row, {}).get(metric)
    return (entry["mean"], entry["std"]) if entry else (float("nan"), float("nan"))


def make_figure(result: RecipeResult, path: Path) -> None:
    datasets = result.config["datasets"]
    fig, axes = plt.subplots(1, len(datasets) + 1, figsize=(5 * len(datasets) + 7, 4.2))
    batch_rows = [("64", "RS@k b=64"), ("256", "RS@k b=256"), ("full", "RS@k b=full")]
    for ax, dataset in zip(axes, datasets, strict=False):
        for suffix, style in (("", "o-"), (" + SiMix", "s--")):
            points = [
                (label, *_mean_std(result, f"{dataset} · {row.replace('RS@k', 'RS@k' + suffix)}"))
                for label, row in batch_rows
            ]
            points = [p for p in points if math.isfinite(p[1])]
            if points:
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    yerr=[p[2] for p in points],
                    fmt=style,
                    capsize=3,
                    label="RS@k" + suffix,
                )
        ax.set_xlabel("batch size (full = whole training set, multi-stage step)")
        ax.set_ylabel("test Recall@1")
        ax.set_title(f"{dataset}: RS@k Recall@1 vs batch size")
        ax.legend()
    rows = [r for r in RUNS if r in result.config["rows"]]
    width = 0.8 / max(1, len(datasets))
    ablation = axes[-1]
    for i, dataset in enumerate(datasets):
        values = [_mean_std(result, f"{dataset} · {row}") for row in rows]
        ablation.barh(
            np.arange(len(rows)) + i * width,
            [v[0] for v in values],
            xerr=[v[1] for v in values],
            height=width,
            label=dataset,
        )
    ablation.set_yticks(np.arange(len(rows)) + width * (len(datasets) - 1) / 2, rows, fontsize=8)
    ablation.set_xlabel("test Recall@1")
    ablation.set_title("Losses and ablation")
    ablation.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _held(gain: float, spread: float, condition: bool | None = None) -> str:
    """``held``/``did not hold`` with the gain, flagged when it is within the seed-to-seed spread."""
    held = gain > 0 if condition is None else condition
    noise = f", within the seed spread ±{spread:.3f}" if math.isfinite(spread) and abs(gain) <= spread else ""
    return f"{'held' if held else 'did not hold'} ({gain:+.3f}{noise})"


def verdict(result: RecipeResult) -> str:
    combined = "RS@k + SiMix + pretrained b=full"
    parts = []
    for dataset in result.config["datasets"]:

        def stat(row: str, dataset: str = dataset) -> tuple[float, float]:
            return _mean_std(result, f"{dataset} · {row}")

        base, base_std = stat("RS@k b=256")
        smaller, smaller_std = max(stat("RS@k b=64"), (base, base_std))
        full, full_std = stat("RS@k b=full")
        simix, simix_std = stat("RS@k + SiMix b=256")
        pretrained, pretrained_std = stat("RS@k pretrained b=256")
        batch_gain, simix_gain, pretrained_gain = full - smaller, simix - base, pretrained - base
        rows = [f"{dataset} · {row}" for row in RUNS]
        best = max((row for row in rows if row in result.summary), key=lambda row: _mean_std(result, row)[0])
        claims = [
            f"larger batches help RS@k (full vs best smaller batch): {_held(batch_gain, max(full_std, smaller_std))}",
            f"SiMix helps: {_held(simix_gain, max(simix_std, base_std))}",
            "pretraining helps most: "
            + _held(pretrained_gain, max(pretrained_std, base_std), pretrained_gain > max(simix_gain, batch_gain, 0)),
            "all three together are the best row: "
            + ("held" if best.endswith(combined) else f"did not hold (best: {best})"),
        ]
        parts.append(f"{dataset}: " + "; ".join(claims) + ".")
    return "Recall@1 on the test classes, mean ± std over seeds. " + " ".join(parts)


RECIPE = Recipe(
    name="recall-at-k",
    title="RS@k with large batches, SiMix and pretrained initialisation (open-set digits and glyphs)",
    paper="Patel, Tolias, Matas. Recall@k Surrogate Loss with Large Batches and Similarity Mixup. CVPR 2022",
    claim="Larger batches help RS@k, SiMix helps, pretrained initialisation helps most, and together they are best.",
    config={
        "datasets": ["digits", "glyphs"],
        "digits_train_per_class": 100,
        "threads": 1,
        "rows": list(RUNS),
        "glyph_train_classes": 80,
        "glyph_test_classes": 80,
        "glyph_pretrain_classes": 80,
        "glyph_samples_per_class": 12,
        "pretrain_samples_per_class": 12,
        "embedding_size": 32,
        "hidden": [128, 128],
        "k_train": [1, 2, 4, 8, 16],
        "simix_ratio": 1.5,
        "simix_max_pairs_per_class": 24,
        "lr": 1e-3,
        "epochs": 15,
        "pretrain_epochs": 10,
        "chunk_size": 256,
    },
    quick={
        "glyph_train_classes": 50,
        "glyph_test_classes": 50,
        "glyph_pretrain_classes": 50,
        "glyph_samples_per_class": 8,
        "pretrain_samples_per_class": 8,
        "epochs": 5,
        "pretrain_epochs": 5,
    },
    run_seed=run_seed,
    make_figure=make_figure,
    verdict=verdict,
)
