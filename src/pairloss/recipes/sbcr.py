"""SBCR on a simulated CTR system: does shuffled self-boosted ranking beat grouped multi-objective calibrated ranking?

Zhang, Liu, Bao, Yu and Song (CIKM 2024) name two problems of multi-objective calibrated ranking (a pointwise plus a
ranking loss on one output): the ranking loss needs every candidate of a request in one mini-batch, which rules out
shuffling the data, and the two losses pull one prediction in conflicting directions. SBCR compares each impression
with the scores that the deployed (a few versions older) model dumped for the other candidates of its request, so
batches can be shuffled, and calibrates with a separate monotone module. The recipe tests it on
:class:`pairloss.data.ctr_sim.CTRSimulator` (known click probabilities, requests of 20–200 candidates):

* the ranking tower has batch statistics (Linear → BatchNorm → ReLU), so what a batch holds matters;
* training streams over ``rounds`` daily logs; the deployed model of round 1 is a legacy BCE model trained on an
  earlier log, the deployed model of round ``t + 1`` is the SBCR model at the end of round ``t`` (the self-boosting
  loop), and its logits are dumped into the log of the round;
* BCE, BCE (grouped), BCE + RankNet, JRC and RCR (grouped, the multi-objective baselines) and SBCR, SBCR (grouped)
  and SBCR (fixed server) get the same network, the same optimiser updates and the same tuning budget;
* test metrics: GAUC, AUC, LogLoss, ECE and PCOC of the predicted click probability (the verdicts use the PCOC
  error ``|PCOC − 1|``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.data.ctr_sim import CTRLog, CTRSimulator, ReferenceLists, RequestBatches, reference_lists
from pairloss.losses.calibrated import PiecewiseLinearCalibrator, bce_ranknet_loss, jrc_loss, rcr_loss, sbcr_loss
from pairloss.metrics.calibration import ReliabilityCurve, ece, log_loss, pcoc, reliability_curve, reliability_diagram
from pairloss.metrics.ranking import auc, gauc
from pairloss.models.mlp import MLPEmbedder
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
from pairloss.recipes.report import plot_verdicts
from pairloss.recipes.tuning import Float
from pairloss.training import FitConfig, fit, optimizer_step

__all__ = ["RECIPE", "CTRModel", "SBCRData", "click_probability", "ctr_metrics"]

SBCR = "SBCR (variant)"
#: ``|PCOC − 1|``, the calibration error of the average prediction (PCOC = 1: calibrated on average); lower is better.
PCOC_ERROR = "PCOC error"
MULTI_OBJECTIVE = ("BCE+RankNet", "JRC", "RCR")
LEARNING_RATE = Float(3e-4, 1e-2, log=True)


class CTRModel(nn.Module):
    """The ranking tower (two Linear → BatchNorm → ReLU layers, then ``outputs`` logits) and SBCR's calibrator.

    ``forward`` gives the ranking logits (``[n]``, or ``[n, 2]`` for JRC); :func:`click_probability` the predicted
    click probability (the calibrator's output when there is one).
    """

    def __init__(
        self, in_features: int, hidden: int, outputs: int = 1, calibrator: PiecewiseLinearCalibrator | None = None
    ) -> None:
        super().__init__()
        self.tower = MLPEmbedder(in_features, outputs, (hidden, hidden), batch_norm=True)
        self.calibrator = calibrator

    def forward(self, features: Tensor) -> Tensor:
        out = self.tower(features)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


@torch.no_grad()
def click_probability(model: CTRModel, log: CTRLog, chunk: int = 65536) -> Tensor:
    """The click probability of every impression of ``log`` under ``model`` in evaluation mode."""
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(log), chunk):
        part = slice(start, start + chunk)
        out = model(log.features[part])
        if out.ndim == 2:  # JRC: p = σ(f¹ − f⁰)
            parts.append(torch.sigmoid(out[:, 1] - out[:, 0]))
            continue
        prob = torch.sigmoid(out)
        if model.calibrator is not None:
            prob = model.calibrator(prob, log.request_features[part])
        parts.append(prob)
    model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0)


def ctr_metrics(prob: Tensor, log: CTRLog, ece_bins: int) -> dict[str, float]:
    """GAUC (per request, weighted by its size), AUC, LogLoss, ECE (equal-width bins), PCOC, ``|PCOC − 1|``."""
    p, y, g = prob.double().clamp(0, 1).numpy(), log.click.numpy(), log.request.numpy()
    ratio = pcoc(p, y)
    return {
        "GAUC": gauc(p, y, g),
        "AUC": auc(p, y),
        "LogLoss": log_loss(p, y),
        "ECE": ece(p, y, ece_bins),
        "PCOC": ratio,
        PCOC_ERROR: abs(ratio - 1.0),
    }


@dataclass(frozen=True)
class SBCRData:
    """The training side of the simulated system.

    Attributes:
        rounds: the training log of each round (its validation requests removed).
        legacy: the state of the legacy serving model (BCE on the warm-up log), the deployed model of round 1.
        edges: the calibrator's bin edges (quantiles of the legacy model's predictions on the first round).
    """

    rounds: tuple[CTRLog, ...]
    legacy: dict[str, Tensor]
    edges: Tensor


def _concat(logs: list[CTRLog]) -> CTRLog:
    offsets = np.cumsum([0, *(log.n_requests for log in logs[:-1])])
    return CTRLog(
        user=torch.cat([log.user for log in logs]),
        item=torch.cat([log.item for log in logs]),
        context=torch.cat([log.context for log in logs]),
        request=torch.cat([log.request + int(o) for log, o in zip(logs, offsets, strict=True)]),
        click=torch.cat([log.click for log in logs]),
        true_prob=torch.cat([log.true_prob for log in logs]),
    )


def _bce_model(config: Mapping[str, Any], in_features: int) -> CTRModel:
    return CTRModel(in_features, config["hidden"])


def _train_legacy(warmup: CTRLog, config: dict[str, Any], ctx: PrepareContext) -> CTRModel:
    """The legacy serving model: BCE on shuffled batches of the warm-up log."""
    torch.manual_seed(config["world_seed"])
    model = _bce_model(config, warmup.features.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["legacy_lr"])
    batches = RequestBatches(warmup.request, config["batch_size"], grouped=False, seed=config["world_seed"])
    features, clicks = warmup.features, warmup.click

    def update(step: int) -> float:
        index = batches(step)
        return optimizer_step(
            optimizer, lambda: F.binary_cross_entropy_with_logits(model(features[index]), clicks[index])
        )

    fit(
        model,
        optimizer,
        update,
        FitConfig(updates=batches.batches_per_epoch, threads=1, description="legacy model"),
        reporter=ctx.reporter,
    )
    return model


def prepare(ctx: PrepareContext) -> Splits:
    """One world, a warm-up log (the legacy serving model), ``rounds`` training logs and a test log.

    The validation split is a share of the requests of every round (held out from training).
    """
    config = dict(ctx.config)
    world = CTRSimulator(
        n_users=config["n_users"],
        n_items=config["n_items"],
        request_bias_std=config["request_bias_std"],
        seed=config["world_seed"],
    )
    base = 1000 * config["world_seed"]

    def sample(n_requests: int, seed: int) -> CTRLog:
        return world.sample(n_requests, seed, config["min_candidates"], config["max_candidates"])

    warmup = sample(config["warmup_requests"], base + 1)
    fits, validations = [], []
    for r in range(config["rounds"]):
        fit_part, validation_part = sample(config["round_requests"], base + 10 + r).split_requests(
            config["validation_fraction"], seed=base + 20 + r
        )
        fits.append(fit_part)
        validations.append(validation_part)
    test = sample(config["test_requests"], base + 2)
    legacy = _train_legacy(warmup, config, ctx)
    first = click_probability(legacy, fits[0])
    inner = torch.quantile(first.double(), torch.linspace(0, 1, config["n_bins"] + 1, dtype=torch.double)[1:-1])
    edges = torch.cat([torch.zeros(1), torch.unique(inner.float().clamp(1e-6, 1 - 1e-6)), torch.ones(1)])
    data = SBCRData(tuple(fits), {k: v.clone() for k, v in legacy.state_dict().items()}, edges)
    validation = _concat(validations)
    sizes = torch.bincount(test.request)
    info = {
        "simulator": "pairloss.data.ctr_sim.CTRSimulator",
        "impressions": {
            "warm-up": len(warmup),
            "fit (all rounds)": sum(len(f) for f in fits),
            "validation": len(validation),
            "test": len(test),
        },
        "rounds": config["rounds"],
        "candidates per request (test)": {
            "min": int(sizes.min()),
            "mean": float(sizes.float().mean()),
            "max": int(sizes.max()),
        },
        "test CTR": float(test.click.mean()),
    }
    return Splits(data, validation, test, info)


class _RoundSchedule:
    """The step → (round, batch of impressions) map of a streaming run: ``epochs_per_round`` epochs per round."""

    def __init__(self, rounds: tuple[CTRLog, ...], batch_size: int, grouped: bool, epochs: int, seed: int) -> None:
        self.batches = [
            RequestBatches(log.request, batch_size, grouped=grouped, seed=seed + r) for r, log in enumerate(rounds)
        ]
        lengths = [b.batches_per_epoch * epochs for b in self.batches]
        self.starts = np.cumsum([0, *lengths[:-1]]).tolist()
        self.updates = int(sum(lengths))

    def __call__(self, step: int) -> tuple[int, int, Tensor]:
        """``(round, first step of the round, impression indices of the step)``."""
        r = int(np.searchsorted(self.starts, step, side="right")) - 1
        return r, self.starts[r], self.batches[r](step - self.starts[r])


def _round_references(server: CTRModel, log: CTRLog) -> ReferenceLists:
    """The deployed model's logits dumped into ``log`` and turned into reference lists."""
    was_training = server.training
    server.eval()
    with torch.no_grad():
        dumped = torch.cat([server(log.features[i : i + 65536]) for i in range(0, len(log), 65536)])
    server.train(was_training)
    return reference_lists(log.with_dumped(dumped))


def run(ctx: RunContext) -> RunResult:
    """Train one method over the rounds (or evaluate a reference row) and score ``ctx.evaluation``."""
    config, settings = ctx.config, ctx.settings
    evaluation: CTRLog = ctx.evaluation
    data: SBCRData = ctx.data.fit
    kind = settings["kind"]
    if kind == "oracle":
        return RunResult(ctr_metrics(evaluation.true_prob, evaluation, config["ece_bins"]))
    in_features = data.rounds[0].features.shape[1]
    legacy = _bce_model(config, in_features)
    legacy.load_state_dict(data.legacy)
    if kind == "legacy":
        return RunResult(ctr_metrics(click_probability(legacy, evaluation), evaluation, config["ece_bins"]))

    loss_name = settings["loss"]
    model = CTRModel(in_features, config["hidden"], outputs=2 if loss_name == "JRC" else 1)
    if loss_name == "SBCR":
        context = data.rounds[0].request_features.shape[1]
        model.calibrator = PiecewiseLinearCalibrator(
            context, data.edges.numel() - 1, config["calibrator_hidden"], data.edges
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    schedule = _RoundSchedule(
        data.rounds, config["batch_size"], settings["grouped"], config["epochs_per_round"], ctx.seed
    )
    server = copy.deepcopy(legacy)
    cache: dict[int, ReferenceLists] = {}

    def references(r: int, round_start: int, step: int) -> ReferenceLists:
        if step == round_start and r > 0 and settings.get("self_boost", False):
            server.tower.load_state_dict(model.tower.state_dict())  # the SBCR model of round r − 1 is deployed
            cache.clear()
        if r not in cache:
            cache.clear()
            cache[r] = _round_references(server, data.rounds[r])
        return cache[r]

    def update(step: int) -> float:
        r, round_start, index = schedule(step)
        log = data.rounds[r]
        refs = references(r, round_start, step) if loss_name == "SBCR" else None
        x, y, group = log.features[index], log.click[index], log.request[index]

        def loss() -> Tensor:
            out = model(x)
            if loss_name == "BCE":
                return F.binary_cross_entropy_with_logits(out, y)
            if loss_name == "BCE+RankNet":
                return bce_ranknet_loss(out, y, group, alpha=settings["alpha"])
            if loss_name == "JRC":
                return jrc_loss(out, y, group, alpha=settings["alpha"])
            if loss_name == "RCR":
                return rcr_loss(out, y, group, alpha=settings["alpha"])
            assert refs is not None and model.calibrator is not None
            ref_scores, ref_labels = refs.batch(index)
            calibrated = model.calibrator(torch.sigmoid(out), log.request_features[index])
            return sbcr_loss(out, y, ref_scores, ref_labels, calibrated, alpha=settings["alpha"])

        return optimizer_step(optimizer, loss)

    validation: CTRLog = ctx.data.validation
    result = fit(
        {"model": model, "server": server},
        optimizer,
        update,
        FitConfig(updates=schedule.updates, validate_every=config["validate_every"], threads=1, description=ctx.label),
        validate=lambda: ctr_metrics(click_probability(model, validation), validation, config["ece_bins"])["GAUC"],
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    prob = click_probability(model, evaluation)
    extra: dict[str, Any] = {"validation_gauc": result.validation, "best_update": result.best_update}
    if ctx.phase == "final":
        curve = reliability_curve(prob.double().numpy(), evaluation.click.numpy(), config["ece_bins"])
        extra["reliability"] = {
            "mean_prob": curve.mean_prob.tolist(),
            "frac_pos": curve.frac_pos.tolist(),
            "count": curve.count.tolist(),
        }
    return RunResult(ctr_metrics(prob, evaluation, config["ece_bins"]), extra)


def _curve(entry: dict[str, Any]) -> ReliabilityCurve:
    count = np.array(entry["count"], dtype=np.int64)
    return ReliabilityCurve(
        np.linspace(0, 1, count.size + 1),
        np.array(entry["mean_prob"], dtype=float),
        np.array(entry["frac_pos"], dtype=float),
        count,
    )


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Three stacked panels: GAUC verdicts, LogLoss verdicts, and reliability diagrams of the first seed."""
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 12), gridspec_kw={"height_ratios": [1.1, 1.1, 1.3]})
    for ax, metric in zip(axes[:2], ("GAUC", "LogLoss"), strict=True):
        plot_verdicts(ax, result.verdicts, metric=metric)
        ax.set_title(f"{metric}: paired difference over seeds (positive favours the claim)", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9, loc="best")
    per_seed = result.per_seed
    if per_seed:
        first = per_seed[min(per_seed)]
        shown = ("BCE", "BCE+RankNet", "JRC", "RCR", SBCR)
        curves = {
            m: _curve(first[m]["extra"]["reliability"])
            for m in shown
            if "reliability" in first.get(m, {}).get("extra", {})
        }
        reliability_diagram(curves, axes[2], title=f"reliability on the test log (seed {min(per_seed)})")
        axes[2].legend(fontsize=9, loc="upper left")
        axes[2].tick_params(labelsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _method(name: str, loss: str, *, grouped: bool, alpha: Float | None, description: str, **extra: Any) -> Method:
    space: dict[str, Float] = {"lr": LEARNING_RATE}
    if alpha is not None:
        space["alpha"] = alpha
    return Method(
        name,
        space=space,
        settings={"kind": "trained", "loss": loss, "grouped": grouped, **extra},
        description=description,
    )


_SBCR_SETTINGS = {"kind": "trained", "loss": "SBCR", "self_boost": True}
METHODS = (
    Method("oracle (true p)", settings={"kind": "oracle"}, description="the simulator's click probabilities"),
    Method("legacy server (BCE)", settings={"kind": "legacy"}, description="the deployed model of round 1"),
    _method("BCE", "BCE", grouped=False, alpha=None, description="pointwise BCE, shuffled batches"),
    Method(
        "BCE (grouped)",
        settings={"kind": "trained", "loss": "BCE", "grouped": True},
        tuned_as="BCE",
        description="BCE on request-grouped batches",
    ),
    _method(
        "BCE+RankNet",
        "BCE+RankNet",
        grouped=True,
        alpha=Float(0.05, 5.0, log=True),
        description="BCE + α·in-batch RankNet, request-grouped batches",
    ),
    _method(
        "JRC",
        "JRC",
        grouped=True,
        alpha=Float(0.05, 0.95),
        description="JRC (Sheng et al., KDD 2023), two logits, request-grouped batches",
    ),
    _method(
        "RCR",
        "RCR",
        grouped=True,
        alpha=Float(0.05, 0.95),
        description="RCR (Bai et al., CIKM 2023), sigmoid CE + ListCE, request-grouped batches",
    ),
    Method(
        SBCR,
        space={"lr": LEARNING_RATE, "alpha": Float(0.05, 5.0, log=True)},
        settings={**_SBCR_SETTINGS, "grouped": False},
        description="BCE + α·self-boosted pairwise loss + calibrator, shuffled, self-boosted server",
    ),
    Method(
        "SBCR (variant, grouped)",
        settings={**_SBCR_SETTINGS, "grouped": True},
        tuned_as=SBCR,
        description="SBCR on request-grouped batches",
    ),
    Method(
        "SBCR (variant, fixed server)",
        settings={**_SBCR_SETTINGS, "grouped": False, "self_boost": False},
        tuned_as=SBCR,
        description="SBCR with the legacy model deployed in every round",
    ),
)

_QUALITY = ("GAUC", "AUC", "LogLoss", "ECE", PCOC_ERROR)
CLAIMS = (
    *(Claim(f"SBCR beats {m}", SBCR, m, _QUALITY) for m in MULTI_OBJECTIVE),
    Claim("SBCR beats BCE", SBCR, "BCE", _QUALITY),
    Claim("shuffling helps SBCR", SBCR, "SBCR (variant, grouped)", _QUALITY),
    Claim("shuffling helps BCE", "BCE", "BCE (grouped)", _QUALITY),
    Claim("self-boosting helps SBCR", SBCR, "SBCR (variant, fixed server)", ("GAUC", "LogLoss")),
)

RECIPE = Experiment(
    name="sbcr",
    title="SBCR: self-boosted calibrated ranking on a simulated CTR system with a self-boosting loop",
    paper="Zhang, Liu, Bao, Yu, Song. A self-boosted framework for calibrated ranking. CIKM 2024",
    claim=(
        "Shuffled SBCR ranks better (GAUC) than request-grouped multi-objective calibrated ranking, with better "
        "calibration (LogLoss, ECE); shuffling and the self-boosting loop help"
    ),
    config={
        "trials": 10,
        "world_seed": 7,
        "n_users": 3000,
        "n_items": 2000,
        "request_bias_std": 0.8,
        "min_candidates": 20,
        "max_candidates": 200,
        "warmup_requests": 800,
        "rounds": 3,
        "round_requests": 1100,
        "validation_fraction": 0.1,
        "test_requests": 800,
        "epochs_per_round": 2,
        "batch_size": 1024,
        "hidden": 64,
        "calibrator_hidden": 32,
        "n_bins": 16,
        "legacy_lr": 2e-3,
        "validate_every": 100,
        "ece_bins": 20,
    },
    quick={
        "trials": 2,
        "n_users": 400,
        "n_items": 300,
        "warmup_requests": 100,
        "rounds": 2,
        "round_requests": 120,
        "test_requests": 80,
        "epochs_per_round": 1,
        "batch_size": 512,
        "validate_every": 20,
    },
    methods=METHODS,
    claims=CLAIMS,
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective="GAUC",
    lower_is_better=frozenset({"LogLoss", "ECE", PCOC_ERROR}),
    tables=(
        ("Ranking", ("GAUC", "AUC")),
        ("Calibration", ("LogLoss", "ECE", "PCOC", PCOC_ERROR)),
    ),
)
