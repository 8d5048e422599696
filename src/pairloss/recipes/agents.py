"""Recipe ``agents`` (Refaat et al.): do learned raster features and engineered features complement each other?

Scenes come from :mod:`pairloss.data.driving`: a counterfactual IDM planner labels each agent with how much it
changes the ego plan (the truth), and the models see the scene through :func:`~pairloss.data.driving.perceive`
(tracking noise on every agent's state). Both inputs are informative and both are incomplete, and no single hidden
flag decides which one wins: the engineered features give precise per-agent kinematics (distance, closing speed,
time to conflict) and two partial occlusion cues (ego-lane agents in front of the agent at ``t = 0``), all from noisy
tracks; the agent-centred raster shows the whole neighbourhood (who will enter the ego corridor, who stands in
front of whom) at 5 m per pixel.

:class:`pairloss.models.agents.AgentScorer` is trained with the paper's pairwise loss,
``log(1 + exp(s_j − s_i))`` for agents ``i`` more important than ``j`` of the same scene
(:func:`pairloss.losses.ranking.ranknet_loss`, σ = 1, averaged over the pairs of the batch), as CNN only,
engineered only and both (combined end to end). Each is tuned with the same budget (learning rate, weight decay) on
validation scenes; the final runs are paired seeds (initialisation and batch order). A nearest-first heuristic
is a reference row. Metrics on test scenes: NDCG@k (gain ``2^importance − 1``), precision and recall of the top-k
against the important agents (importance above ``important_threshold`` m/s), k ∈ {3, 5, 10}, and the median
latency of scoring one scene.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairloss.data.driving import (
    KINDS,
    DrivingScenes,
    agent_features,
    perceive,
    rasterize_agents,
    simulate_driving_scenes,
)
from pairloss.losses._lists import PAD
from pairloss.losses.ranking import ranknet_loss
from pairloss.metrics.ranking import ndcg_at_k
from pairloss.metrics.topn import precision_at_n, recall_at_n
from pairloss.models.agents import AgentScorer
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
from pairloss.training.loop import FitConfig, ShuffledBatches, fit, optimizer_step

__all__ = ["RECIPE", "SceneSet"]

HEURISTIC = "nearest first (heuristic)"
#: Learned methods: row name -> :class:`AgentScorer` mode.
MODES = {"CNN only": "cnn", "engineered only": "features", "combined": "combined"}


@dataclass(frozen=True)
class SceneSet:
    """Scenes with the models' inputs: the true scenes (labels), rasters and standardised features."""

    scenes: DrivingScenes
    rasters: Tensor
    features: Tensor

    @property
    def relevance(self) -> Tensor:
        """Importance with padding marked ``PAD`` (the ranking losses' and metrics' convention)."""
        return torch.where(self.scenes.mask, self.scenes.importance, torch.full_like(self.scenes.importance, PAD))


def _subset(scenes: DrivingScenes, index: slice) -> DrivingScenes:
    return DrivingScenes(*(getattr(scenes, f)[index] for f in DrivingScenes.__dataclass_fields__))


def prepare(ctx: PrepareContext) -> Splits:
    """Simulate, perceive, rasterise; standardise the features with the fit split's statistics."""
    config = ctx.config
    sizes = {"fit": config["n_fit"], "validation": config["n_validation"], "test": config["n_test"]}
    scenes = simulate_driving_scenes(sum(sizes.values()), n_max=config["n_max"], seed=config["data_seed"])
    seen = perceive(
        scenes,
        position_noise=config["position_noise"],
        speed_noise=config["speed_noise"],
        heading_noise=config["heading_noise"],
        seed=config["data_seed"],
    )
    rasters = rasterize_agents(seen, config["grid"], config["cell"])
    features = agent_features(seen)
    bounds = np.cumsum([0, *sizes.values()])
    parts = {name: slice(int(a), int(b)) for name, a, b in zip(sizes, bounds[:-1], bounds[1:])}
    real = scenes.mask[parts["fit"]]
    mean = features[parts["fit"]][real].mean(0)
    std = features[parts["fit"]][real].std(0).clamp_min(1e-6)
    features = torch.where(scenes.mask[..., None], (features - mean) / std, torch.zeros(()))
    sets = {name: SceneSet(_subset(scenes, part), rasters[part], features[part]) for name, part in parts.items()}
    important = scenes.importance > config["important_threshold"]
    info = {
        "scenes": sizes,
        "agents per scene": float(scenes.mask.sum(1).float().mean()),
        "important agents per scene": float(important.sum(1).float().mean()),
        "agents with importance 0": float((scenes.importance[scenes.mask] == 0).float().mean()),
        "perception noise": {k: config[k] for k in ("position_noise", "speed_noise", "heading_noise")},
    }
    return Splits(fit=sets["fit"], validation=sets["validation"], test=sets["test"], info=info)


def evaluate(scores: Tensor, data: SceneSet, config: dict[str, Any]) -> dict[str, float]:
    """NDCG@k, P@k (scenes with an important agent) and R@k for k in ``config["ks"]``."""
    scenes = data.scenes
    important = scenes.importance > config["important_threshold"]
    has_important = important.any(1)
    row: dict[str, float] = {}
    for k in config["ks"]:
        row[f"NDCG@{k}"] = ndcg_at_k(scores, data.relevance, k=k, empty="skip")
        row[f"P@{k}"] = precision_at_n(scores[has_important], important[has_important], k, scenes.mask[has_important])
        row[f"R@{k}"] = recall_at_n(scores, important, k, scenes.mask)
    return row


def _score(model: AgentScorer, data: SceneSet) -> Tensor:
    mask = data.scenes.mask
    with torch.no_grad():
        flat = model(data.rasters[mask], data.features[mask])
    return torch.full(mask.shape, -math.inf).masked_scatter(mask, flat)


def _latency_ms(model: AgentScorer, data: SceneSet, n: int) -> float:
    """Median wall time of scoring one scene; each scene is scored once untimed first (kernel warm-up per shape)."""
    times = []
    mask = data.scenes.mask
    with torch.inference_mode():
        for s in range(min(n, mask.shape[0])):
            r, f = data.rasters[s][mask[s]], data.features[s][mask[s]]
            model(r, f)
            start = time.perf_counter()
            model(r, f)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _nearest_first(data: SceneSet) -> Tensor:
    """Rank by perceived distance to the ego (the features' first column is ``log(1 + distance)``, standardised)."""
    return torch.where(data.scenes.mask, -data.features[..., 0], torch.full(data.scenes.mask.shape, -math.inf))


def run(ctx: RunContext) -> RunResult:
    """Train the method's scorer on the fit scenes (validation-selected state) and evaluate it."""
    config = dict(ctx.config)
    evaluation: SceneSet = ctx.evaluation
    if ctx.method == HEURISTIC:
        return RunResult(metrics=evaluate(_nearest_first(evaluation), evaluation, config))
    train: SceneSet = ctx.data.fit
    validation: SceneSet = ctx.data.validation
    model = AgentScorer(train.features.shape[-1], MODES[ctx.method], channels=train.rasters.shape[2],
                        grid=train.rasters.shape[-1])  # fmt: skip
    optimiser = torch.optim.AdamW(model.parameters(), lr=10 ** ctx.settings["log10_lr"],
                                  weight_decay=10 ** ctx.settings["log10_weight_decay"])  # fmt: skip
    batches = ShuffledBatches(train.scenes.n_scenes, config["batch_scenes"], ctx.seed)
    relevance = train.relevance

    def loss_of(index: Tensor) -> Tensor:
        mask = train.scenes.mask[index]
        flat = model(train.rasters[index][mask], train.features[index][mask])
        padded = torch.zeros(mask.shape, dtype=flat.dtype).masked_scatter(mask, flat)
        return ranknet_loss(padded, relevance[index])

    def validate() -> float:
        return evaluate(_score(model, validation), validation, config)[config["objective"]]

    history = fit(
        model,
        optimiser,
        lambda step: optimizer_step(optimiser, lambda: loss_of(batches(step))),
        FitConfig(updates=config["updates"], validate_every=config["validate_every"], description=ctx.label),
        validate=validate,
        checkpoint=ctx.checkpoint,
        reporter=ctx.reporter,
    )
    model.eval()
    scores = _score(model, evaluation)
    metrics = evaluate(scores, evaluation, config)
    extra: dict[str, Any] = {"best_update": history.best_update}
    if ctx.phase == "final":
        metrics["latency ms/scene"] = _latency_ms(model, evaluation, config["latency_scenes"])
        if ctx.method == "combined":
            extra["scene"] = _scene_extra(evaluation, scores, config)
    return RunResult(metrics=metrics, extra=extra)


def _scene_extra(data: SceneSet, scores: Tensor, config: dict[str, Any]) -> dict[str, Any]:
    """The test scene with the most important agents, for the figure."""
    scenes = data.scenes
    important = (scenes.importance > config["important_threshold"]).sum(1)
    s = int(torch.argmax(important + 0.01 * scenes.mask.sum(1)))
    keep = scenes.mask[s]
    return {
        "positions": scenes.positions[s][keep].tolist(),
        "headings": scenes.headings[s][keep].tolist(),
        "speeds": scenes.speeds[s][keep].tolist(),
        "kinds": scenes.kinds[s][keep].tolist(),
        "importance": scenes.importance[s][keep].tolist(),
        "predicted": scores[s][keep].tolist(),
        "crossing_x": float(scenes.crossing_x[s]),
    }


def make_figure(result: ExperimentResult, path: Path) -> None:
    """NDCG@k of every method (mean, 95% CI over seeds), then one test scene: the combined model's rank colour and
    the true importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = result.config
    plt.rcParams.update({"font.size": 11})
    fig, axes = plt.subplots(3, 1, figsize=(10, 12.5), gridspec_kw={"height_ratios": [1.0, 1.1, 1.1]})
    ax_metrics = axes[0]
    ks = config["ks"]
    methods = [HEURISTIC, *MODES]
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        stats_ = [result.mean_ci(method, f"NDCG@{k}") for k in ks]
        xs = np.arange(len(ks)) + (i - (len(methods) - 1) / 2) * width
        ax_metrics.bar(xs, [m for m, _ in stats_], width, yerr=[h for _, h in stats_], capsize=3, label=method)
    ax_metrics.set_xticks(np.arange(len(ks)), [f"NDCG@{k}" for k in ks])
    ax_metrics.set_ylabel("test NDCG (mean, 95% CI)")
    ax_metrics.set_ylim(0, 1)
    ax_metrics.legend(fontsize=9, ncol=2, loc="upper left")
    ax_metrics.set_title("Ranking quality on test scenes")
    runs = result.per_seed.get(0, {})
    scene = runs.get("combined", {}).get("extra", {}).get("scene")
    if scene is None:
        for ax in axes[1:]:
            ax.set_axis_off()
    else:
        _draw_scene(scene, axes[1:])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw_scene(scene: dict[str, Any], axes: Any) -> None:
    import matplotlib.pyplot as plt

    pos = np.array(scene["positions"]).reshape(-1, 2)
    heading, speed = np.array(scene["headings"]), np.array(scene["speeds"])
    kinds = np.array(scene["kinds"], dtype=int)
    panels = (("predicted", "combined model, seed 0: score rank (darker = higher)"),
              ("importance", "true importance (m/s of plan change)"))  # fmt: skip
    for ax, (key, title) in zip(axes, panels):
        values = np.array(scene[key])
        if key == "predicted":
            values = values.argsort().argsort() / max(len(values) - 1, 1)
        for y in (-5.25, 5.25):
            ax.axhline(y, color="grey", lw=1.5)
        for y in (-1.75, 1.75):
            ax.axhline(y, color="grey", lw=0.8, ls="--")
        ax.axvspan(scene["crossing_x"] - 3.5, scene["crossing_x"] + 3.5, color="0.9", zorder=0)
        ax.plot([0, 60], [0, 0], color="tab:green", lw=2, alpha=0.5, label="ego path")
        ax.add_patch(plt.Rectangle((-2.25, -1.0), 4.5, 2.0, color="tab:green"))
        points = None
        for kind, marker in {0: "s", 1: "o", 2: "^"}.items():
            sel = kinds == kind
            if sel.any():
                points = ax.scatter(pos[sel, 0], pos[sel, 1], c=values[sel], cmap="inferno_r", marker=marker,
                                    s=70, edgecolors="black", vmin=0, vmax=max(values.max(), 1e-6),
                                    label=KINDS[kind])  # fmt: skip
        ax.quiver(pos[:, 0], pos[:, 1], speed * np.cos(heading), speed * np.sin(heading), angles="xy",
                  scale_units="xy", scale=1.0, width=0.002, color="0.3")  # fmt: skip
        if points is not None:
            plt.colorbar(points, ax=ax, fraction=0.03)
        ax.set_title(title)
        ax.set_ylim(-25, 25)
        ax.set_xlim(-45, 110)
        ax.set_ylabel("y (m)")
        ax.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=9, ncol=4)
    axes[1].set_xlabel("x along the ego path (m); arrows: velocity over 1 s (true states)")


SPACE = {"log10_lr": Float(-4.0, -2.0), "log10_weight_decay": Float(-6.0, -2.0)}

CONFIG: dict[str, Any] = {
    "n_fit": 500,
    "n_validation": 150,
    "n_test": 300,
    "n_max": 40,
    "data_seed": 0,
    "position_noise": 1.0,
    "speed_noise": 1.0,
    "heading_noise": 0.1,
    "grid": 12,
    "cell": 5.0,
    "updates": 200,
    "validate_every": 50,
    "batch_scenes": 16,
    "ks": [3, 5, 10],
    "objective": "NDCG@5",
    "important_threshold": 0.05,
    "latency_scenes": 50,
    "trials": 4,
    "threads": 1,
}

QUICK: dict[str, Any] = {"n_fit": 120, "n_validation": 40, "n_test": 60, "updates": 30, "validate_every": 15,
                         "trials": 2, "latency_scenes": 10}  # fmt: skip

_NDCG = tuple(f"NDCG@{k}" for k in CONFIG["ks"])

RECIPE = Experiment(
    name="agents",
    title="Agent prioritisation: CNN raster vs engineered features vs both, pairwise ranking loss",
    paper="Refaat, Ding, Ponomareva, Ross. Agent prioritization for autonomous navigation. IROS 2019",
    claim=(
        "Combining learned (raster CNN) and engineered features ranks the agents that matter to the plan better than "
        "either alone"
    ),
    config=CONFIG,
    quick=QUICK,
    methods=(
        Method(HEURISTIC, description="rank by perceived distance to the ego; nothing learned, nothing tuned"),
        *(
            Method(name, space=SPACE, settings={"mode": mode}, description=f"AgentScorer(mode={mode!r}), RankNet")
            for name, mode in MODES.items()
        ),
    ),
    claims=(
        Claim("the combined model ranks better than the CNN alone", "combined", "CNN only", (*_NDCG, "R@5")),
        Claim(
            "the combined model ranks better than the engineered features alone",
            "combined",
            "engineered only",
            (*_NDCG, "R@5"),
        ),
    ),
    prepare=prepare,
    run=run,
    make_figure=make_figure,
    objective=CONFIG["objective"],
)
