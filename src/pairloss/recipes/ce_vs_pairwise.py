"""Cross-entropy vs pairwise losses for metric learning (Boudiaf et al., ECCV 2020), small.

The paper trains ResNet-50 on CUB, Cars196, SOP and In-Shop with a plain cross-entropy (label smoothing, no
mining, no pair weighting) and finds it on par with or better than the best pairwise losses. Those data sets and
backbones do not fit this CPU machine; this recipe tests the same claim on open-set retrieval problems that do:

* ``digits``: scikit-learn's 8×8 handwritten digits, train on 0–4, retrieve among all images of 5–9
  (:func:`pairloss.data.open_set_digits`);
* ``glyphs``: the harder glyph set of :mod:`pairloss.data.glyphs` (60 training and 60 disjoint test
  characters, 10 renderings each, 16×16; left out of ``--quick``).

Every row trains the same :class:`pairloss.models.MLPEmbedder` with Adam, the same class-balanced batches and the
same number of epochs; only the loss changes: cross-entropy on a linear classifier (label smoothing 0.1; plain,
and on L2-normalised features with temperature 0.05), the pairwise cross-entropy (PCE) it bounds, contrastive,
triplet (all triplets, no mining), multi-similarity and the Recall@k surrogate. Test metrics: Recall@1/2/4/8
and MAP@R of the test classes against themselves. Along the plain cross-entropy run the recipe also evaluates,
at every step, the proved bound ``CE ≥ PCE − gap``
(:func:`pairloss.losses.crossentropy.pce_bound`, λ = λ₀) on the batch: the figure's right panel.
"""

from __future__ import annotations

import math
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
from pairloss.data.glyphs import open_set_glyphs
from pairloss.data.samplers import MPerClassBatchSampler
from pairloss.losses.crossentropy import CrossEntropyLoss, PairwiseCrossEntropyLoss
from pairloss.losses.metric import ContrastiveLoss, MultiSimilarityLoss, TripletMarginLoss
from pairloss.losses.recall import RecallAtKSurrogateLoss
from pairloss.metrics.retrieval import retrieval
from pairloss.models.mlp import MLPEmbedder
from pairloss.recipes.base import Recipe, RecipeResult, SeedResult
from pairloss.training.reporting import Reporter
from pairloss.training.trainer import embed

__all__ = ["LOSSES", "RECIPE"]

#: Row names, in table order; the first two are the cross-entropy (plain; L2-normalised features, τ = 0.05).
LOSSES = (
    "cross-entropy",
    "cross-entropy (normalised)",
    "pairwise cross-entropy",
    "contrastive",
    "triplet",
    "multi-similarity",
    "Recall@k surrogate",
)
_CROSS_ENTROPY = ("cross-entropy", "cross-entropy (normalised)")
_PAIRWISE = ("contrastive", "triplet", "multi-similarity", "Recall@k surrogate")
_METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


@lru_cache(maxsize=2)
def _glyphs(n_train: int, n_test: int, samples: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    split = open_set_glyphs(n_train, n_test, samples, size=16)
    return split.train_x, split.train_y, split.test_x, split.test_y


def _dataset(name: str, config: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if name == "digits":
        split = open_set_digits()
        return split.train_x, split.train_y, split.test_x, split.test_y
    if name == "glyphs":
        return _glyphs(config["glyph_train_classes"], config["glyph_test_classes"], config["glyph_samples"])
    raise ValueError(f"unknown dataset {name!r}; known: digits, glyphs")


def _loss(name: str, n_classes: int, config: dict[str, Any]) -> nn.Module:
    size = config["embedding_size"]
    if name == "cross-entropy":
        return CrossEntropyLoss(n_classes, size, label_smoothing=config["label_smoothing"])
    if name == "cross-entropy (normalised)":
        return CrossEntropyLoss(
            n_classes,
            size,
            normalize=True,
            temperature=config["normalised_temperature"],
            label_smoothing=config["label_smoothing"],
        )
    if name == "pairwise cross-entropy":
        return PairwiseCrossEntropyLoss(n_classes, size)
    if name == "contrastive":
        return ContrastiveLoss()
    if name == "triplet":
        return TripletMarginLoss()
    if name == "multi-similarity":
        return MultiSimilarityLoss()
    if name == "Recall@k surrogate":
        return RecallAtKSurrogateLoss()
    raise ValueError(f"unknown loss {name!r}")


def _train(
    name: str,
    x: Tensor,
    y: Tensor,
    config: dict[str, Any],
    seed: int,
    reporter: Reporter,
    description: str,
) -> tuple[nn.Module, list[list[float]]]:
    """Train one row; for the plain cross-entropy also return ``[CE, PCE, PCE − gap]`` at every step."""
    classes, y = torch.unique(y, return_inverse=True)
    n_classes = classes.numel()
    torch.manual_seed(seed)
    model = MLPEmbedder(x.shape[1], config["embedding_size"], tuple(config["hidden"]))
    loss = _loss(name, n_classes, config)
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=config["lr"], weight_decay=1e-4)
    m = max(4, config["batch_size"] // n_classes)
    sampler = MPerClassBatchSampler(y, m, m * min(config["batch_size"] // m, n_classes), seed=seed)
    trace: list[list[float]] = []
    model.train()
    for _ in reporter.track(range(config["epochs"]), description):
        for indices in sampler:
            embeddings = model(x[indices])
            value = loss(embeddings, y[indices])
            if name == "cross-entropy" and isinstance(loss, CrossEntropyLoss):
                with torch.no_grad():
                    bound = loss.bound(embeddings, y[indices])
                trace.append([float(bound.cross_entropy), float(bound.pce), float(bound.lower_bound)])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    return model, trace


def run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    """Train every loss on every data set (one thread: small models run fastest that way on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config["threads"])
    try:
        metrics: dict[str, dict[str, float]] = {}
        traces: dict[str, list[list[float]]] = {}
        for dataset in config["datasets"]:
            train_x, train_y, test_x, test_y = _dataset(dataset, config)
            for name in config["losses"]:
                model, trace = _train(name, train_x, train_y, config, seed, reporter, f"{dataset}: {name}")
                scores = retrieval(embed(model, test_x), test_y, k=(1, 2, 4, 8))
                metrics[f"{dataset} · {name}"] = {metric: float(scores[metric]) for metric in _METRICS}
                if trace:
                    traces[dataset] = trace
        return SeedResult(metrics, {"bound_trace": traces})
    finally:
        torch.set_num_threads(threads)


def _mean_std(result: RecipeResult, row: str, metric: str = "recall@1") -> tuple[float, float]:
    entry = result.summary.get(row, {}).get(metric)
    return (entry["mean"], entry["std"]) if entry else (float("nan"), float("nan"))


def _steps(result: RecipeResult) -> list[list[float]]:
    return [
        step
        for seed_result in result.seeds.values()
        for trace in seed_result.extra.get("bound_trace", {}).values()
        for step in trace
    ]


def bound_violations(result: RecipeResult) -> int:
    """Number of recorded training steps (all seeds, data sets) at which CE < PCE − gap (should be 0)."""
    return sum(1 for ce, _, lower in _steps(result) if ce < lower - 1e-6 * (1 + abs(lower)))


def make_figure(result: RecipeResult, path: Path) -> None:
    datasets = result.config["datasets"]
    losses = [name for name in LOSSES if name in result.config["losses"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(datasets))
    for i, dataset in enumerate(datasets):
        values = [_mean_std(result, f"{dataset} · {name}") for name in losses]
        axes[0].barh(
            np.arange(len(losses)) + i * width,
            [v[0] for v in values],
            xerr=[v[1] for v in values],
            height=width,
            label=dataset,
        )
    axes[0].set_yticks(np.arange(len(losses)) + width * (len(datasets) - 1) / 2, losses, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("test Recall@1 (mean ± std over seeds)")
    axes[0].set_title("Open-set retrieval, same backbone, different losses")
    axes[0].legend()
    first = min(result.seeds) if result.seeds else None
    traces = result.seeds[first].extra.get("bound_trace", {}) if first is not None else {}
    for dataset, trace in traces.items():
        curves = np.asarray(trace)
        steps = np.arange(len(curves))
        axes[1].plot(steps, curves[:, 0], label=f"{dataset}: CE")
        axes[1].plot(steps, curves[:, 1], "--", label=f"{dataset}: PCE")
        axes[1].plot(steps, curves[:, 2], ":", label=f"{dataset}: PCE − gap (proved lower bound)")
    axes[1].set_xlabel(f"training step of the cross-entropy run (seed {first})")
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[1].set_ylabel("value on the batch (symlog scale)")
    axes[1].set_title("CE ≥ PCE − (1/λ)Σ‖c_kˢ − λθ_k‖², λ = λ₀")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def verdict(result: RecipeResult) -> str:
    tolerance = result.config["competitive_within"]
    parts = []
    for dataset in result.config["datasets"]:
        ce_rows = {name: _mean_std(result, f"{dataset} · {name}") for name in _CROSS_ENTROPY}
        ce_name = max(ce_rows, key=lambda name: ce_rows[name][0] if math.isfinite(ce_rows[name][0]) else -1.0)
        ce, ce_std = ce_rows[ce_name]
        pairwise = {
            name: _mean_std(result, f"{dataset} · {name}")[0] for name in _PAIRWISE if name in result.config["losses"]
        }
        if not pairwise or not math.isfinite(ce):
            continue
        best = max(pairwise, key=lambda name: pairwise[name])
        gap = ce - pairwise[best]
        held = gap >= -tolerance
        parts.append(
            f"{dataset}: best CE ({ce_name}) Recall@1 {ce:.3f} ± {ce_std:.3f} "
            f"vs best pairwise ({best}) {pairwise[best]:.3f}, "
            f"difference {gap:+.3f}: the claim {'held' if held else 'did not hold'} "
            f"(competitive = within {tolerance:.2f})."
        )
    violations = bound_violations(result)
    steps = _steps(result)
    plain = sum(1 for ce, pce, _ in steps if ce >= pce)
    parts.append(
        f"Proved bound CE ≥ PCE − gap violated at {violations} of {len(steps)} recorded training step(s)"
        + (" (as it must be)" if violations == 0 else ": a defect")
        + f"; the paper's CE ≥ PCE without the gap term (λ = λ₀) held at {plain} of {len(steps)}."
    )
    return "Test Recall@1, mean over seeds. " + " ".join(parts)


RECIPE = Recipe(
    name="ce-vs-pairwise",
    title="Cross-entropy vs pairwise losses on open-set retrieval (digits and glyphs)",
    paper=(
        "Boudiaf, Rony, Ziko, Granger, Pedersoli, Piantanida, Ben Ayed. A unifying mutual information view of "
        "metric learning: cross-entropy vs. pairwise losses. ECCV 2020"
    ),
    claim="Cross-entropy, without any mining, is competitive with the pairwise losses for retrieval.",
    config={
        "datasets": ["digits", "glyphs"],
        "losses": list(LOSSES),
        "threads": 1,
        "embedding_size": 32,
        "hidden": [128, 128],
        "batch_size": 125,
        "lr": 1e-3,
        "epochs": 30,
        "label_smoothing": 0.1,
        "normalised_temperature": 0.05,
        "competitive_within": 0.02,
        "glyph_train_classes": 60,
        "glyph_test_classes": 60,
        "glyph_samples": 10,
    },
    quick={"datasets": ["digits"], "epochs": 8},
    run_seed=run_seed,
    make_figure=make_figure,
    verdict=verdict,
)
