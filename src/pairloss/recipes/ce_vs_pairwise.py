"""Recipe ``ce-vs-pairwise``: Boudiaf et al.'s cross-entropy recipe against pairwise losses, each tuned equally.

Boudiaf, Rony, Ziko, Granger, Pedersoli, Piantanida, Ben Ayed (ECCV 2020) show that the cross-entropy bounds a
pairwise loss (the pairwise cross-entropy, PCE) and find that a plain cross-entropy, trained with their recipe, is
competitive with or better than the best pairwise losses for retrieval. Their recipe (``experiment.py`` and
``models/base_model.py`` of their code) is reproduced here:

* **model**: backbone features → batch-norm without affine parameters (``norm_layer='batch'``) → linear map to the
  embedding (their ``remap``) → dropout → a linear classifier initialised at zero; the embedding is what is
  retrieved (cosine);
* **loss**: cross-entropy with label smoothing 0.1, their form (``1 − ε`` on the class, ``ε/(C − 1)`` on each
  other class, which is PyTorch's ``label_smoothing = ε·C/(C − 1)``);
* **optimiser**: SGD, weight decay 5e-4 on weights only (``no_bias_decay``), their ``warmcos`` schedule: the
  learning rate times ``min((i + 1)/100, (1 + cos(π i / T))/2)`` at update ``i`` of ``T``; plain random batches
  of 128.

The pairwise losses (contrastive, multi-similarity, triplet) train the same backbone and embedding layer with
their usual recipe (Adam, class-balanced batches of 4 images per class, as in Musgrave et al.'s reality check).
Every loss gets the same number of tuning trials on the validation classes (learning rate and the loss's own
knobs); the cross-entropy's ingredients are then removed one at a time at the tuned values (no label smoothing, no
feature batch-norm). Data: the open-set glyph set (:func:`pairloss.data.glyphs.glyph_retrieval_splits`, hundreds
of characters drawn by many font families; fit, validation and test characters disjoint), the backbone
:class:`pairloss.models.cnn.GlyphCNN`.

Along every cross-entropy run the recipe also checks, on the batch every ``bound_every`` updates, the proved
bound ``CE ≥ PCE − (1/λ)Σ_k‖c_kˢ − λθ_k‖²`` (:func:`pairloss.losses.crossentropy.pce_bound`, λ = λ₀, the plain
cross-entropy of the current classifier) and how often the paper's pointwise form ``CE ≥ PCE`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pairloss.data.glyphs import LabelledImages, font_family, glyph_fonts, glyph_retrieval_splits
from pairloss.losses.crossentropy import CrossEntropyLoss
from pairloss.losses.metric import ContrastiveLoss, MultiSimilarityLoss, TripletMarginLoss
from pairloss.models.cnn import GlyphCNN
from pairloss.recipes.base import RETRIEVAL_METRICS, retrieval_scores
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
from pairloss.recipes.tuning import Choice, Float, Param
from pairloss.training.loop import ClassBalancedBatches, FitConfig, ShuffledBatches, fit, optimizer_step

__all__ = ["CLAIMS", "METHODS", "RECIPE", "SPACES", "GlyphEmbedder", "boudiaf_label_smoothing", "warm_cosine"]

BOUND_METRICS = ("bound violations", "CE ≥ PCE (share of checks)", "bound checks")
_EVAL_CHUNK = 512

#: The search space of each tuned method; every one gets ``config["trials"]`` trials.
SPACES: dict[str, dict[str, Param]] = {
    "cross-entropy": {
        "lr": Float(0.003, 0.3, log=True),
        "momentum": Choice((0.0, 0.9)),
        "dropout": Float(0.0, 0.5),
    },
    "contrastive": {"lr": Float(1e-4, 3e-3, log=True), "neg_margin": Float(0.2, 1.2)},
    "multi-similarity": {
        "lr": Float(1e-4, 3e-3, log=True),
        "alpha": Float(0.5, 10.0, log=True),
        "beta": Float(10.0, 80.0, log=True),
    },
    "triplet": {
        "lr": Float(1e-4, 3e-3, log=True),
        "margin": Float(0.01, 0.5, log=True),
        "mining": Choice(("all", "semihard", "batch_hard")),
    },
}

_CE = {"loss": "cross_entropy", "label_smoothing": 0.1, "feature_bn": True}
METHODS = (
    Method("raw pixels", settings={"loss": "none"}, description="nearest neighbours on the 16×16 pixels"),
    Method(
        "cross-entropy",
        space=SPACES["cross-entropy"],
        settings=_CE,
        description="Boudiaf et al.'s recipe: feature batch-norm, label smoothing 0.1, SGD with warm-up + cosine",
    ),
    Method(
        "contrastive",
        space=SPACES["contrastive"],
        settings={"loss": "contrastive", "feature_bn": False},
        description="contrastive loss (Hadsell et al.), Adam, class-balanced batches",
    ),
    Method(
        "multi-similarity",
        space=SPACES["multi-similarity"],
        settings={"loss": "multi_similarity", "feature_bn": False},
        description="multi-similarity loss (Wang et al.), Adam, class-balanced batches",
    ),
    Method(
        "triplet",
        space=SPACES["triplet"],
        settings={"loss": "triplet", "feature_bn": False},
        description="triplet margin loss (all, semi-hard or batch-hard triplets), Adam, class-balanced batches",
    ),
    Method(
        "cross-entropy, no label smoothing",
        settings={**_CE, "label_smoothing": 0.0},
        tuned_as="cross-entropy",
        description="the cross-entropy recipe without label smoothing",
    ),
    Method(
        "cross-entropy, no feature batch-norm",
        settings={**_CE, "feature_bn": False},
        tuned_as="cross-entropy",
        description="the cross-entropy recipe without the batch-norm on the backbone features",
    ),
)

_BOTH = ("recall@1", "map@r")
CLAIMS = (
    Claim("cross-entropy beats contrastive", "cross-entropy", "contrastive", _BOTH),
    Claim("cross-entropy beats multi-similarity", "cross-entropy", "multi-similarity", _BOTH),
    Claim("cross-entropy beats triplet", "cross-entropy", "triplet", _BOTH),
    Claim("label smoothing helps the cross-entropy", "cross-entropy", "cross-entropy, no label smoothing", _BOTH),
    Claim(
        "the feature batch-norm helps the cross-entropy",
        "cross-entropy",
        "cross-entropy, no feature batch-norm",
        _BOTH,
    ),
)


class GlyphEmbedder(nn.Module):
    """``GlyphCNN`` features → [batch-norm without affine parameters] → linear map to ``embedding_size``.

    The batch-norm is Boudiaf et al.'s ``norm_layer='batch'`` (``BatchNorm1d(F, affine=False)`` on the backbone
    features, before their ``remap`` linear layer).
    """

    def __init__(self, embedding_size: int, *, feature_bn: bool, image_size: int = 16) -> None:
        super().__init__()
        self.backbone = GlyphCNN(image_size=image_size)
        features = self.backbone.num_features
        self.norm = nn.BatchNorm1d(features, affine=False) if feature_bn else nn.Identity()
        self.embedding = nn.Linear(features, embedding_size)
        nn.init.zeros_(self.embedding.bias)

    def forward(self, x: Tensor) -> Tensor:
        embedded: Tensor = self.embedding(self.norm(self.backbone(x)))
        return embedded


class _Classifier(nn.Module):
    """Dropout on the embedding, then the cross-entropy's bias-free linear classifier (initialised at zero)."""

    def __init__(self, n_classes: int, embedding_size: int, label_smoothing: float, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.loss = CrossEntropyLoss(n_classes, embedding_size, label_smoothing=label_smoothing)
        nn.init.zeros_(self.loss.weight)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        value: Tensor = self.loss(self.dropout(embeddings), labels)
        return value


def boudiaf_label_smoothing(epsilon: float, n_classes: int) -> float:
    """PyTorch's ``label_smoothing`` giving Boudiaf et al.'s target: ``1 − ε`` on the class, ``ε/(C − 1)`` on the
    others (``ε·C/(C − 1)``: PyTorch puts ``ε'/C`` on every class, the true one included)."""
    if n_classes < 2:
        raise ValueError(f"label smoothing needs at least two classes, got {n_classes}")
    return epsilon * n_classes / (n_classes - 1)


def warm_cosine(updates: int, warmup: int) -> Any:
    """Boudiaf et al.'s ``warmcos`` factor of the learning rate at update ``i``:
    ``min((i + 1)/warmup, (1 + cos(π i / updates))/2)``."""

    def factor(i: int) -> float:
        return min((i + 1) / warmup, (1 + math.cos(math.pi * i / updates)) / 2)

    return factor


def _no_bias_decay(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups: weight decay on the weights (2-D and more), none on biases and norm scales (1-D)."""
    params = [p for m in modules for p in m.parameters()]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _pairwise_loss(settings: Mapping[str, Any]) -> nn.Module:
    kind = settings["loss"]
    if kind == "contrastive":
        return ContrastiveLoss(pos_margin=0.0, neg_margin=settings["neg_margin"])
    if kind == "multi_similarity":
        return MultiSimilarityLoss(alpha=settings["alpha"], beta=settings["beta"], base=0.5)
    if kind == "triplet":
        return TripletMarginLoss(margin=settings["margin"], mining=settings["mining"])
    raise ValueError(f"unknown loss {kind!r}")


_DATA_KEYS = (
    "train_classes",
    "validation_classes",
    "test_classes",
    "samples_per_class",
    "min_families",
    "image_size",
    "split_seed",
)


@dataclass(frozen=True)
class _Data:
    fit: LabelledImages
    validation: LabelledImages
    test: LabelledImages


def _splits(config: Mapping[str, Any], cache: Path) -> _Data:
    """Render (or load from the cache) the fit, validation and test glyph sets."""
    path = cache / f"glyphs-{cache_key(config, _DATA_KEYS)}.npz"
    names = ("fit", "validation", "test")
    if not path.exists():
        splits = glyph_retrieval_splits(
            config["train_classes"],
            config["validation_classes"],
            config["test_classes"],
            config["samples_per_class"],
            min_families=config["min_families"],
            size=config["image_size"],
            split_seed=config["split_seed"],
        )
        arrays = {f"{n}_{a}": getattr(getattr(splits, n), a).numpy() for n in names for a in ("x", "y")}
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    with np.load(path) as saved:
        return _Data(
            *(LabelledImages(torch.from_numpy(saved[f"{n}_x"]), torch.from_numpy(saved[f"{n}_y"])) for n in names)
        )


def prepare(ctx: PrepareContext) -> Splits:
    """Render the open-set glyph splits (cached)."""
    data = _splits(ctx.config, ctx.cache_dir)
    fonts = glyph_fonts("extended")
    info = {
        "catalog": "extended",
        "fonts": len(fonts),
        "font_families": len({font_family(f) for f in fonts}),
        "classes": {name: getattr(data, name).classes for name in ("fit", "validation", "test")},
        "images": {name: int(getattr(data, name).y.numel()) for name in ("fit", "validation", "test")},
        "image_size": ctx.config["image_size"],
    }
    return Splits(fit=data.fit, validation=data.validation, test=data.test, info=info)


def _scores(model: nn.Module | None, images: LabelledImages) -> dict[str, float]:
    return retrieval_scores(model, images.x, images.y, batch_size=_EVAL_CHUNK)


def run(ctx: RunContext) -> RunResult:
    """Train one method on the fit characters (state selected on the validation characters); score the evaluation."""
    settings, config = dict(ctx.settings), dict(ctx.config)
    if settings["loss"] == "none":
        return RunResult(_scores(None, ctx.evaluation))
    data: LabelledImages = ctx.data.fit
    model = GlyphEmbedder(config["embedding_size"], feature_bn=settings["feature_bn"], image_size=config["image_size"])
    updates = config["updates"]
    trace: list[list[float]] = []
    if settings["loss"] == "cross_entropy":
        n_classes = int(data.y.max()) + 1
        smoothing = boudiaf_label_smoothing(settings["label_smoothing"], n_classes)
        loss: nn.Module = _Classifier(n_classes, config["embedding_size"], smoothing, settings["dropout"])
        momentum = settings["momentum"]
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            _no_bias_decay([model, loss], config["ce_weight_decay"]),
            lr=settings["lr"],
            momentum=momentum,
            nesterov=momentum > 0,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warm_cosine(updates, config["warmup"]))
        batches: Any = ShuffledBatches(data.y.numel(), config["batch_size"], seed=ctx.seed)
    else:
        loss = _pairwise_loss(settings)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=config["weight_decay"])
        scheduler = None
        batches = ClassBalancedBatches(data.y, config["m_per_class"], config["batch_size"], seed=ctx.seed)
    check_bound = isinstance(loss, _Classifier) and ctx.phase == "final"

    def update(step: int) -> float:
        index = batches(step)

        def value() -> Tensor:
            embeddings = model(data.x[index])
            if check_bound and step % config["bound_every"] == 0:
                trace.append([step, *_bound(loss, embeddings.detach(), data.y[index])])
            result: Tensor = loss(embeddings, data.y[index])
            return result

        return optimizer_step(optimizer, value)

    outcome = fit(
        {"model": model, "loss": loss},
        optimizer,
        update,
        FitConfig(updates=updates, validate_every=config["validate_every"], description=ctx.label),
        validate=lambda: _scores(model, ctx.data.validation)["map@r"],
        scheduler=scheduler,
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    metrics = _scores(model, ctx.evaluation)
    extra: dict[str, Any] = {"best_update": outcome.best_update, "validation": outcome.validation}
    if check_bound:
        metrics.update(_bound_metrics(trace))
        extra["bound_trace"] = trace
    return RunResult(metrics, extra)


def _bound(classifier: nn.Module, embeddings: Tensor, labels: Tensor) -> list[float]:
    """``[CE, PCE, PCE − gap]`` of the plain cross-entropy at the current classifier (λ = λ₀)."""
    assert isinstance(classifier, _Classifier)
    with torch.no_grad():
        bound = classifier.loss.bound(embeddings, labels)
    return [float(bound.cross_entropy), float(bound.pce), float(bound.lower_bound)]


def _bound_metrics(trace: list[list[float]]) -> dict[str, float]:
    """Violations of the proved bound (should be 0) and the share of checks where the paper's ``CE ≥ PCE`` held.

    A resumed run only holds the checks made after the resume; the counts say how many were made.
    """
    violations = sum(1 for _, ce, _, lower in trace if ce < lower - 1e-6 * (1 + abs(lower)))
    plain = sum(1 for _, ce, pce, _ in trace if ce >= pce)
    return {
        "bound violations": float(violations),
        "CE ≥ PCE (share of checks)": plain / len(trace) if trace else math.nan,
        "bound checks": float(len(trace)),
    }


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Three stacked panels: test Recall@1 and MAP@R per method, the verdicts on MAP@R, the bound along a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairloss.recipes.report import plot_verdicts

    methods = [m.name for m in METHODS if m.name in result.summary]
    claims = [v for v in result.verdicts if v["metric"] == "map@r"]
    plt.rcParams.update({"font.size": 10})
    heights = [1.0 + 0.5 * len(methods), 1.2 + 0.4 * len(claims), 3.6]
    fig = plt.figure(figsize=(6.7, sum(heights)), layout="constrained")
    top_fig, middle_fig, bottom_fig = np.asarray(fig.subfigures(3, 1, height_ratios=heights)).ravel()
    top = top_fig.subplots()
    rows = np.arange(len(methods))[::-1]
    for offset, metric, colour in ((0.2, "recall@1", "tab:blue"), (-0.2, "map@r", "tab:orange")):
        stats_ = [result.mean_ci(m, metric) for m in methods]
        top.barh(rows + offset, [s[0] for s in stats_], height=0.4, xerr=[s[1] for s in stats_], capsize=3,
                 color=colour, alpha=0.8, label=f"test {metric}")  # fmt: skip
    top.set_yticks(rows, methods)
    top.set_xlabel("unseen test characters: mean over seeds, 95% CI")
    top.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    top.set_title("Open-set glyph retrieval")
    middle = middle_fig.subplots()
    plot_verdicts(middle, claims, metric="map@r")
    middle_fig.legend(*middle.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    bottom = bottom_fig.subplots()
    trace = np.asarray(result.per_seed.get(0, {}).get("cross-entropy", {}).get("extra", {}).get("bound_trace", []))
    if trace.size:
        bottom.plot(trace[:, 0], trace[:, 1], label="CE (plain, current classifier)")
        bottom.plot(trace[:, 0], trace[:, 2], "--", label="PCE (λ = λ₀)")
        bottom.plot(trace[:, 0], trace[:, 3], ":", label="PCE − (1/λ)Σ‖c_kˢ − λθ_k‖² (proved bound)")
        bottom.set_yscale("symlog", linthresh=1.0)
        bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, frameon=False, fontsize=9)
    bottom.set_xlabel("update of the cross-entropy run (seed 0), on its batch")
    bottom.set_ylabel("value (symlog scale)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


CONFIG: dict[str, Any] = {
    "trials": 8,
    "threads": 1,
    "train_classes": 300,
    "validation_classes": 60,
    "test_classes": 300,
    "samples_per_class": 12,
    "min_families": 5,
    "image_size": 16,
    "split_seed": 0,
    "embedding_size": 64,
    "batch_size": 128,
    "m_per_class": 4,
    "updates": 400,
    "validate_every": 100,
    "warmup": 100,
    "weight_decay": 1e-4,
    "ce_weight_decay": 5e-4,
    "bound_every": 10,
}

QUICK: dict[str, Any] = {
    "trials": 2,
    "train_classes": 40,
    "validation_classes": 16,
    "test_classes": 40,
    "samples_per_class": 8,
    "batch_size": 64,
    "updates": 40,
    "validate_every": 20,
    "warmup": 10,
    "bound_every": 5,
}

RECIPE = Experiment(
    name="ce-vs-pairwise",
    title="Cross-entropy (Boudiaf et al.'s recipe) vs pairwise losses, equally tuned, open-set glyphs",
    paper=(
        "Boudiaf, Rony, Ziko, Granger, Pedersoli, Piantanida, Ben Ayed. A unifying mutual information view of "
        "metric learning: cross-entropy vs. pairwise losses. ECCV 2020"
    ),
    claim=(
        "A cross-entropy trained with a simple recipe (label smoothing, feature batch-norm, SGD with warm-up and "
        "cosine decay) is competitive with or better than the pairwise losses for retrieval."
    ),
    config=CONFIG,
    quick=QUICK,
    methods=METHODS,
    claims=CLAIMS,
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective="map@r",
    tables=(
        ("Retrieval among the test characters", RETRIEVAL_METRICS),
        ("The bound CE ≥ PCE − gap along the cross-entropy runs (checked on the batch)", BOUND_METRICS),
    ),
)
