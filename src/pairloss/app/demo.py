"""``pairloss demo``: open-set retrieval on the bundled digits with a few losses, a table and a figure."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.decomposition import PCA
from torch import nn

import pairloss
from pairloss.app.output import output_folder
from pairloss.app.progress import RichReporter
from pairloss.data import open_set_digits
from pairloss.metrics import retrieval
from pairloss.models import MLPEmbedder
from pairloss.training import TrainConfig, embed, train_embedding

__all__ = ["DEFAULT_LOSSES", "DEMO_LOSSES", "demo_loss_name", "run_demo"]

EMBEDDING_SIZE = 32
K = (1, 2, 4, 8)

#: Loss name → factory ``(num_classes, embedding_size) -> loss module``.
DEMO_LOSSES: dict[str, Callable[[int, int], nn.Module]] = {
    "contrastive": lambda c, d: pairloss.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5),
    "triplet": lambda c, d: pairloss.TripletMarginLoss(margin=0.1),
    "multi-similarity": lambda c, d: pairloss.MultiSimilarityLoss(),
    "circle": lambda c, d: pairloss.CircleLoss(),
    "supcon": lambda c, d: pairloss.SupConLoss(),
    "ntxent": lambda c, d: pairloss.NTXentLoss(),
    "proxy-anchor": lambda c, d: pairloss.ProxyAnchorLoss(num_classes=c, embedding_size=d),
    "normalized-softmax": lambda c, d: pairloss.NormalizedSoftmaxLoss(num_classes=c, embedding_size=d),
}
DEFAULT_LOSSES = ("contrastive", "triplet", "multi-similarity")


def _squashed(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def demo_loss_name(name: str) -> str:
    """The :data:`DEMO_LOSSES` key that ``name`` means: the key itself (``multi-similarity``) or the loss's class name
    (``MultiSimilarityLoss``), in any case, with or without dashes; ``ValueError`` listing both otherwise."""
    classes = {key: type(factory(2, 2)).__name__ for key, factory in DEMO_LOSSES.items()}
    aliases = {_squashed(alias): key for key, cls in classes.items() for alias in (key, cls)}
    if _squashed(name) not in aliases:
        choices = ", ".join(f"{key} ({cls})" for key, cls in classes.items())
        raise ValueError(f"unknown loss {name!r}; choose from {choices}")
    return aliases[_squashed(name)]


def run_demo(
    losses: Sequence[str] = DEFAULT_LOSSES,
    epochs: int = 10,
    seed: int = 0,
    out: Path | str = "results",
    console: Console | None = None,
) -> dict[str, dict[str, float]]:
    """Train one MLP per loss on digits 0–4, evaluate retrieval on digits 5–9, print a table, write a figure.

    ``losses`` are :data:`DEMO_LOSSES` keys or the losses' class names. Writes ``out/demo/results.json`` and
    ``out/demo/figure.png``; the folder is created (or found unwritable, ``ValueError``) before any training.
    Returns ``{loss: metrics}``.
    """
    console = console or Console()
    losses = list(dict.fromkeys(demo_loss_name(name) for name in losses))
    out_dir = output_folder(Path(out) / "demo")
    split = open_set_digits()
    num_classes = int(split.train_y.max()) + 1
    reporter = RichReporter(console=console)
    results: dict[str, dict[str, float]] = {}
    projections: dict[str, np.ndarray] = {}
    # the reference every learned embedding is measured against: nearest neighbours on the raw pixels
    results["raw pixels (no training)"] = retrieval(split.test_x, split.test_y, k=K)
    with reporter.session():
        for name in losses:
            torch.manual_seed(seed)
            model = MLPEmbedder(split.num_features, EMBEDDING_SIZE)
            loss = DEMO_LOSSES[name](num_classes, EMBEDDING_SIZE)
            start = time.perf_counter()
            config = TrainConfig(epochs=epochs, seed=seed)
            train_embedding(model, loss, split.train_x, split.train_y, config, reporter, f"training {name}")
            test_embeddings = embed(model, split.test_x)
            metrics = retrieval(test_embeddings, split.test_y, k=K)
            metrics["train_seconds"] = time.perf_counter() - start
            results[name] = metrics
            projections[name] = PCA(n_components=2, random_state=seed).fit_transform(
                torch.nn.functional.normalize(test_embeddings, dim=1).numpy()
            )
    _print_table(console, results)
    (out_dir / "results.json").write_text(json.dumps({"epochs": epochs, "seed": seed, "metrics": results}, indent=2))
    _figure(results, projections, split.test_y.numpy(), out_dir / "figure.png")
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'figure.png'}")
    return results


def _print_table(console: Console, results: dict[str, dict[str, float]]) -> None:
    table = Table(title="Open-set retrieval on digits 5–9 (trained on 0–4)")
    table.add_column("loss", style="bold")
    for k in K:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("MAP@R", justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{100 * metrics[f'recall@{k}']:.1f}" for k in K), f"{100 * metrics['map@r']:.1f}")
    console.print(table)


def _figure(
    results: dict[str, dict[str, float]], projections: dict[str, np.ndarray], labels: np.ndarray, path: Path
) -> None:
    n = len(projections)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4))
    ax = axes[0]
    for name, metrics in results.items():
        ax.plot(K, [100 * metrics[f"recall@{k}"] for k in K], marker="o", label=name)
    ax.set(xscale="log", xlabel="k", ylabel="Recall@k (%)")
    ax.minorticks_off()
    ax.set_xticks(K, [str(k) for k in K])
    ax.set_title("Recall@k on unseen digits 5–9")
    ax.legend(fontsize=8)
    for ax, (name, points) in zip(axes[1:], projections.items(), strict=True):
        scatter = ax.scatter(
            points[:, 0],
            points[:, 1],
            c=labels,
            cmap=plt.get_cmap("tab10", len(np.unique(labels))),
            s=6,
            vmin=labels.min() - 0.5,
            vmax=labels.max() + 0.5,
        )
        ax.set_title(f"{name}: test embeddings (PCA)")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(scatter, ax=axes[-1], label="digit", ticks=np.unique(labels))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
