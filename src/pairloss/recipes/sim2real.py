"""Recipe ``sim2real``: a pairwise loss on (simulated, real) image pairs vs simulation-only and naive mixing.

Viereck, Saenko, Platt (2018) train a visuomotor policy on simulated depth images and transfer it to a real depth
camera with a pairwise loss on a few (simulated, real) images of the same scene state; they report that this beats
training only in simulation and combining real and simulated data naively. No robot or depth camera exists here:
:mod:`pairloss.data.depth` draws a peg-in-hole scene and renders each state twice, by a clean simulator and by a
"real" sensor model. The policy is a small CNN (:class:`pairloss.models.policy.DepthPolicy`) choosing one of five
actions (four moves and ``insert``).

Rows (every policy makes the same number of updates, on simulated batches of the same size):

* ``sim-only``: cross-entropy on labelled simulated images;
* ``naive mix``: the same plus ``real_weight`` × cross-entropy on a batch of the ``pairs`` labelled real images;
* ``pairwise``: the same simulated cross-entropy plus ``pair_weight`` ×
  :class:`pairloss.losses.domain.SimRealPairLoss` on the embeddings of a batch of the ``pairs`` (simulated, real)
  pairs (the real labels are not used);
* ``real-trained (reference)``: cross-entropy on ``real_reference`` labelled real images and nothing else, to show
  what the task allows with plenty of real data (not a compared method).

Tuning: every compared method gets ``trials`` Optuna trials on the validation split (``validation`` labelled real
images, separate from the pairs), over the learning rate and its own weight. Metrics on held-out states: action
accuracy on real and on simulated images, and the success rate of closed-loop rollouts with real-sensor
observations (start misaligned, take the policy's action until it inserts or ``rollout_steps`` pass; success =
insertion within tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.data.depth import (
    ACTIONS,
    TOLERANCE,
    DepthTask,
    apply_action,
    normalize_depth,
    real_sensor,
    sample_states,
    simulate_depth_task,
)
from pairloss.losses.domain import SimRealPairLoss
from pairloss.models.policy import DepthPolicy
from pairloss.recipes._figures import DPI, FONT, WIDTH, stacked, verdict_panel
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
from pairloss.recipes.tuning import Float
from pairloss.training.loop import FitConfig, fit, optimizer_step

__all__ = ["RECIPE", "DepthSplit", "rollout_success"]

METRICS = ("real accuracy", "real rollout success")


@dataclass(frozen=True)
class DepthSplit:
    """Labelled images of one split: ``images [n, 1, S, S]`` and ``actions [n]`` (one domain)."""

    images: Tensor
    actions: Tensor


@dataclass(frozen=True)
class FitData:
    """The training side: simulated images with labels, the real pairs, and many real images (reference only)."""

    sim: DepthSplit
    pairs: DepthTask
    real_reference: DepthSplit


@dataclass(frozen=True)
class TestData:
    """Held-out states rendered both ways, and the seed of the rollouts' start states."""

    states: DepthTask
    rollout_seed: int


@torch.no_grad()
def rollout_success(policy: nn.Module, n: int, steps: int, size: int, seed: int) -> float:
    """Closed-loop success rate: real-sensor observations, the policy's actions applied to the true state."""
    states, poses = sample_states(n, seed, aligned_fraction=0.0)
    active = np.ones(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    for t in range(steps):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        observation = normalize_depth(real_sensor(states[index], poses[index], size, seed=seed * 1000 + t))
        actions = policy(observation).argmax(dim=1).numpy()
        insert = actions == len(ACTIONS) - 1
        aligned = np.abs(states[index, 2:4]).max(axis=1) <= TOLERANCE
        success[index[insert & aligned]] = True
        active[index[insert]] = False
        states[index] = apply_action(states[index], actions)
    return float(success.mean())


def prepare(ctx: PrepareContext) -> Splits:
    """Disjoint sets of states (different seeds): simulated training set, real pairs, validation and test."""
    config = ctx.config
    size = config["image_size"]
    sim = simulate_depth_task(config["sim_images"], seed=1, size=size)
    pairs = simulate_depth_task(config["pairs"], seed=2, size=size)
    validation = simulate_depth_task(config["validation"], seed=3, size=size)
    test = simulate_depth_task(config["test"], seed=4, size=size)
    reference = simulate_depth_task(config["real_reference"], seed=5, size=size)
    fit_data = FitData(DepthSplit(sim.sim, sim.actions), pairs, DepthSplit(reference.real, reference.actions))
    info = {
        "simulator": "pairloss.data.depth",
        "image_size": size,
        "simulated training images": config["sim_images"],
        "real pairs": config["pairs"],
        "real validation images": config["validation"],
        "test states": config["test"],
        "real images of the reference row": config["real_reference"],
        "rollouts": config["rollouts"],
    }
    return Splits(fit_data, DepthSplit(validation.real, validation.actions), TestData(test, 6), info=info)


def _draw(step: int, seed: int, count: int, size: int, stream: int) -> Tensor:
    """Batch indices of one update: a function of the step and the seed (a resumed run draws the same)."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) * 4 + stream)
    return torch.randint(count, (min(size, count) if stream else size,), generator=generator)


@torch.no_grad()
def _accuracy(policy: nn.Module, images: Tensor, actions: Tensor) -> float:
    return float((policy(images).argmax(dim=1) == actions).float().mean())


def run(ctx: RunContext) -> RunResult:
    config, settings = ctx.config, ctx.settings
    method = settings["method"]
    policy = DepthPolicy(config["image_size"], len(ACTIONS), config["embedding_size"])
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings["lr"], weight_decay=config["weight_decay"])
    data: FitData = ctx.data.fit
    pair_loss = SimRealPairLoss(margin=config["margin"])
    batch, pair_batch = config["batch_size"], config["pair_batch"]

    def loss(step: int) -> Tensor:
        if method == "real":
            index = _draw(step, ctx.seed, len(data.real_reference.actions), batch, 0)
            return F.cross_entropy(policy(data.real_reference.images[index]), data.real_reference.actions[index])
        index = _draw(step, ctx.seed, len(data.sim.actions), batch, 0)
        total = F.cross_entropy(policy(data.sim.images[index]), data.sim.actions[index])
        if method == "sim":
            return total
        picked = _draw(step, ctx.seed, len(data.pairs.actions), pair_batch, 1)
        if method == "mix":
            real = F.cross_entropy(policy(data.pairs.real[picked]), data.pairs.actions[picked])
            return total + settings["real_weight"] * real
        both = policy.embed(torch.cat([data.pairs.sim[picked], data.pairs.real[picked]]))
        sim_embedding, real_embedding = both.chunk(2)
        return total + settings["pair_weight"] * pair_loss(sim_embedding, real_embedding)

    validation: DepthSplit = ctx.data.validation
    result = fit(
        policy,
        optimizer,
        lambda step: optimizer_step(optimizer, lambda: loss(step)),
        FitConfig(
            updates=config["updates"],
            validate_every=config["validate_every"],
            patience=config["patience"],
            description=ctx.label,
        ),
        validate=lambda: _accuracy(policy, validation.images, validation.actions),
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    policy.eval()
    extra = {"best_update": result.best_update, "updates": result.updates}
    if ctx.phase == "tuning":
        return RunResult({"real accuracy": _accuracy(policy, validation.images, validation.actions)}, extra)
    test: TestData = ctx.data.test
    metrics = {
        "real accuracy": _accuracy(policy, test.states.real, test.states.actions),
        "sim accuracy": _accuracy(policy, test.states.sim, test.states.actions),
        "real rollout success": rollout_success(
            policy, config["rollouts"], config["rollout_steps"], config["image_size"], seed=test.rollout_seed
        ),
    }
    return RunResult(metrics, extra)


#: Short labels of the rows for the figure's axes.
_SHORT = {
    "sim-only": "sim-only",
    "naive mix": "naive\nmix",
    "pairwise": "pairwise",
    "real-trained (reference)": "real-\ntrained\n(reference)",
}


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Per-seed test metrics of every row (dots, mean bar) side by side, the verdicts below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result.summary)
    fig = plt.figure(figsize=(WIDTH, 6.6), layout="constrained")
    top, bottom = stacked(fig, 1.25, 1)
    axes = top.subplots(1, 2)
    for ax, metric in zip(axes, METRICS):
        for i, method in enumerate(methods):
            values = [runs[method]["metrics"][metric] for runs in result.per_seed.values() if method in runs]
            ax.scatter([i] * len(values), values, color="tab:blue", s=18, zorder=3)
            if values:
                ax.plot([i - 0.3, i + 0.3], [np.mean(values)] * 2, color="black", linewidth=2)
        ax.set_xticks(range(len(methods)), [_SHORT.get(m, m) for m in methods], fontsize=FONT)
        ax.set_title(f"test {metric}", fontsize=FONT)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=FONT)
        ax.grid(axis="y", alpha=0.3)
    top.suptitle("per seed (dots) and mean (bar)", fontsize=FONT)
    verdict_panel(bottom, result.verdicts)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


CONFIG: dict[str, Any] = {
    "trials": 5,
    "threads": 1,
    "image_size": 32,
    "sim_images": 3000,
    "pairs": 50,
    "validation": 200,
    "test": 1000,
    "real_reference": 3000,
    "embedding_size": 32,
    "weight_decay": 1e-4,
    "margin": 1.0,
    "batch_size": 64,
    "pair_batch": 32,
    "updates": 1200,
    "validate_every": 100,
    "patience": 4,
    "rollouts": 300,
    "rollout_steps": 30,
}
QUICK: dict[str, Any] = {
    "trials": 2,
    "sim_images": 400,
    "pairs": 20,
    "validation": 60,
    "test": 100,
    "real_reference": 400,
    "updates": 60,
    "validate_every": 20,
    "rollouts": 40,
    "rollout_steps": 12,
}

LR = Float(3e-4, 3e-3, log=True)

RECIPE = Experiment(
    name="sim2real",
    title="Sim-to-real with a pairwise loss on a procedural peg-in-hole depth task",
    paper="Viereck, Saenko, Platt. Adapting control policies from simulation to reality using a pairwise loss. 2018",
    claim="A pairwise loss on a few (simulated, real) image pairs transfers a policy learned in simulation better "
    "than training only in simulation or combining real and simulated data naively.",
    config=CONFIG,
    quick=QUICK,
    methods=(
        Method("sim-only", space={"lr": LR}, settings={"method": "sim"}, description="cross-entropy on simulation"),
        Method(
            "naive mix",
            space={"lr": LR, "real_weight": Float(0.1, 10.0, log=True)},
            settings={"method": "mix"},
            description="simulated cross-entropy + real_weight × cross-entropy on the labelled real images",
        ),
        Method(
            "pairwise",
            space={"lr": LR, "pair_weight": Float(0.1, 10.0, log=True)},
            settings={"method": "pairwise"},
            description="simulated cross-entropy + pair_weight × SimRealPairLoss on the (simulated, real) pairs",
        ),
        Method(
            "real-trained (reference)",
            settings={"method": "real"},
            tuned_as="sim-only",
            description="cross-entropy on many labelled real images only: what the task allows (not compared)",
        ),
    ),
    claims=(
        Claim("pairwise beats sim-only", "pairwise", "sim-only", METRICS),
        Claim("pairwise beats naive mix", "pairwise", "naive mix", METRICS),
    ),
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective="real accuracy",
)
