"""``pairloss demo``: what the library is for, in a few minutes on a laptop CPU.

1. **Open-set retrieval where learning matters**: the extended glyph set (:mod:`pairloss.data.glyphs`: characters
   rendered with about 100 fonts, 16×16), ``train_classes`` training characters and ``test_classes`` unseen ones.
   A small CNN (:class:`pairloss.models.cnn.GlyphCNN`) is trained with each loss through the library's training
   loop (:func:`pairloss.training.fit`) for ``updates`` optimiser updates (Adam, learning rate 3e-3, about what the
   ``recall-at-k`` recipe's tuning chose), on ``seeds`` seeds; RS@k trains on
   batches of 512 through the multi-stage step (:func:`pairloss.training.large_batch.large_batch_step`, chunks of
   128). Test Recall@k and MAP@R (mean ± std over seeds) against nearest neighbours on the raw pixels.
2. **Speed and memory** of the same losses beside a naive N×N implementation (the whole similarity matrix, and for
   RS@k the ``[positive pairs, N]`` rank tensor) at a batch of ``speed_batch`` embeddings: forward + backward time
   (median of 3) and peak memory, each case in a fresh process (the kernel's peak resident set size, so every
   allocator counts), with the two values checked equal.

Writes ``out/demo/results.json`` and ``out/demo/figure.png``.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

import pairloss
from pairloss.app.output import output_folder
from pairloss.app.progress import RichReporter
from pairloss.data.glyphs import glyph_pools, render_glyphs
from pairloss.metrics import retrieval
from pairloss.models.backbones import build_backbone
from pairloss.training import ClassBalancedBatches, FitConfig, embed, fit, large_batch_step, optimizer_step
from pairloss.training.reporting import Reporter

__all__ = [
    "DEFAULT_LOSSES",
    "DEMO_LOSSES",
    "LARGE_BATCH_LOSSES",
    "demo_loss_name",
    "naive_contrastive_loss",
    "naive_recall_at_k_loss",
    "run_demo",
]

EMBEDDING_SIZE = 64
K = (1, 2, 4, 8)
SMALL_BATCH = 128
LARGE_BATCH = 512
CHUNK = 128
LEARNING_RATE = 3e-3

#: Loss name → factory ``(num_classes, embedding_size) -> loss module``.
DEMO_LOSSES: dict[str, Callable[[int, int], nn.Module]] = {
    "contrastive": lambda c, d: pairloss.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5),
    "rs@k": lambda c, d: pairloss.RecallAtKSurrogateLoss(),
    "triplet": lambda c, d: pairloss.TripletMarginLoss(margin=0.1),
    "multi-similarity": lambda c, d: pairloss.MultiSimilarityLoss(),
    "circle": lambda c, d: pairloss.CircleLoss(),
    "supcon": lambda c, d: pairloss.SupConLoss(),
    "ntxent": lambda c, d: pairloss.NTXentLoss(),
    "proxy-anchor": lambda c, d: pairloss.ProxyAnchorLoss(num_classes=c, embedding_size=d),
    "normalized-softmax": lambda c, d: pairloss.NormalizedSoftmaxLoss(num_classes=c, embedding_size=d),
}
#: Losses trained on batches of 512 through the multi-stage large-batch step (the others: batches of 128).
LARGE_BATCH_LOSSES = frozenset({"rs@k"})
DEFAULT_LOSSES = ("contrastive", "rs@k")
RAW = "raw pixels (no training)"


def naive_contrastive_loss(embeddings: Tensor, labels: Tensor, neg_margin: float = 0.5) -> Tensor:
    """The contrastive loss the direct way: the whole ``[N, N]`` distance matrix and masks (PML's reduction)."""
    normalised = F.normalize(embeddings, dim=1)
    distance = torch.cdist(normalised, normalised)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(labels.numel(), dtype=torch.bool)
    positive = torch.where(same & off_diagonal, distance, torch.zeros_like(distance))
    negative = torch.where(~same, F.relu(neg_margin - distance), torch.zeros_like(distance))
    return positive.sum() / (positive > 0).sum().clamp(min=1) + negative.sum() / (negative > 0).sum().clamp(min=1)


def naive_recall_at_k_loss(
    embeddings: Tensor, labels: Tensor, k: Sequence[int] = (1, 2, 4, 8, 16), tau1: float = 1.0, tau2: float = 0.01
) -> Tensor:
    """RS@k the direct way: a ``[positive pairs, N]`` tensor of sigmoid rank terms (as OML and the authors' code)."""
    normalised = F.normalize(embeddings, dim=1)
    similarity = normalised @ normalised.T
    n = labels.numel()
    positive = (labels[:, None] == labels[None, :]) & ~torch.eye(n, dtype=torch.bool)
    query, item = positive.nonzero(as_tuple=True)
    terms = torch.sigmoid((similarity[query] - similarity[query, item][:, None]) / tau2)
    excluded = torch.zeros_like(terms, dtype=torch.bool)
    pairs = torch.arange(query.numel())
    excluded[pairs, query] = True
    excluded[pairs, item] = True
    rank = 1.0 + terms.masked_fill(excluded, 0.0).sum(dim=1)
    count = positive.sum(dim=1)
    active = count > 0
    total = embeddings.new_zeros(())
    for cut in k:
        hits = embeddings.new_zeros(n).index_add(0, query, torch.sigmoid((cut - rank) / tau1))
        recall = hits / count.clamp(max=cut).clamp(min=1)
        total = total + (1.0 - recall[active]).mean()
    return total / len(k)


def _glyph_data(train_classes: int, test_classes: int, samples: int) -> dict[str, Tensor]:
    pools = glyph_pools(train_classes, test_classes, 0, split_seed=0, catalog="extended", min_families=5)
    train_x, train_y = render_glyphs(pools.train, samples, seed=1, catalog="extended")
    test_x, test_y = render_glyphs(pools.test, samples, seed=2, catalog="extended")
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _train(name: str, data: dict[str, Tensor], updates: int, seed: int, reporter: Reporter) -> nn.Module:
    torch.manual_seed(seed)
    model = build_backbone("glyph_cnn", EMBEDDING_SIZE)
    x, y = data["train_x"], data["train_y"]
    loss = DEMO_LOSSES[name](int(y.max()) + 1, EMBEDDING_SIZE)
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=LEARNING_RATE, weight_decay=1e-4)
    large = name in LARGE_BATCH_LOSSES
    batches = ClassBalancedBatches(y, 4, LARGE_BATCH if large else SMALL_BATCH, seed=seed)

    def update(step: int) -> float:
        index = batches(step)
        if large:
            return large_batch_step(
                model, optimizer, x[index], y[index], loss, chunk_size=CHUNK, batch_norm="chunk"
            ).loss
        return optimizer_step(optimizer, lambda: loss(model(x[index]), y[index]))

    fit(
        {"model": model, "loss": loss},
        optimizer,
        update,
        FitConfig(updates, description=f"{name}, seed {seed}"),
        reporter=reporter,
    )
    return model


def _scores(features: Tensor, labels: Tensor) -> dict[str, float]:
    scores = retrieval(features, labels, k=K)
    return {key: float(scores[key]) for key in (*(f"recall@{k}" for k in K), "map@r")}


def _summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "mean": float(np.mean([r[key] for r in runs])),
            "std": float(np.std([r[key] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
        }
        for key in runs[0]
    }


# --- speed and memory beside a naive implementation, each case in a fresh process -------------------------------


def _status_kib(name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else -1


def _measure_case(loss: str, implementation: str, n: int, threads: int) -> dict[str, Any]:
    """Forward + backward of one case: median time of 3 runs after a warm-up, and peak memory above the inputs."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(n, EMBEDDING_SIZE, generator=generator).requires_grad_(True)
    labels = torch.arange(n // 4).repeat_interleave(4)
    if implementation == "pairloss":
        module = DEMO_LOSSES[loss](n // 4, EMBEDDING_SIZE)
        step: Callable[[], Tensor] = lambda: module(embeddings, labels)  # noqa: E731
    else:
        naive = naive_contrastive_loss if loss == "contrastive" else naive_recall_at_k_loss
        step = lambda: naive(embeddings, labels)  # noqa: E731
    linux = Path("/proc/self/clear_refs").exists()
    if linux:
        Path("/proc/self/clear_refs").write_text("5")
    baseline = _status_kib("VmRSS")
    seconds = []
    value = float("nan")
    for _ in range(4):
        embeddings.grad = None
        start = time.perf_counter()
        result = step()
        result.backward()
        seconds.append(time.perf_counter() - start)
        value = float(result.detach())
        del result
    peak = (_status_kib("VmHWM") - baseline) * 1024 if linux else None
    return {"seconds": statistics.median(seconds[1:]), "peak_bytes": peak, "value": value}


def _speed_and_memory(losses: Sequence[str], n: int, reporter: Reporter) -> dict[str, dict[str, dict[str, Any]]]:
    threads = torch.get_num_threads()
    cases = [(loss, impl) for loss in losses if loss in ("contrastive", "rs@k") for impl in ("pairloss", "naive N×N")]
    context = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with context.Pool(1, maxtasksperchild=1) as pool:
        for loss, implementation in reporter.track(cases, f"speed and memory at N = {n}"):
            measured = pool.apply(_measure_case, (loss, implementation, n, threads))
            results.setdefault(loss, {})[implementation] = measured
    return results


# --- the demo ---------------------------------------------------------------------------------------------------


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
    *,
    seeds: int = 3,
    updates: int = 200,
    train_classes: int = 300,
    test_classes: int = 100,
    samples: int = 10,
    speed_batch: int = 4096,
    out: Path | str = "results",
    console: Console | None = None,
) -> dict[str, Any]:
    """Train a small CNN per loss and seed on glyphs, retrieve unseen glyphs, time the losses against naive N×N code.

    ``losses`` are :data:`DEMO_LOSSES` keys or the losses' class names. Prints the tables, writes
    ``out/demo/results.json`` and ``out/demo/figure.png`` (the folder is created, or found unwritable with a
    ``ValueError``, before any training) and returns the results.
    """
    console = console or Console()
    losses = list(dict.fromkeys(demo_loss_name(name) for name in losses))
    out_dir = output_folder(Path(out) / "demo")
    if seeds < 1 or updates < 1:
        raise ValueError(f"seeds and updates must be >= 1, got {seeds} and {updates}")
    reporter = RichReporter(console=console)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small CNN: one thread is fastest on a shared CPU
    try:
        with reporter.session():
            data = _glyph_data(train_classes, test_classes, samples)
            per_seed: dict[str, list[dict[str, float]]] = {RAW: [_scores(data["test_x"].flatten(1), data["test_y"])]}
            for name in losses:
                per_seed[name] = []
                for seed in range(seeds):
                    model = _train(name, data, updates, seed, reporter)
                    per_seed[name].append(_scores(embed(model, data["test_x"], batch_size=256), data["test_y"]))
        speed = _speed_and_memory(losses, speed_batch, reporter)
    finally:
        torch.set_num_threads(threads)
    summary = {name: _summary(runs) for name, runs in per_seed.items()}
    _print_tables(console, summary, speed, train_classes, test_classes, seeds, speed_batch)
    results = {
        "data": {
            "train_classes": train_classes,
            "test_classes": test_classes,
            "images_per_class": samples,
            "image_size": 16,
        },
        "training": {
            "updates": updates,
            "seeds": seeds,
            "learning_rate": LEARNING_RATE,
            "small_batch": SMALL_BATCH,
            "large_batch": LARGE_BATCH,
        },
        "summary": summary,
        "per_seed": per_seed,
        "speed_and_memory": {"batch": speed_batch, "embedding_size": EMBEDDING_SIZE, "cases": speed},
        "wall_seconds": time.perf_counter() - started,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    _figure(summary, speed, speed_batch, out_dir / "figure.png")
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'figure.png'}")
    return results


def _print_tables(
    console: Console,
    summary: dict[str, dict[str, dict[str, float]]],
    speed: dict[str, dict[str, dict[str, Any]]],
    train_classes: int,
    test_classes: int,
    seeds: int,
    n: int,
) -> None:
    table = Table(
        title=f"Retrieval of {test_classes} unseen glyph classes (trained on {train_classes} others), mean ± std "
        f"over {seeds} seeds",
        caption=f"* batches of {LARGE_BATCH} through the multi-stage step (the others: batches of {SMALL_BATCH})",
    )
    table.add_column("method", style="bold")
    for key in (*(f"R@{k}" for k in K), "MAP@R"):
        table.add_column(key, justify="right", no_wrap=True)
    for name, metrics in summary.items():
        cells = [f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}" for m in metrics.values()]
        table.add_row(name + (" *" if name in LARGE_BATCH_LOSSES else ""), *cells)
    console.print(table)
    if not speed:
        return
    table = Table(title=f"Forward + backward at N = {n} embeddings: pairloss vs a naive N×N implementation")
    for column in ("loss", "implementation", "time (s)", "peak memory (MB)", "loss value"):
        table.add_column(column, justify="right" if column != "loss" else "left")
    for loss, cases in speed.items():
        for implementation, case in cases.items():
            memory = "–" if case["peak_bytes"] is None else f"{case['peak_bytes'] / 2**20:.0f}"
            table.add_row(loss, implementation, f"{case['seconds']:.3f}", memory, f"{case['value']:.6f}")
    console.print(table)


def _figure(
    summary: dict[str, dict[str, dict[str, float]]], speed: dict[str, dict[str, dict[str, Any]]], n: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(7.0, 7.0))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.3, 1.0])
    ax = fig.add_subplot(grid[0, :])
    for name, metrics in summary.items():
        means = [100 * metrics[f"recall@{k}"]["mean"] for k in K]
        stds = [100 * metrics[f"recall@{k}"]["std"] for k in K]
        style = "k--" if name == RAW else "o-"
        label = f"{name} (batch {LARGE_BATCH}, multi-stage)" if name in LARGE_BATCH_LOSSES else name
        ax.errorbar(K, means, yerr=stds, fmt=style, capsize=3, label=label)
    ax.set(xscale="log", xlabel="k", ylabel="test Recall@k (%)")
    ax.minorticks_off()
    ax.set_xticks(K, [str(k) for k in K])
    ax.set_title("Unseen glyph classes: Recall@k (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=9, loc="lower right")
    for column, (key, label, scale) in enumerate(
        (("seconds", "forward + backward (s)", 1.0), ("peak_bytes", "peak memory (MB)", 2.0**-20))
    ):
        ax = fig.add_subplot(grid[1, column])
        names = list(speed)
        positions = np.arange(len(names))
        for offset, (implementation, colour) in zip((-0.2, 0.2), (("pairloss", "tab:blue"), ("naive N×N", "tab:red"))):
            values = [(speed[name][implementation][key] or 0) * scale for name in names]
            ax.bar(positions + offset, values, width=0.4, color=colour, label=implementation)
        ax.set_xticks(positions, names, fontsize=9)
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"N = {n} embeddings", fontsize=10)
        if column == 0:
            ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
