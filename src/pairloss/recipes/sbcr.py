"""SBCR on a simulated CTR system: does shuffled self-boosted ranking match grouped multi-objective baselines?

Zhang et al. (CIKM 2024) claim that SBCR, trained on fully shuffled impressions with a ranking loss against the
scores dumped by the serving model, ranks at least as well (GAUC) as multi-objective methods that need
request-grouped batches, while its calibration module keeps LogLoss/ECE no worse than BCE alone. This recipe:

1. draws a world from :class:`pairloss.data.ctr_sim.CTRSimulator` (known true click probabilities) and three logs:
   an older one (trains the serving model), the training log and a test log;
2. trains a serving model with BCE on the older log and dumps its logits into the training log, so every
   impression carries the dumped scores and clicks of the other candidates of its request;
3. trains, with the same network, optimiser and number of epochs: BCE (shuffled), BCE + RankNet (grouped), JRC
   (grouped), RCR (grouped) and SBCR (shuffled), and scores the test log: AUC, GAUC (per request), LogLoss, ECE
   and PCOC of the predicted click probability. The true probabilities give an "oracle" row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.data.ctr_sim import CTRLog, CTRSimulator, reference_lists
from pairloss.losses.calibrated import (
    PiecewiseLinearCalibrator,
    bce_ranknet_loss,
    jrc_loss,
    rcr_loss,
    sbcr_loss,
)
from pairloss.metrics.calibration import ReliabilityCurve, ece, log_loss, pcoc, reliability_curve, reliability_diagram
from pairloss.metrics.ranking import auc, gauc
from pairloss.recipes.base import Recipe, RecipeResult, SeedResult
from pairloss.training.reporting import Reporter

__all__ = ["METHODS", "RECIPE", "CTRModel"]

#: Method name → whether its batches hold whole requests.
METHODS = {"BCE": False, "BCE+RankNet": True, "JRC": True, "RCR": True, "SBCR": False}
GROUPED_BASELINES = ("BCE+RankNet", "JRC", "RCR")


class CTRModel(nn.Module):
    """A two-hidden-layer MLP on the impression features, with ``outputs`` logits, and (for SBCR) a calibrator."""

    def __init__(self, in_features: int, hidden: int, outputs: int = 1, calibrator: nn.Module | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
        )
        self.calibrator = calibrator

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def _batches(log: CTRLog, grouped: bool, config: dict[str, Any], gen: torch.Generator) -> list[Tensor]:
    n = len(log)
    if not grouped:
        return list(torch.randperm(n, generator=gen).split(config["batch_size"]))
    n_requests = int(log.request.max()) + 1
    slot = torch.randperm(n_requests, generator=gen)[log.request] // config["requests_per_batch"]
    order = torch.argsort(slot, stable=True)
    _, counts = torch.unique_consecutive(slot[order], return_counts=True)
    batches = list(order.split(counts.tolist()))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _predict(model: CTRModel, log: CTRLog) -> Tensor:
    """Click probabilities of ``log`` under ``model``."""
    model.eval()
    with torch.no_grad():
        out = model(log.features)
        if out.ndim == 2:
            return torch.sigmoid(out[:, 1] - out[:, 0])
        prob = torch.sigmoid(out)
        if model.calibrator is not None:
            prob = model.calibrator(prob, log.request_features)
        return prob


def _train(
    method: str, log: CTRLog, config: dict[str, Any], seed: int, reporter: Reporter, refs: tuple[Tensor, Tensor] | None
) -> CTRModel:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    calibrator = None
    if method == "SBCR":
        assert log.dumped is not None
        quantiles = torch.linspace(0, 1, config["n_bins"] + 1)[1:-1]
        inner = torch.quantile(torch.sigmoid(log.dumped), quantiles)
        edges = torch.cat([torch.zeros(1), torch.unique(inner.clamp(1e-6, 1 - 1e-6)), torch.ones(1)])
        calibrator = PiecewiseLinearCalibrator(
            log.request_features.shape[1], n_bins=edges.numel() - 1, hidden=config["hidden"], edges=edges
        )
    model = CTRModel(log.features.shape[1], config["hidden"], 2 if method == "JRC" else 1, calibrator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    features, clicks = log.features, log.click
    steps = [(epoch, b) for epoch in range(config["epochs"]) for b in _batches(log, METHODS[method], config, gen)]
    model.train()
    for _, idx in reporter.track(steps, f"{method}: train"):
        out = model(features[idx])
        y = clicks[idx]
        if method == "BCE":
            loss = F.binary_cross_entropy_with_logits(out, y)
        elif method == "BCE+RankNet":
            loss = bce_ranknet_loss(out, y, log.request[idx], alpha=config["ranknet_alpha"])
        elif method == "JRC":
            loss = jrc_loss(out, y, log.request[idx], alpha=config["jrc_alpha"])
        elif method == "RCR":
            loss = rcr_loss(out, y, log.request[idx], alpha=config["rcr_alpha"])
        else:
            assert refs is not None and model.calibrator is not None
            calibrated = model.calibrator(torch.sigmoid(out), log.request_features[idx])
            loss = sbcr_loss(out, y, refs[0][idx], refs[1][idx], calibrated, alpha=config["sb_alpha"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def _metrics(prob: Tensor, log: CTRLog, ece_bins: int) -> dict[str, float]:
    p, y, g = prob.double().numpy(), log.click.numpy(), log.request.numpy()
    return {
        "AUC": auc(p, y),
        "GAUC": gauc(p, y, g),
        "LogLoss": log_loss(p, y),
        "ECE": ece(p, y, ece_bins),
        "PCOC": pcoc(p, y),
    }


def _curve_dict(curve: ReliabilityCurve) -> dict[str, list[float]]:
    return {"mean_prob": curve.mean_prob.tolist(), "frac_pos": curve.frac_pos.tolist(), "count": curve.count.tolist()}


def run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    """One seed: a new world and logs, the serving model, the five methods, their test metrics.

    Training runs on one thread: the networks are small, and on a shared CPU intra-op threads mostly wait.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_seed(config, seed, reporter)
    finally:
        torch.set_num_threads(threads)


def _run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    world = CTRSimulator(
        n_users=config["n_users"], n_items=config["n_items"], request_bias_std=config["request_bias_std"], seed=seed
    )
    older = world.sample(config["serving_requests"], seed=10_000 + seed)
    train = world.sample(config["train_requests"], seed=20_000 + seed)
    test = world.sample(config["test_requests"], seed=30_000 + seed)
    serving = _train("BCE", older, config, seed, reporter, None)
    serving.eval()
    with torch.no_grad():
        train = train.with_dumped(serving(train.features))
    refs = reference_lists(train)
    metrics: dict[str, dict[str, float]] = {
        "oracle (true p)": _metrics(test.true_prob, test, config["ece_bins"]),
        "serving (BCE, older log)": _metrics(_predict(serving, test), test, config["ece_bins"]),
    }
    curves: dict[str, dict[str, list[float]]] = {}
    for method in reporter.track(list(METHODS), "SBCR recipe: methods"):
        model = _train(method, train, config, seed, reporter, refs if method == "SBCR" else None)
        prob = _predict(model, test)
        metrics[method] = _metrics(prob, test, config["ece_bins"])
        curves[method] = _curve_dict(reliability_curve(prob.numpy(), test.click.numpy(), config["ece_bins"]))
    return SeedResult(
        metrics=metrics,
        extra={
            "curves": curves,
            "train_impressions": len(train),
            "test_impressions": len(test),
            "train_ctr": float(train.click.mean()),
        },
    )


def make_figure(result: RecipeResult, path: Path) -> None:
    """Reliability diagrams (first seed) and GAUC per method (mean ± std over seeds)."""
    fig, (ax_rel, ax_gauc) = plt.subplots(1, 2, figsize=(10, 4.2))
    first = result.seeds[min(result.seeds)]
    curves = {
        name: ReliabilityCurve(
            np.linspace(0, 1, len(c["count"]) + 1),
            np.array(c["mean_prob"], dtype=float),
            np.array(c["frac_pos"], dtype=float),
            np.array(c["count"], dtype=np.int64),
        )
        for name, c in first.extra["curves"].items()
    }
    reliability_diagram(curves, ax_rel, title=f"reliability on the test log (seed {min(result.seeds)})")
    names = [m for m in result.summary if m != "BCE" and "oracle" not in m]
    diffs = [_paired(result, "GAUC", m, "BCE") for m in names]
    colors = ["tab:red" if m == "SBCR" else ("tab:gray" if "serving" in m else "tab:blue") for m in names]
    ax_gauc.barh(names, [d[0] for d in diffs], xerr=[d[1] for d in diffs], color=colors)
    ax_gauc.axvline(0.0, color="black", linewidth=0.8)
    ax_gauc.set_xlabel(f"GAUC − GAUC of BCE, paired by seed ({len(result.seeds)} seeds)")
    ax_gauc.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _paired(result: RecipeResult, metric: str, row: str, reference: str) -> tuple[float, float]:
    """Mean and sample std over seeds of ``metric(row) − metric(reference)`` (the same world and logs per seed)."""
    diffs = np.array(
        [r.metrics[row][metric] - r.metrics[reference][metric] for r in result.seeds.values()], dtype=float
    )
    return float(diffs.mean()), float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0


def verdict(result: RecipeResult) -> str:
    """Whether shuffled SBCR reached the best grouped baseline's GAUC and BCE's LogLoss/ECE (on the means)."""
    s = result.summary

    def mean(row: str, metric: str) -> float:
        return s[row][metric]["mean"]

    best = max(GROUPED_BASELINES, key=lambda m: mean(m, "GAUC"))
    gauc_held = mean("SBCR", "GAUC") >= mean(best, "GAUC")
    ll_held = mean("SBCR", "LogLoss") <= mean("BCE", "LogLoss")
    ece_held = mean("SBCR", "ECE") <= mean("BCE", "ECE")
    d_gauc = _paired(result, "GAUC", "SBCR", best)
    d_ll = _paired(result, "LogLoss", "SBCR", "BCE")
    d_ece = _paired(result, "ECE", "SBCR", "BCE")
    parts = [
        f"GAUC: SBCR {mean('SBCR', 'GAUC'):.4f} vs best grouped baseline {best} {mean(best, 'GAUC'):.4f}, paired "
        f"difference {d_gauc[0]:+.4f} ± {d_gauc[1]:.4f} → claim " + ("held" if gauc_held else "did not hold"),
        f"calibration: SBCR − BCE LogLoss {d_ll[0]:+.4f} ± {d_ll[1]:.4f}, ECE {d_ece[0]:+.4f} ± {d_ece[1]:.4f} → "
        "claim " + ("held" if ll_held and ece_held else "did not hold"),
    ]
    return "; ".join(parts) + f" (means over {len(result.seeds)} seed(s))."


RECIPE = Recipe(
    name="sbcr",
    title="SBCR: self-boosted calibrated ranking on a simulated CTR system",
    paper="Zhang, Liu, Bao, Yu, Song. A self-boosted framework for calibrated ranking. CIKM 2024",
    claim="Shuffled SBCR reaches the GAUC of grouped multi-objective baselines with LogLoss/ECE no worse than BCE",
    config={
        "n_users": 2000,
        "n_items": 1000,
        "request_bias_std": 0.8,
        "serving_requests": 3000,
        "train_requests": 6000,
        "test_requests": 3000,
        "epochs": 4,
        "batch_size": 512,
        "requests_per_batch": 16,
        "hidden": 64,
        "lr": 2e-3,
        "ranknet_alpha": 1.0,
        "jrc_alpha": 0.5,
        "rcr_alpha": 0.5,
        "sb_alpha": 1.0,
        "n_bins": 16,
        "ece_bins": 20,
    },
    quick={"serving_requests": 800, "train_requests": 1500, "test_requests": 800, "epochs": 2},
    run_seed=run_seed,
    make_figure=make_figure,
    verdict=verdict,
)
