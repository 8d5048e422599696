"""Sim-to-real transfer with a pairwise loss (Viereck, Saenko, Platt, 2018), on a procedural depth task.

The paper trains a visuomotor policy on simulated depth images and adapts it to a real depth camera with a
pairwise loss on a few (simulated, real) image pairs of the same scene state. No robot or depth camera is
available here: :mod:`pairloss.data.depth` draws a peg-in-hole scene and renders it twice, by a clean simulator
and by a "real" sensor model (calibration error, blur, noise, quantisation, missing pixels at edges). The
policy is an :class:`pairloss.models.MLPEmbedder` (without batch norm, so that batch statistics of one domain
never leak into the other) followed by a linear head over the five actions.

Rows, for each number ``n`` of real images (each paired with its simulated twin):

* ``sim-only``: cross-entropy on the simulated training set (does not depend on ``n``);
* ``mix n``: cross-entropy on simulated batches plus, at every step, a batch of the ``n`` labelled real images
  (over-sampled so that they weigh as much as the simulated batch: a strong version of naive mixing);
* ``pairwise n``: cross-entropy on simulated batches plus ``pair_weight`` times
  :class:`pairloss.losses.domain.SimRealPairLoss` on a batch of the ``n`` (sim, real) pairs; real labels are not
  used, as in the paper.

Metrics: action accuracy on held-out real images, on held-out simulated images, and the success rate of
closed-loop rollouts in the simulator with real-sensor observations (start from a random misalignment, take the
policy's action until it inserts or ``rollout_steps`` pass; success = insertion within tolerance).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss.data.depth import (
    ACTIONS,
    TOLERANCE,
    apply_action,
    normalize_depth,
    real_sensor,
    sample_states,
    simulate_depth_task,
)
from pairloss.losses.domain import SimRealPairLoss
from pairloss.models.mlp import MLPEmbedder
from pairloss.recipes.base import Recipe, RecipeResult, SeedResult
from pairloss.training.reporting import Reporter

__all__ = ["RECIPE", "rollout_success"]

_METHODS = ("mix", "pairwise")


class _Policy(nn.Module):
    def __init__(self, in_features: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.embedder = MLPEmbedder(in_features, config["embedding_size"], tuple(config["hidden"]), batch_norm=False)
        self.head = nn.Linear(config["embedding_size"], len(ACTIONS))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embedder(x))


def _train(
    method: str,
    sim_x: Tensor,
    sim_y: Tensor,
    pairs_sim: Tensor,
    pairs_real: Tensor,
    pairs_y: Tensor,
    config: dict[str, Any],
    seed: int,
    reporter: Reporter,
    description: str,
) -> _Policy:
    torch.manual_seed(seed)
    policy = _Policy(sim_x[0].numel(), config)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config["lr"], weight_decay=1e-4)
    pair_loss = SimRealPairLoss(margin=config["margin"])
    generator = torch.Generator().manual_seed(seed)
    n_pairs = pairs_real.shape[0]
    policy.train()
    for _ in reporter.track(range(config["steps"]), description):
        batch = torch.randint(0, sim_x.shape[0], (config["batch_size"],), generator=generator)
        loss = F.cross_entropy(policy(sim_x[batch]), sim_y[batch])
        if method != "sim-only":
            picked = torch.randint(0, n_pairs, (min(config["pair_batch"], n_pairs),), generator=generator)
            if method == "mix":
                loss = loss + F.cross_entropy(policy(pairs_real[picked]), pairs_y[picked])
            else:
                both = policy.embedder(torch.cat([pairs_sim[picked], pairs_real[picked]]))
                sim_emb, real_emb = both.chunk(2)
                loss = loss + config["pair_weight"] * pair_loss(sim_emb, real_emb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    policy.eval()
    return policy


@torch.no_grad()
def _accuracy(policy: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((policy(x).argmax(dim=1) == y).float().mean())


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


def run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    """Train every row (one thread: small models run fastest that way on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config["threads"])
    try:
        return _run_seed(config, seed, reporter)
    finally:
        torch.set_num_threads(threads)


def _run_seed(config: dict[str, Any], seed: int, reporter: Reporter) -> SeedResult:
    size = config["image_size"]
    sim = simulate_depth_task(config["n_sim"], seed=10 * seed + 1, size=size)
    real_pool = simulate_depth_task(max(config["pair_counts"]), seed=10 * seed + 2, size=size)
    test = simulate_depth_task(config["n_test"], seed=10 * seed + 3, size=size)

    def evaluate(policy: nn.Module) -> dict[str, float]:
        return {
            "real accuracy": _accuracy(policy, test.real, test.actions),
            "sim accuracy": _accuracy(policy, test.sim, test.actions),
            "real rollout success": rollout_success(
                policy, config["rollouts"], config["rollout_steps"], size, seed=10 * seed + 4
            ),
        }

    metrics: dict[str, dict[str, float]] = {}
    empty = sim.sim[:0]
    policy = _train("sim-only", sim.sim, sim.actions, empty, empty, sim.actions[:0], config, seed, reporter, "sim-only")
    metrics["sim-only"] = evaluate(policy)
    for n in config["pair_counts"]:
        for method in _METHODS:
            policy = _train(
                method,
                sim.sim,
                sim.actions,
                real_pool.sim[:n],
                real_pool.real[:n],
                real_pool.actions[:n],
                config,
                seed,
                reporter,
                f"{method} n={n}",
            )
            metrics[f"{method} n={n}"] = evaluate(policy)
    return SeedResult(metrics)


def _mean_std(result: RecipeResult, row: str, metric: str) -> tuple[float, float]:
    entry = result.summary.get(row, {}).get(metric)
    return (entry["mean"], entry["std"]) if entry else (float("nan"), float("nan"))


def make_figure(result: RecipeResult, path: Path) -> None:
    counts = result.config["pair_counts"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("real accuracy", "real rollout success")):
        base, base_std = _mean_std(result, "sim-only", metric)
        ax.axhline(base, color="grey", linestyle="--", label="sim-only")
        ax.axhspan(base - base_std, base + base_std, color="grey", alpha=0.15)
        for method, label in (("mix", "naive sim + real mixing"), ("pairwise", "sim + pairwise loss")):
            values = [_mean_std(result, f"{method} n={n}", metric) for n in counts]
            ax.errorbar(counts, [v[0] for v in values], yerr=[v[1] for v in values], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("number of real images (paired with their simulated twin)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} on the real domain")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def verdict(result: RecipeResult) -> str:
    parts = []
    wins = 0
    counts = result.config["pair_counts"]
    for n in counts:
        pairwise, pairwise_std = _mean_std(result, f"pairwise n={n}", "real accuracy")
        mix, mix_std = _mean_std(result, f"mix n={n}", "real accuracy")
        sim_only, sim_only_std = _mean_std(result, "sim-only", "real accuracy")
        best_std = mix_std if mix >= sim_only else sim_only_std
        # A win must exceed one standard deviation over seeds (of either row), not just the mean.
        won = math.isfinite(pairwise) and pairwise - max(mix, sim_only) > max(pairwise_std, best_std)
        wins += won
        parts.append(
            f"n={n}: pairwise {pairwise:.3f} ± {pairwise_std:.3f} vs mix {mix:.3f} ± {mix_std:.3f} "
            f"vs sim-only {sim_only:.3f} ± {sim_only_std:.3f}"
        )
    held = "held" if wins == len(counts) else ("held partly" if wins else "did not hold")
    return (
        f"Real-domain action accuracy, mean ± std over seeds: {'; '.join(parts)}. The claim {held} "
        f"(pairwise ahead of both baselines by more than one std at {wins} of {len(counts)} pair counts)."
    )


RECIPE = Recipe(
    name="sim2real",
    title="Sim-to-real with a pairwise loss on a procedural peg-in-hole depth task",
    paper="Viereck, Saenko, Platt. Adapting control policies from simulation to reality using a pairwise loss. 2018",
    claim="Adding a pairwise loss on (sim, real) pairs beats both sim-only training and naive sim + real mixing.",
    config={
        "threads": 1,
        "image_size": 24,
        "n_sim": 3000,
        "n_test": 1000,
        "pair_counts": [10, 50, 200],
        "embedding_size": 32,
        "hidden": [256, 128],
        "lr": 1e-3,
        "steps": 1000,
        "batch_size": 64,
        "pair_batch": 32,
        "pair_weight": 1.0,
        "margin": 1.0,
        "rollouts": 300,
        "rollout_steps": 15,
    },
    quick={"n_sim": 1500, "n_test": 500, "steps": 300, "rollouts": 100},
    run_seed=run_seed,
    make_figure=make_figure,
    verdict=verdict,
)
