"""Recipe ``hashing``: ASH (spatial attention + pairwise contrastive loss) vs DPSH, HashNet and DSH, equally tuned.

ASH (Fang et al., BIBM 2020) puts a spatial-attention module in front of a pretrained CNN so that a small salient
region of an ophthalmic image decides its hash code, and trains it with a pairwise contrastive loss plus a
quantisation term; it reports a higher Hamming-ranking mAP than DPSH, HashNet and DSH. Its data sets are not
available here, so the recipe makes images with the property the method is built for
(:func:`pairloss.data.salient.salient_glyphs`): one small glyph of the class's character at a random place on a
random crop of scikit-image's bundled photographs; nothing else in the image depends on the class.

* **data**: ``n_classes`` characters; ``fit_per_class`` images per class are both the training set and the
  retrieval database (the usual deep-hashing protocol), ``validation_per_class`` other images per class are the
  validation queries (tuning, the kept state), ``test_per_class`` more are the test queries, touched once;
* **pretrained start**: every paper compared starts from ImageNet weights; here :class:`SalientFeatures` is
  trained once with cross-entropy on glyphs of other characters (digits, lower-case Latin and Greek letters) on a
  plain background, saved, and loaded by every run; the attention module and the hash layers start fresh;
* **methods**: :class:`~pairloss.models.hashing.AttentionHashingNet` with the attention module and ASH's loss;
  the same network without attention and with DPSH's, HashNet's and DSH's losses (the baselines, as published);
  and ASH's loss without attention (the ablation). DPSH and DSH compare each batch with a memory of all training
  codes (:class:`~pairloss.losses.hashing.HashCodeMemory`), as their reference implementations do; HashNet and
  ASH compare the pairs within the batch, as theirs do; HashNet's ``tanh(β u)`` has its continuation
  ``β = √(1 + γ t)``;
* **tuning**: ``trials`` seeded Optuna trials per loss at ``tuning_bits`` bits (learning rate and the loss's own
  knobs, margins as a fraction of ``K``), the chosen values reused at every code length;
* **metrics**: codes ``sign(u)``; Hamming ranking of the database (faiss), mAP over the whole ranking and the
  precision within Hamming radius 2 (0 for an empty ball), at 16, 32 and 64 bits; for the attention network, how
  much more attention falls on the glyph's box than on the image on average.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pairloss.data.salient import SALIENT_CHARACTERS, SalientImages, salient_glyphs
from pairloss.losses.hashing import HashCodeMemory, ash_loss, dpsh_loss, dsh_loss, hashnet_loss
from pairloss.metrics.hashing import hamming_map, hamming_ranking, precision_recall_curve, precision_within_radius
from pairloss.models.hashing import AttentionHashingNet, SalientFeatures
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
from pairloss.training.loop import FitConfig, ShuffledBatches, fit, optimizer_step
from pairloss.training.reporting import Reporter

__all__ = ["CLAIMS", "METHODS", "PRETRAIN_CHARACTERS", "RECIPE", "SPACES", "attention_on_glyph"]

#: Characters of the pretraining task (none of them a class, none a look-alike of one).
PRETRAIN_CHARACTERS = tuple("0123456789abdefghijmnqrt") + tuple("αβγδεζηθλμξπφψω")
BITS = (16, 32, 64)
ATTENTION_METRIC = "attention on glyph ×"
_LR = Float(1e-4, 1e-2, log=True)

#: The search space of each loss; every one gets ``config["trials"]`` trials.
SPACES: dict[str, dict[str, Param]] = {
    "ASH": {"lr": _LR, "margin": Float(0.1, 1.0), "quantization": Float(1e-3, 1.0, log=True)},
    "DPSH": {"lr": _LR, "quantization": Float(1e-3, 1.0, log=True)},
    "HashNet": {"lr": _LR, "alpha_bits": Float(1.0, 30.0, log=True)},
    "DSH": {"lr": _LR, "margin": Float(0.25, 2.0), "regularization": Float(1e-3, 0.1, log=True)},
}

METHODS = (
    Method(
        "ASH",
        space=SPACES["ASH"],
        settings={"loss": "ash", "attention": True, "memory": False},
        description="spatial attention on the image; contrastive loss on the relaxed Hamming distance + quantisation",
    ),
    Method(
        "DPSH",
        space=SPACES["DPSH"],
        settings={"loss": "dpsh", "attention": False, "memory": True},
        description="pairwise likelihood + quantisation, each batch against the memory of all training codes",
    ),
    Method(
        "HashNet",
        space=SPACES["HashNet"],
        settings={"loss": "hashnet", "attention": False, "memory": False},
        description="class-balanced pairwise likelihood, tanh continuation",
    ),
    Method(
        "DSH",
        space=SPACES["DSH"],
        settings={"loss": "dsh", "attention": False, "memory": True},
        description="contrastive loss on ‖u_i − u_j‖² + L1 regulariser, against the memory of all training codes",
    ),
    Method(
        "ASH without attention",
        settings={"loss": "ash", "attention": False, "memory": False},
        tuned_as="ASH",
        description="ASH's loss on the network without the attention module (ablation)",
    ),
)

_METRICS = tuple(f"{m} {b}b" for m in ("mAP", "P@r≤2") for b in BITS)
CLAIMS = (
    Claim("ASH beats DPSH", "ASH", "DPSH", _METRICS),
    Claim("ASH beats HashNet", "ASH", "HashNet", _METRICS),
    Claim("ASH beats DSH", "ASH", "DSH", _METRICS),
    Claim("the attention module helps ASH", "ASH", "ASH without attention", _METRICS),
)


@dataclass(frozen=True)
class _Fit:
    images: SalientImages
    pretrained: Path


_DATA_KEYS = (
    "n_classes",
    "image_size",
    "glyph_size",
    "contrast",
    "background_contrast",
    "fit_per_class",
    "validation_per_class",
    "test_per_class",
    "pretrain_per_class",
)
_PRETRAIN_KEYS = (*_DATA_KEYS, "widths", "pretrain_updates", "pretrain_batch_size", "pretrain_lr")


def _images(config: Mapping[str, Any], per_class: int, seed: int, characters: tuple[str, ...] | None = None,
            background_contrast: float | None = None) -> SalientImages:  # fmt: skip
    return salient_glyphs(
        per_class,
        characters or SALIENT_CHARACTERS[: config["n_classes"]],
        size=config["image_size"],
        glyph_size=config["glyph_size"],
        contrast=tuple(config["contrast"]),
        background_contrast=config["background_contrast"] if background_contrast is None else background_contrast,
        seed=seed,
    )


def _pretrain(config: Mapping[str, Any], path: Path, reporter: Reporter) -> None:
    """Cross-entropy on glyphs of the pretraining characters (plain background); save the feature extractor."""
    images = _images(config, config["pretrain_per_class"], 4, PRETRAIN_CHARACTERS, background_contrast=0.0)
    torch.manual_seed(0)
    features = SalientFeatures(widths=tuple(config["widths"]))
    classifier = nn.Linear(features.num_features, len(PRETRAIN_CHARACTERS))
    model = nn.Sequential(features, classifier)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["pretrain_lr"])
    batches = ShuffledBatches(len(images), config["pretrain_batch_size"], seed=0)

    def update(step: int) -> float:
        index = batches(step)
        return optimizer_step(
            optimizer, lambda: nn.functional.cross_entropy(model(images.images[index]), images.labels[index])
        )

    settings = FitConfig(updates=config["pretrain_updates"], description="pretraining the feature extractor")
    fit(model, optimizer, update, settings, checkpoint=path.with_suffix(".run.pt"), reporter=reporter)
    torch.save(features.state_dict(), path)


def prepare(ctx: PrepareContext) -> Splits:
    """Make the fit (= database), validation-query and test-query images; pretrain the feature extractor (cached)."""
    config = ctx.config
    if not set(BITS) <= set(config["bits"]) or config["tuning_bits"] not in config["bits"]:
        raise ValueError(f"bits must include {list(BITS)} (the claims name them) and tuning_bits")
    pretrained = ctx.cache_dir / f"pretrained-features-{cache_key(config, _PRETRAIN_KEYS)}.pt"
    if not pretrained.exists():
        _pretrain(config, pretrained, ctx.reporter)
    fit_images = _images(config, config["fit_per_class"], 1)
    validation = _images(config, config["validation_per_class"], 2)
    test = _images(config, config["test_per_class"], 3)
    size, glyph = config["image_size"], config["glyph_size"]
    info = {
        "classes": list(fit_images.characters),
        "images": {"fit (database)": len(fit_images), "validation queries": len(validation), "test queries": len(test)},
        "image_size": size,
        "glyph_box_share_of_image": glyph * glyph / (size * size),
        "pretraining": {
            "characters": "".join(PRETRAIN_CHARACTERS),
            "images": config["pretrain_per_class"] * len(PRETRAIN_CHARACTERS),
            "updates": config["pretrain_updates"],
        },
        "pretrained_checkpoint_sha256": hashlib.sha256(pretrained.read_bytes()).hexdigest()[:16],
    }
    return Splits(fit=_Fit(fit_images, pretrained), validation=validation, test=test, info=info)


def _loss_function(settings: Mapping[str, Any], bits: int) -> Callable[..., Tensor]:
    """``loss(codes, labels, ref_emb=None, ref_labels=None)`` of the method, its knobs set (margins per bit)."""
    kind = settings["loss"]
    function: Callable[..., Tensor]
    if kind == "ash":
        function = ash_loss
        knobs = {"margin": settings["margin"] * bits, "quantization_weight": settings["quantization"]}
    elif kind == "dpsh":
        function, knobs = dpsh_loss, {"quantization_weight": settings["quantization"]}
    elif kind == "hashnet":
        function, knobs = hashnet_loss, {"alpha": settings["alpha_bits"] / bits}
    elif kind == "dsh":
        function = dsh_loss
        knobs = {"margin": settings["margin"] * bits, "regularization": settings["regularization"]}
    else:
        raise ValueError(f"unknown loss {kind!r}")

    def loss(codes: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None) -> Tensor:
        return function(codes, labels, ref_emb=ref_emb, ref_labels=ref_labels, **knobs)

    return loss


@torch.no_grad()
def _codes(model: nn.Module, images: Tensor, chunk: int = 512) -> Tensor:
    was_training = model.training
    model.eval()
    codes = torch.cat([model(part) for part in images.split(chunk)])
    model.train(was_training)
    return codes


@torch.no_grad()
def attention_on_glyph(model: AttentionHashingNet, images: SalientImages) -> float:
    """Mean attention inside the class glyph's box divided by the mean attention over the image (1: no focus)."""
    was_training = model.training
    model.eval()
    maps = model.attention_map(images.images)
    model.train(was_training)
    if maps is None:
        return math.nan
    inside = images.glyph_mask()
    per_image = (maps * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3)) / maps.mean((1, 2, 3))
    return float(per_image.mean())


def _train(ctx: RunContext, bits: int) -> AttentionHashingNet:
    settings, config = ctx.settings, ctx.config
    data: _Fit = ctx.data.fit
    features = SalientFeatures(widths=tuple(config["widths"]))
    features.load_state_dict(torch.load(data.pretrained, map_location="cpu", weights_only=True))
    model = AttentionHashingNet(
        bits, features, features.num_features, attention=settings["attention"], hidden=config["hidden"]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=config["weight_decay"])
    images, labels = data.images.images, data.images.labels
    batches = ShuffledBatches(len(labels), config["batch_size"], seed=ctx.seed)
    loss = _loss_function(settings, bits)
    modules: dict[str, nn.Module] = {"model": model}
    memory = HashCodeMemory(labels, bits) if settings["memory"] else None
    if memory is not None:
        modules["memory"] = memory

    def update(step: int) -> float:
        index = batches(step)
        if settings["loss"] == "hashnet":
            model.head.scale = math.sqrt(1.0 + config["hashnet_gamma"] * step)

        def value() -> Tensor:
            codes = model(images[index])
            reference = () if memory is None else memory.update(index, codes)
            return loss(codes, labels[index], *reference)

        return optimizer_step(optimizer, value)

    def validate() -> float:
        ranking = hamming_ranking(_codes(model, ctx.data.validation.images), ctx.data.validation.labels,
                                  _codes(model, images), labels)  # fmt: skip
        return hamming_map(ranking)

    checkpoint = ctx.checkpoint.with_name(f"{ctx.checkpoint.stem}-{bits}b.pt")
    fit(
        modules,
        optimizer,
        update,
        FitConfig(
            updates=config["updates"], validate_every=config["validate_every"], description=f"{ctx.label}, {bits} bits"
        ),
        validate=validate,
        checkpoint=checkpoint,
        reporter=ctx.reporter,
    )
    return model


def run(ctx: RunContext) -> RunResult:
    """Train at the tuning length (tuning) or at every length (final); Hamming-ranking metrics of the queries."""
    config = ctx.config
    data: _Fit = ctx.data.fit
    queries: SalientImages = ctx.evaluation
    metrics: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for bits in [config["tuning_bits"]] if ctx.phase == "tuning" else config["bits"]:
        model = _train(ctx, bits)
        ranking = hamming_ranking(_codes(model, queries.images), queries.labels, _codes(model, data.images.images),
                                  data.images.labels)  # fmt: skip
        metrics[f"mAP {bits}b"] = hamming_map(ranking)
        metrics[f"P@r≤2 {bits}b"] = precision_within_radius(ranking, 2)
        if bits == config["tuning_bits"]:
            if ctx.settings["attention"]:
                metrics[ATTENTION_METRIC] = attention_on_glyph(model, queries)
            if ctx.phase == "final":
                precision, recall = precision_recall_curve(ranking)
                extra["pr_curve"] = {"precision": precision.tolist(), "recall": recall.tolist()}
                if ctx.settings["attention"] and ctx.seed == 0:
                    extra["examples"] = _examples(model, queries, config["figure_examples"])
    return RunResult(metrics, extra)


def _examples(model: AttentionHashingNet, queries: SalientImages, n: int) -> dict[str, Any]:
    """A few test images (one per class), their attention maps and glyph boxes, for the figure."""
    index = torch.tensor([int(torch.nonzero(queries.labels == c)[0]) for c in range(min(n, len(queries.characters)))])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        maps = model.attention_map(queries.images[index])
    model.train(was_training)
    assert maps is not None
    return {
        "images": queries.images[index, 0].tolist(),
        "attention": maps[:, 0].tolist(),
        "boxes": queries.boxes[index].tolist(),
        "characters": [queries.characters[int(c)] for c in queries.labels[index]],
    }


def make_figure(result: ExperimentResult, path: Path) -> None:
    """mAP vs code length per method, the verdicts on mAP, and test images with ASH's attention maps (stacked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from pairloss.recipes.report import plot_verdicts

    bits = result.config["bits"]
    claims = [v for v in result.verdicts if v["metric"].startswith("mAP")]
    examples = result.per_seed.get(0, {}).get("ASH", {}).get("extra", {}).get("examples")
    plt.rcParams.update({"font.size": 10})
    heights = [3.8, 0.8 + 0.28 * len(claims), 2.4 if examples else 0.01]
    fig = plt.figure(figsize=(6.7, sum(heights)), layout="constrained")
    top_fig, middle_fig, bottom_fig = np.asarray(fig.subfigures(3, 1, height_ratios=heights)).ravel()
    top = top_fig.subplots()
    for method in [m.name for m in METHODS if m.name in result.summary]:
        stats_ = [result.mean_ci(method, f"mAP {b}b") for b in bits]
        top.errorbar(bits, [s[0] for s in stats_], yerr=[s[1] for s in stats_], marker="o", capsize=3, label=method)
    top.set_xscale("log", base=2)
    top.set_xticks(bits, [str(b) for b in bits])
    top.minorticks_off()
    top.set_xlabel("code length (bits)")
    top.set_ylabel("test mAP (mean, 95% CI)")
    top.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False, fontsize=9)
    top.set_title("Hamming ranking of the database (salient-glyph images)")
    middle = middle_fig.subplots()
    plot_verdicts(middle, claims)
    middle_fig.legend(
        *middle.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False, fontsize=9
    )
    if examples:
        n = len(examples["images"])
        axes = bottom_fig.subplots(2, n, squeeze=False)
        bottom_fig.suptitle("Test images (glyph box in green) and ASH's attention map (seed 0, "
                            f"{result.config['tuning_bits']} bits)", fontsize=10)  # fmt: skip
        for i in range(n):
            top_row, left, size = (int(v) for v in examples["boxes"][i][:3])
            for ax, key, cmap in ((axes[0, i], "images", "gray"), (axes[1, i], "attention", "magma")):
                ax.imshow(np.asarray(examples[key][i]), cmap=cmap)
                ax.add_patch(Rectangle((left - 0.5, top_row - 0.5), size, size, fill=False, edgecolor="tab:green",
                                       linewidth=1.2))  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
            axes[0, i].set_title(examples["characters"][i])
    fig.savefig(path, dpi=100)
    plt.close(fig)


CONFIG: dict[str, Any] = {
    "trials": 4,
    "threads": 1,
    "n_classes": 10,
    "image_size": 24,
    "glyph_size": 11,
    "contrast": [0.4, 0.75],
    "background_contrast": 0.25,
    "fit_per_class": 200,
    "validation_per_class": 30,
    "test_per_class": 50,
    "pretrain_per_class": 60,
    "widths": [16, 32, 64],
    "pretrain_updates": 600,
    "pretrain_batch_size": 128,
    "pretrain_lr": 2e-3,
    "hidden": 128,
    "bits": list(BITS),
    "tuning_bits": 32,
    "updates": 160,
    "validate_every": 80,
    "batch_size": 64,
    "weight_decay": 1e-5,
    "hashnet_gamma": 0.005,
    "figure_examples": 8,
}

QUICK: dict[str, Any] = {
    "trials": 2,
    "fit_per_class": 20,
    "validation_per_class": 6,
    "test_per_class": 8,
    "pretrain_per_class": 10,
    "widths": [8, 16, 16],
    "pretrain_updates": 40,
    "updates": 20,
    "validate_every": 10,
    "figure_examples": 4,
}

RECIPE = Experiment(
    name="hashing",
    title="Deep hashing: ASH (spatial attention + contrastive loss) vs DPSH, HashNet, DSH on salient-glyph images",
    paper="Fang et al. Attention-based saliency hashing for ophthalmic image retrieval. BIBM 2020",
    claim=(
        "A spatial-attention module in front of the hashing CNN, trained with ASH's pairwise contrastive loss and "
        "quantisation term, retrieves better (Hamming-ranking mAP) than DPSH, HashNet and DSH when a small salient "
        "region decides the class."
    ),
    config=CONFIG,
    quick=QUICK,
    methods=METHODS,
    claims=CLAIMS,
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective=f"mAP {CONFIG['tuning_bits']}b",
    tables=(
        ("Hamming-ranking mAP of the test queries against the database", tuple(f"mAP {b}b" for b in BITS)),
        (
            f"Precision within Hamming radius 2, and the attention on the glyph's box ({CONFIG['tuning_bits']} bits)",
            (*(f"P@r≤2 {b}b" for b in BITS), ATTENTION_METRIC),
        ),
    ),
)
