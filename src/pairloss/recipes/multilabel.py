"""Recipe ``multilabel``: univariate vs pairwise vs reweighted multi-label ranking losses as the label count grows.

Wu, Li, Xu, Zhu (NeurIPS 2021) show that the plain univariate surrogate has an ``O(c)`` generalisation bound for the
ranking loss, the pairwise surrogate ``O(√c)`` and their reweighted univariate loss (``u3``) ``O(√c)`` at ``O(c)``
cost. Here linear models (and a small MLP) are trained with each loss on :func:`make_multilabel` data with
``c ∈ {5, …, 200}`` labels (about two relevant labels per sample, so the labels get sparser as ``c`` grows), and the
test ranking loss (paper convention) and the loss's forward + backward time per batch are measured.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from pairloss.data.multilabel import make_multilabel
from pairloss.losses.multilabel import multilabel_pairwise_loss, multilabel_univariate_loss
from pairloss.metrics.multilabel import label_ranking_average_precision, ranking_loss
from pairloss.recipes.base import Recipe, RecipeResult, SeedResult
from pairloss.training.reporting import Reporter

__all__ = ["RECIPE"]

LOSS_NAMES = {"pairwise": "pairwise (pa)", "u1": "u1 (plain)", "u2": "u2", "u3": "u3 (reweighted)", "u4": "u4"}


def _loss(name: str, scores: Tensor, labels: Tensor) -> Tensor:
    if name == "pairwise":
        return multilabel_pairwise_loss(scores, labels)
    return multilabel_univariate_loss(scores, labels, weighting=name)


def _model(kind: str, n_features: int, n_labels: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(n_features, n_labels)
    return nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))


def _train(config: dict[str, Any], kind: str, loss: str, x: Tensor, y: Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = _model(kind, x.shape[1], y.shape[1], config["hidden"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    generator = torch.Generator().manual_seed(seed)
    for _ in range(config["epochs"]):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], config["batch_size"]):
            batch = order[start : start + config["batch_size"]]
            optimizer.zero_grad()
            _loss(loss, model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model


def _time_ms(loss: str, labels: Tensor, repeats: int) -> float:
    """Median CPU time of one forward + backward of ``loss`` on ``labels.shape`` random scores, in ms.

    CPU time of this process (``time.process_time``), not wall time: with the recipe's single thread it measures the
    loss's own work and stays meaningful on a machine shared with other jobs, where wall time mostly measures waiting.
    """
    scores = torch.randn(labels.shape, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        start = time.process_time()
        _loss(loss, scores, labels).backward()
        times.append(time.process_time() - start)
    return 1000 * float(np.median(times[1:]))


def run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    previous = torch.get_num_threads()
    torch.set_num_threads(config["threads"])
    try:
        return _run_seed(config, seed, reporter)
    finally:
        torch.set_num_threads(previous)


def _run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    metrics: dict[str, dict[str, float]] = {}
    timing: dict[str, dict[str, float]] = {}
    jobs = [(c, kind, loss) for c in config["labels"] for kind in config["models"] for loss in config["losses"]]
    data = {
        c: make_multilabel(
            config["n_train"] + config["n_test"],
            c,
            n_features=config["n_features"],
            avg_labels=config["avg_labels"],
            noise=config["noise"],
            seed=1000 * seed + c,
        )
        for c in config["labels"]
    }
    for c, item in data.items():
        test = slice(config["n_train"], None)
        bayes = item.true_scores[test] if item.true_scores is not None else None
        if bayes is not None:
            metrics.setdefault("ideal scorer t(x)", {})[f"RL c={c}"] = ranking_loss(
                bayes, item.labels[test], convention="paper"
            )
    for c, kind, loss in reporter.track(jobs, "multilabel: (c, model, loss)"):
        item = data[c]
        x = torch.from_numpy(np.asarray(item.features))
        y = torch.from_numpy(item.labels).float()
        n = config["n_train"]
        model = _train(config, kind, loss, x[:n], y[:n], seed)
        with torch.no_grad():
            scores = model(x[n:]).numpy()
        row = f"{kind} {LOSS_NAMES[loss]}"
        metrics.setdefault(row, {})[f"RL c={c}"] = ranking_loss(scores, item.labels[n:], convention="paper")
        metrics[row][f"AP c={c}"] = label_ranking_average_precision(scores, item.labels[n:])
        if kind == config["models"][0]:
            timing.setdefault(loss, {})[str(c)] = _time_ms(loss, y[: config["timing_batch"]], config["timing_repeats"])
    c_max = max(config["labels"])
    for loss, per_c in timing.items():
        metrics.setdefault(f"{config['models'][0]} {LOSS_NAMES[loss]}", {})[f"ms/batch c={c_max}"] = per_c[str(c_max)]
    return SeedResult(metrics=metrics, extra={"timing_ms": timing})


def _mean_over_seeds(result: RecipeResult, row: str, metric: str) -> float:
    entry = result.summary.get(row, {}).get(metric)
    return float(entry["mean"]) if entry else math.nan


def make_figure(result: RecipeResult, path: Path) -> None:
    config = result.config
    cs = config["labels"]
    fig, (ax_rl, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    for loss in config["losses"]:
        for kind, style in zip(config["models"], ("-o", "--s")):
            row = f"{kind} {LOSS_NAMES[loss]}"
            means = [_mean_over_seeds(result, row, f"RL c={c}") for c in cs]
            stds = [result.summary.get(row, {}).get(f"RL c={c}", {}).get("std", 0.0) for c in cs]
            ax_rl.errorbar(cs, means, yerr=stds, fmt=style, capsize=2, label=f"{kind} {LOSS_NAMES[loss]}")
        times = [float(np.mean([r.extra["timing_ms"][loss][str(c)] for r in result.seeds.values()])) for c in cs]
        ax_t.plot(cs, times, "-o", label=LOSS_NAMES[loss])
    ideal = [_mean_over_seeds(result, "ideal scorer t(x)", f"RL c={c}") for c in cs]
    ax_rl.plot(cs, ideal, ":k", label="ideal scorer t(x)")
    ax_rl.set(xscale="log", xlabel="number of labels c", ylabel="test ranking loss (lower is better)")
    ax_rl.set_title("Test ranking loss vs c")
    ax_rl.legend(fontsize=7, ncol=2)
    ax_t.set(xscale="log", yscale="log", xlabel="number of labels c", ylabel="CPU ms per forward + backward")
    ax_t.set_title(f"Loss time, batch of {config['timing_batch']}")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def verdict(result: RecipeResult) -> str:
    config = result.config
    kind = config["models"][0]
    cs = config["labels"]

    def gap(loss: str, c: int) -> float:
        plain = _mean_over_seeds(result, f"{kind} {LOSS_NAMES['u1']}", f"RL c={c}")
        return plain - _mean_over_seeds(result, f"{kind} {LOSS_NAMES[loss]}", f"RL c={c}")

    parts = []
    for loss in ("pairwise", "u3"):
        if loss not in config["losses"] or "u1" not in config["losses"]:
            continue
        gaps = [gap(loss, c) for c in cs]
        wins = sum(g > 0 for g in gaps)
        growing = gaps[-1] > gaps[0]
        parts.append(
            f"{LOSS_NAMES[loss]} beats u1 ({kind}) at {wins}/{len(cs)} label counts, gap in ranking loss "
            f"{gaps[0]:+.4f} at c={cs[0]} and {gaps[-1]:+.4f} at c={cs[-1]} "
            f"({'growing' if growing else 'not growing'} with c)"
        )
    c_max = str(max(cs))
    times = {
        loss: float(np.mean([r.extra["timing_ms"][loss][c_max] for r in result.seeds.values()]))
        for loss in ("pairwise", "u3")
        if loss in config["losses"]
    }
    if len(times) == 2:
        parts.append(f"pairwise costs {times['pairwise'] / times['u3']:.1f}× the time of u3 at c={c_max}")
    compared = [loss for loss in ("pairwise", "u3") if loss in config["losses"]]
    held = all(gap(loss, cs[-1]) > 0 and gap(loss, cs[-1]) > gap(loss, cs[0]) for loss in compared)
    everywhere = all(gap(loss, c) > 0 for loss in compared for c in cs)
    if held and everywhere:
        head = "Claim held"
    elif held:
        head = "Claim held for the larger label counts only"
    else:
        head = "Claim did not hold"
    return f"{head}: " + "; ".join(parts) + "."


RECIPE = Recipe(
    name="multilabel",
    title="Univariate vs pairwise vs reweighted multi-label ranking losses as c grows",
    paper="Wu, Li, Xu, Zhu. Rethinking and Reweighting the Univariate Losses for Multi-Label Ranking. NeurIPS 2021",
    claim=(
        "The pairwise and the reweighted univariate (u3) losses reach a lower test ranking loss than the plain "
        "univariate loss (u1), increasingly with the number of labels c, and u3 costs O(c) instead of O(c²)."
    ),
    config={
        "labels": [5, 10, 20, 50, 100, 200],
        "models": ["linear", "mlp"],
        "losses": ["pairwise", "u1", "u2", "u3", "u4"],
        "n_train": 1500,
        "n_test": 1500,
        "n_features": 32,
        "avg_labels": 2.0,
        "noise": 1.0,
        "hidden": 64,
        "epochs": 20,
        "batch_size": 128,
        "lr": 0.01,
        "timing_batch": 128,
        "timing_repeats": 5,
        "threads": 1,
    },
    quick={"labels": [5, 20, 100], "models": ["linear"], "epochs": 10, "n_train": 1000, "n_test": 1000},
    run_seed=run_seed,
    make_figure=make_figure,
    verdict=verdict,
)
