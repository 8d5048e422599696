"""Recipe ``multilabel``: the train–test gap of the ranking loss of univariate and pairwise surrogates as c grows.

Wu, Li, Xu, Zhu (NeurIPS 2021) bound the ranking loss of the learning algorithms ``A^pa`` (pairwise surrogate) and
``A^u1``–``A^u4`` (univariate surrogates) by the empirical surrogate risk plus a complexity term: ``O(c)`` for
``u1``, ``u2`` and ``u4``, ``O(√c)`` for the pairwise loss and the reweighted ``u3`` (``c`` = number of labels). A
bound is a statement about the generalisation gap, so the recipe measures the gap itself: linear models trained
by regularised empirical risk minimisation with each loss, ranking loss on a fresh test sample minus ranking loss on
the training sample, as ``c`` grows with the label imbalance held fixed, and as the imbalance grows with ``c`` held
fixed. The test ranking loss is reported beside it.

Data: :class:`pairloss.data.multilabel.LinearMultiLabelProblem` (a fixed linear distribution per setting); the
validation and test samples are drawn once, each seed draws its own training sample, so the paired seeds are
independent training sets, the quantity a generalisation bound is about.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairloss.data.multilabel import LinearMultiLabelProblem, MultiLabelData
from pairloss.losses.multilabel import multilabel_pairwise_loss, multilabel_univariate_loss
from pairloss.metrics.multilabel import ranking_loss
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

__all__ = ["RECIPE", "Setting", "settings_of"]

#: The compared losses: method name -> loss key (``"pairwise"`` or a univariate weighting).
LOSSES = {"pairwise (pa)": "pairwise", "u1 (plain)": "u1", "u2": "u2", "u3 (reweighted)": "u3", "u4": "u4"}
#: Bounds of the paper's Table 1 (from the authors' ``calculate_bound``), for the docs and the figure.
BOUNDS = {"pairwise": "O(√c)", "u1": "O(c)", "u2": "O(c)", "u3": "O(√c)", "u4": "O(c)"}


class Setting(tuple[int, float]):
    """One data setting: ``(c, prevalence)``; ``name`` is its label in metric names (``"c=50 ρ=0.2"``)."""

    __slots__ = ()

    def __new__(cls, labels: int, prevalence: float) -> Setting:
        return super().__new__(cls, (int(labels), float(prevalence)))

    @property
    def labels(self) -> int:
        return self[0]

    @property
    def prevalence(self) -> float:
        return self[1]

    @property
    def name(self) -> str:
        return f"c={self.labels} ρ={self.prevalence:g}"


def settings_of(config: Mapping[str, Any]) -> tuple[list[Setting], list[Setting], list[Setting]]:
    """The settings of the ``c`` axis, of the imbalance axis, and all of them (each once, in that order)."""
    by_c = [Setting(c, config["prevalence"]) for c in config["labels"]]
    by_imbalance = [Setting(config["imbalance_labels"], p) for p in config["prevalences"]]
    every = list(dict.fromkeys(by_c + by_imbalance))
    return by_c, by_imbalance, every


def _lambda_key(setting: Setting) -> str:
    return f"log10 λ {setting.name}"


def _loss(loss: str, scores: Tensor, labels: Tensor) -> Tensor:
    if loss == "pairwise":
        return multilabel_pairwise_loss(scores, labels)
    return multilabel_univariate_loss(scores, labels, weighting=loss)


def fit_linear(loss: str, x: Tensor, y: Tensor, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    """Regularised ERM ``min_W mean_i L(W x_i + b, y_i) + (λ/2)‖W‖²`` by full-batch L-BFGS from ``W = 0``.

    The paper's algorithms are this problem (logistic base loss, the bias a constant feature); the solver (the
    authors use SVRG-BB) and the unregularised bias are the library's choice. The problem is convex, so the
    solution depends on the training sample only.
    """
    model = torch.nn.Linear(x.shape[1], y.shape[1], dtype=x.dtype)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimiser = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        objective = _loss(loss, model(x), y) + 0.5 * weight_decay * model.weight.square().sum()
        objective.backward()
        return objective

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    return model


def _tensors(data: MultiLabelData) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(np.asarray(data.features, dtype=np.float64)), torch.from_numpy(data.labels).double()


def _ranking_loss(model: torch.nn.Linear, data: MultiLabelData) -> float:
    x, _ = _tensors(data)
    with torch.no_grad():
        return ranking_loss(model(x).numpy(), data.labels, convention="paper")


def time_loss_ms(loss: str, labels: Tensor, repeats: int) -> float:
    """Median CPU time (``time.process_time``) of one forward + backward of ``loss`` on random scores, in ms.

    CPU time of this process rather than wall time: on a shared machine the wall clock mostly measures waiting.
    """
    scores = torch.randn(labels.shape, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        start = time.process_time()
        _loss(loss, scores, labels).backward()
        times.append(time.process_time() - start)
    return 1000 * float(np.median(times[1:]))


def prepare(ctx: PrepareContext) -> Splits:
    """One linear problem per setting; its validation and test samples (drawn once); fit samples come per seed."""
    config = ctx.config
    _, _, every = settings_of(config)
    fixed = [_lambda_key(s) for s in settings_of(CONFIG)[2]]
    if [_lambda_key(s) for s in every] != fixed:
        raise ValueError(
            "labels, prevalence, imbalance_labels and prevalences are fixed by the recipe (its search space and "
            "claims name the settings); override the sample sizes, max_iter or trials instead"
        )
    problems, validation, test = {}, {}, {}
    for index, setting in enumerate(every):
        problem = LinearMultiLabelProblem.create(
            setting.labels,
            n_features=config["n_features"],
            prevalence=setting.prevalence,
            signal=config["signal"],
            noise=config["noise"],
            seed=index,
        )
        problems[setting] = problem
        validation[setting] = problem.sample(config["n_validation"], seed=1_000_000 + index)
        test[setting] = problem.sample(config["n_test"], seed=2_000_000 + index)
    info = {
        setting.name: {
            "labels": setting.labels,
            "prevalence": setting.prevalence,
            "test relevant fraction": float(test[setting].labels.mean()),
            "test relevant labels per row": float(test[setting].labels.sum(1).mean()),
            "test imbalance |Y-|/|Y+|": _imbalance(test[setting].labels),
        }
        for setting in every
    }
    sizes = {"fit (per seed)": config["n_fit"], "validation": config["n_validation"], "test": config["n_test"]}
    return Splits(fit=problems, validation=validation, test=test, info={"sizes": sizes, "settings": info})


def _imbalance(labels: np.ndarray) -> float:
    """Mean instance-wise imbalance ``|Y⁻|/|Y⁺|`` over the rows that have a label pair."""
    n_pos = labels.sum(1).astype(float)
    n_neg = labels.shape[1] - n_pos
    keep = (n_pos > 0) & (n_neg > 0)
    return float((n_neg[keep] / n_pos[keep]).mean())


def run(ctx: RunContext) -> RunResult:
    """Train the method's loss at every setting on a fresh fit sample; gap = RL(evaluation) − RL(fit sample)."""
    config = ctx.config
    loss = LOSSES[ctx.method]
    by_c, by_imbalance, every = settings_of(config)
    metrics: dict[str, float] = {}
    for index, setting in ctx.reporter.track(list(enumerate(every)), ctx.label):
        problem: LinearMultiLabelProblem = ctx.data.fit[setting]
        fit = problem.sample(config["n_fit"], seed=1000 * ctx.seed + index)
        x, y = _tensors(fit)
        model = fit_linear(loss, x, y, 10.0 ** ctx.settings[_lambda_key(setting)], config["max_iter"])
        train_rl = _ranking_loss(model, fit)
        evaluation_rl = _ranking_loss(model, ctx.evaluation[setting])
        metrics[f"train RL {setting.name}"] = train_rl
        metrics[f"RL {setting.name}"] = evaluation_rl
        metrics[f"gap {setting.name}"] = evaluation_rl - train_rl
    metrics[GROWTH_C] = metrics[f"gap {by_c[-1].name}"] - metrics[f"gap {by_c[0].name}"]
    metrics[GROWTH_IMBALANCE] = metrics[f"gap {by_imbalance[-1].name}"] - metrics[f"gap {by_imbalance[0].name}"]
    metrics[OBJECTIVE] = 1.0 - float(np.mean([metrics[f"RL {s.name}"] for s in every]))
    extra: dict[str, Any] = {}
    if ctx.phase == "final":
        times = {}
        for setting in by_c:
            labels = torch.from_numpy(ctx.data.test[setting].labels[: config["timing_batch"]]).float()
            times[str(setting.labels)] = time_loss_ms(loss, labels, config["timing_repeats"])
        extra["loss_ms"] = times
        metrics[f"loss ms/batch c={by_c[-1].labels}"] = times[str(by_c[-1].labels)]
    return RunResult(metrics=metrics, extra=extra)


GROWTH_C = "gap growth along c"
GROWTH_IMBALANCE = "gap growth along imbalance"
OBJECTIVE = "1 − mean RL"


def _space(config: Mapping[str, Any]) -> dict[str, Float]:
    _, _, every = settings_of(config)
    low, high = config["log10_lambda_range"]
    return {_lambda_key(s): Float(low, high) for s in every}


def _methods(config: Mapping[str, Any]) -> tuple[Method, ...]:
    return tuple(
        Method(
            name=name,
            space=_space(config),
            settings={"loss": loss},
            description=f"linear model, logistic base loss, {loss} surrogate; the paper's bound {BOUNDS[loss]}",
        )
        for name, loss in LOSSES.items()
    )


def _claims(config: Mapping[str, Any]) -> tuple[Claim, ...]:
    by_c, by_imbalance, _ = settings_of(config)
    top, most_imbalanced = by_c[-1].name, by_imbalance[-1].name
    claims = []
    for treatment in ("pairwise (pa)", "u3 (reweighted)"):
        claims.append(
            Claim(
                f"{treatment} generalises better than u1 as c grows (O(√c) vs O(c)): smaller gap at the largest c, "
                "slower gap growth along c",
                treatment,
                "u1 (plain)",
                (f"gap {top}", GROWTH_C),
            )
        )
        claims.append(
            Claim(
                f"{treatment} generalises better than u1 as the label imbalance grows (c fixed)",
                treatment,
                "u1 (plain)",
                (f"gap {most_imbalanced}", GROWTH_IMBALANCE),
            )
        )
        claims.append(
            Claim(
                f"{treatment} reaches a lower test ranking loss than u1 at the largest c (secondary: test loss)",
                treatment,
                "u1 (plain)",
                (f"RL {top}",),
            )
        )
    return tuple(claims)


def make_figure(result: ExperimentResult, path: Path) -> None:
    """Gap vs c, gap vs imbalance, test RL vs c and the loss's CPU time vs c (means with 95% CIs over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = result.config
    by_c, by_imbalance, _ = settings_of(config)
    plt.rcParams.update({"font.size": 11})
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5))
    (ax_gap, ax_imb), (ax_rl, ax_time) = axes
    cs = [s.labels for s in by_c]
    imbalance = [(1 - s.prevalence) / s.prevalence for s in by_imbalance]
    styles = dict(zip(LOSSES, ("-o", "-s", ":^", "-D", ":v")))
    for method, loss in LOSSES.items():
        label = f"{method} [{BOUNDS[loss]}]"
        for ax, settings, xs, prefix in (
            (ax_gap, by_c, cs, "gap"),
            (ax_imb, by_imbalance, imbalance, "gap"),
            (ax_rl, by_c, cs, "RL"),
        ):
            stats_ = [result.mean_ci(method, f"{prefix} {s.name}") for s in settings]
            ax.errorbar(xs, [m for m, _ in stats_], yerr=[h for _, h in stats_], fmt=styles[method], capsize=3,
                        label=label)  # fmt: skip
        times = [
            float(np.mean([runs[method]["extra"]["loss_ms"][str(c)] for runs in result.per_seed.values()]))
            if result.per_seed
            else math.nan
            for c in cs
        ]
        ax_time.plot(cs, times, styles[method], label=method)
    prevalence = config["prevalence"]
    ax_gap.set(xscale="log", xlabel="number of labels c", ylabel="test RL − train RL",
               title=f"Gap vs c (prevalence {prevalence:g})")  # fmt: skip
    ax_imb.set(xscale="log", xlabel="instance-wise imbalance |Y⁻|/|Y⁺| ≈ (1−ρ)/ρ", ylabel="test RL − train RL",
               title=f"Gap vs imbalance (c = {config['imbalance_labels']})")  # fmt: skip
    ax_rl.set(xscale="log", xlabel="number of labels c", ylabel="test ranking loss",
              title="Test ranking loss vs c (second table)")  # fmt: skip
    ax_time.set(xscale="log", yscale="log", xlabel="number of labels c", ylabel="CPU ms, forward + backward",
                title=f"Loss cost, batch of {config['timing_batch']}")  # fmt: skip
    for ax in (ax_gap, ax_rl, ax_time):
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.minorticks_off()
    ax_imb.set_xticks(imbalance, [f"{v:g}" for v in imbalance])
    ax_imb.minorticks_off()
    ax_gap.legend(fontsize=9, loc="upper left")
    ax_time.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


CONFIG: dict[str, Any] = {
    "labels": [10, 20, 50, 100],
    "prevalence": 0.2,
    "imbalance_labels": 50,
    "prevalences": [0.5, 0.2, 0.1, 0.05],
    "n_features": 32,
    "signal": 3.0,
    "noise": 1.0,
    "n_fit": 400,
    "n_validation": 1000,
    "n_test": 4000,
    "max_iter": 60,
    "log10_lambda_range": [-6.0, 0.0],
    "trials": 16,
    "timing_batch": 128,
    "timing_repeats": 5,
    "threads": 1,
}

#: Quick mode keeps the settings (the search space and the claims name them) and shrinks everything else.
QUICK: dict[str, Any] = {
    "n_fit": 150,
    "n_validation": 300,
    "n_test": 600,
    "max_iter": 30,
    "trials": 2,
    "timing_repeats": 2,
}


def _experiment(config: Mapping[str, Any], quick: Mapping[str, Any]) -> Experiment:
    return Experiment(
        name="multilabel",
        title="Multi-label ranking: train–test gap of univariate (u1–u4) and pairwise surrogates vs c and imbalance",
        paper=(
            "Wu, Li, Xu, Zhu. Rethinking and Reweighting the Univariate Losses for Multi-Label Ranking: "
            "Consistency and Generalization. NeurIPS 2021"
        ),
        claim=(
            "Learning with the pairwise loss or the reweighted univariate loss u3 has an O(√c) generalisation bound "
            "where the plain univariate loss u1 has O(c): their train–test gap of the ranking loss should be smaller "
            "and grow more slowly with the number of labels c."
        ),
        config=config,
        quick=quick,
        methods=_methods(config),
        claims=_claims(config),
        prepare=prepare,
        run=run,
        make_figure=make_figure,
        objective=OBJECTIVE,
        lower_is_better=frozenset(_lower_is_better(config)),
        tables=_tables(config),
    )


def _tables(config: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The docs' tables: the gap along c, the gap along the imbalance, the test ranking loss (and the loss's cost)."""
    by_c, by_imbalance, every = settings_of(config)
    top = by_c[-1].labels
    return (
        (
            f"Train–test gap of the ranking loss (test RL − train RL) along c, prevalence ρ = {config['prevalence']:g}",
            (*(f"gap {s.name}" for s in by_c), GROWTH_C),
        ),
        (
            f"Train–test gap along the label imbalance, c = {config['imbalance_labels']}",
            (*(f"gap {s.name}" for s in by_imbalance), GROWTH_IMBALANCE),
        ),
        (
            "Test ranking loss (second table) and the loss's CPU time",
            (*(f"RL {s.name}" for s in every), f"loss ms/batch c={top}"),
        ),
    )


def _lower_is_better(config: Mapping[str, Any]) -> Sequence[str]:
    _, _, every = settings_of(config)
    names = [f"{prefix} {s.name}" for s in every for prefix in ("gap", "RL", "train RL")]
    return [*names, GROWTH_C, GROWTH_IMBALANCE]


RECIPE = _experiment(CONFIG, QUICK)
