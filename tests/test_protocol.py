"""The experiment protocol end to end on a toy experiment: tuning budget, paired seeds, verdicts, resume, docs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from pairloss.recipes.protocol import (
    RESULTS_KEYS,
    Claim,
    Experiment,
    ExperimentResult,
    Method,
    PrepareContext,
    RunContext,
    RunResult,
    Splits,
    cache_key,
    run_experiment,
)
from pairloss.recipes.render import BEGIN, END, README_BEGIN, README_END, check_docs, publish
from pairloss.recipes.report import plot_verdicts
from pairloss.recipes.tuning import Float
from pairloss.training.loop import FitConfig, fit, optimizer_step

CALLS: list[dict] = []


def _prepare(ctx: PrepareContext) -> Splits:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=generator)
    y = x @ torch.tensor([1.0, -1.0, 2.0]) + 0.1 * torch.randn(300, generator=generator)
    parts = [(x[i : i + 100], y[i : i + 100]) for i in (0, 100, 200)]
    return Splits(*parts, info={"samples": 300})


def _run(ctx: RunContext) -> RunResult:
    first_draw = float(torch.rand(()))  # the same for every method of a seed: the runner seeded torch
    features = ctx.settings["features"]
    model = torch.nn.Linear(features, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=ctx.settings["lr"])
    x, y = ctx.data.fit

    def update(step: int) -> float:
        return optimizer_step(optimizer, lambda: (model(x[:, :features]).squeeze(1) - y).pow(2).mean())

    @torch.no_grad()
    def mse(split: tuple[torch.Tensor, torch.Tensor]) -> float:
        xs, ys = split
        noise = ctx.settings["noise"] * torch.randn(ys.shape, generator=torch.Generator().manual_seed(ctx.seed))
        return float((model(xs[:, :features]).squeeze(1) + noise - ys).pow(2).mean())

    fit(
        model,
        optimizer,
        update,
        FitConfig(updates=30, validate_every=10),
        validate=lambda: -mse(ctx.data.validation),
        checkpoint=ctx.checkpoint,
    )
    CALLS.append(
        {
            "method": ctx.method,
            "phase": ctx.phase,
            "seed": ctx.seed,
            "test": ctx.data.test,
            "first_draw": first_draw,
            "label": ctx.label,
        }
    )
    error = mse(ctx.evaluation)
    return RunResult({"score": -error, "mse": error}, {"features": features})


def _figure(result: ExperimentResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    plot_verdicts(ax, result.verdicts, metric="mse")
    fig.savefig(path, dpi=60)
    plt.close(fig)


BASE = {"features": 2, "noise": 0.0}
TOY = Experiment(
    name="toy",
    title="A toy experiment",
    paper="Nobody. A toy. 2024",
    claim="All features help; added noise hurts.",
    config={"trials": 3, "threads": 1},
    quick={},
    methods=(
        Method("base", space={"lr": Float(0.01, 0.3, log=True)}, settings=BASE),
        Method("all features", settings={**BASE, "features": 3}, tuned_as="base"),
        Method("noisy", settings={**BASE, "noise": 1.0}, tuned_as="base"),
        Method("base again", settings=BASE, tuned_as="base"),
    ),
    claims=(
        Claim("all features beat two", "all features", "base", ("mse", "score")),
        Claim("noise helps", "noisy", "base", ("mse",)),
        Claim("a copy differs", "base again", "base", ("mse",)),
    ),
    prepare=_prepare,
    run=_run,
    make_figure=_figure,
    objective="score",
    lower_is_better=frozenset({"mse"}),
)


def test_toy_run_tunes_equally_pairs_seeds_and_judges(tmp_path: Path) -> None:
    CALLS.clear()
    result = run_experiment(TOY, out=tmp_path, seeds=3, quick=True)
    saved = json.loads(result.results_path.read_text())
    assert set(RESULTS_KEYS) <= set(saved) and saved["mode"] == "quick" and saved["seeds"] == [0, 1, 2]
    assert saved["data"] == {"samples": 300} and saved["wall_seconds"] > 0
    assert saved["environment"]["torch_threads"] == 1  # the run's setting, not the caller's
    assert set(saved["tuning"]) == {"base"}
    tuning = saved["tuning"]["base"]
    assert tuning["trials"] == 3 and len(tuning["history"]) == 3 and 0.01 <= tuning["best"]["lr"] <= 0.3
    assert tuning["space"] == {"lr": {"type": "float", "low": 0.01, "high": 0.3, "log": True}}
    tuning_calls = [c for c in CALLS if c["phase"] == "tuning"]
    assert len(tuning_calls) == 3 and all(c["test"] is None for c in tuning_calls)
    assert tuning_calls[-1]["label"] == "tuning base: trial 3/3"
    finals = [c for c in CALLS if c["phase"] == "final"]
    assert len(finals) == 3 * 4 and all(c["test"] is not None for c in finals)
    for seed in range(3):
        draws = {c["first_draw"] for c in finals if c["seed"] == seed}
        assert len(draws) == 1  # same initialisation for every method of a seed
    verdicts = {(v["claim"], v["metric"]): v for v in saved["verdicts"]}
    assert verdicts["all features beat two", "mse"]["verdict"] == "held"
    assert verdicts["all features beat two", "score"]["verdict"] == "held"
    assert verdicts["noise helps", "mse"]["verdict"] == "not held"
    copy = verdicts["a copy differs", "mse"]
    assert copy["verdict"] == "inconclusive" and copy["difference"] == 0.0 and copy["ci95"] == [0.0, 0.0]
    for v in saved["verdicts"]:
        assert set(v) >= {"claim", "metric", "difference", "ci95", "seeds", "verdict"} and v["seeds"] == 3
        low, high = v["ci95"]
        assert low <= v["difference"] <= high
    noisy = verdicts["noise helps", "mse"]
    per_seed = [
        saved["per_seed"][str(s)]["base"]["metrics"]["mse"] - saved["per_seed"][str(s)]["noisy"]["metrics"]["mse"]
        for s in range(3)
    ]
    assert noisy["differences"] == pytest.approx(per_seed)  # lower is better: control − treatment
    table = result.table_path.read_text()
    assert "| all features beat two | mse |" in table and "**held**" in table and "lr ∈ [0.01, 0.3, log]" in table
    assert result.figure_path.stat().st_size > 0
    assert not any((tmp_path / "toy" / "checkpoints").iterdir())


def test_rerun_resumes_without_training_again(tmp_path: Path) -> None:
    first = run_experiment(TOY, out=tmp_path, seeds=2, quick=True)
    CALLS.clear()
    again = run_experiment(TOY, out=tmp_path, seeds=2, quick=True)
    assert CALLS == []
    assert again.payload["per_seed"] == first.payload["per_seed"]
    assert again.payload["wall_seconds"] >= first.payload["wall_seconds"]
    CALLS.clear()
    run_experiment(TOY, out=tmp_path, seeds=3, quick=True)  # one more seed: only its four runs
    assert [(c["phase"], c["seed"]) for c in CALLS] == [("final", 2)] * 4
    CALLS.clear()
    stale = tmp_path / "toy" / "checkpoints" / "final-base-0.pt"  # left by an interrupted run of the old config
    stale.write_bytes(b"not this configuration's state")
    with pytest.warns(UserWarning, match="another protocol version, recipe, mode or configuration"):
        run_experiment(TOY, out=tmp_path, seeds=2, quick=True, overrides={"trials": 4})  # another config: from scratch
    assert not stale.exists()
    assert (tmp_path / "toy" / "results.json.bak").exists()  # the replaced results are kept
    assert len([c for c in CALLS if c["phase"] == "tuning"]) == 4


def test_full_runs_need_five_seeds_and_definitions_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 5 seeds"):
        run_experiment(TOY, out=tmp_path, seeds=3)
    with pytest.raises(ValueError, match="unknown config keys"):
        run_experiment(TOY, out=tmp_path, quick=True, overrides={"nope": 1})
    fields = {k: getattr(TOY, k) for k in TOY.__dataclass_fields__}
    with pytest.raises(ValueError, match="unknown method"):
        Experiment(**{**fields, "claims": (Claim("x", "ghost", "base", ("mse",)),)})
    with pytest.raises(ValueError, match="tuned_as and its own space"):
        Experiment(**{**fields, "methods": (*TOY.methods, Method("z", space={"lr": Float(0.1, 1)}, tuned_as="base"))})
    with pytest.raises(ValueError, match="no tuned method"):
        Experiment(**{**fields, "methods": (*TOY.methods, Method("z", tuned_as="noisy"))})
    with pytest.raises(ValueError, match="unique"):
        Experiment(**{**fields, "methods": (*TOY.methods, TOY.methods[0])})
    with pytest.raises(ValueError, match="'trials'"):
        Experiment(**{**fields, "config": {}})


def _repository(root: Path) -> None:
    (root / "docs" / "recipes").mkdir(parents=True)
    (root / "docs" / "recipes" / "toy.md").write_text(
        f"# toy\n\nHand-written intro.\n\n{BEGIN.format(name='toy')}\n{END}\n\nHand-written end.\n"
    )
    (root / "README.md").write_text(f"# project\n\n{README_BEGIN}\n{README_END}\n")


def test_docs_are_generated_from_a_published_full_run_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _repository(root)
    recipes = {"toy": TOY}
    assert check_docs(root, recipes) == [root / "docs" / "recipes" / "toy.md", root / "README.md"]
    quick = run_experiment(TOY, out=tmp_path / "quick", seeds=2, quick=True)
    with pytest.raises(ValueError, match="only full runs"):
        publish(quick.out_dir, root, recipes)
    full = run_experiment(TOY, out=tmp_path / "runs", seeds=5)
    publish(full.out_dir, root, recipes)
    assert (root / "docs" / "results" / "toy" / "figure.png").exists()
    assert check_docs(root, recipes) == []
    page = (root / "docs" / "recipes" / "toy.md").read_text()
    assert page.startswith("# toy\n\nHand-written intro.") and page.endswith("Hand-written end.\n")
    assert "Mode **full**, 5 seeds" in page and "| all features beat two | mse |" in page
    assert "![A toy experiment](../results/toy/figure.png)" in page
    readme = (root / "README.md").read_text()
    assert "| [`toy`](docs/recipes/toy.md) | Nobody |" in readme and "full · 5 seeds ·" in readme
    assert "held" in readme
    edited = page.replace("**held**", "**inconclusive**", 1)
    (root / "docs" / "recipes" / "toy.md").write_text(edited)
    assert check_docs(root, recipes) == [root / "docs" / "recipes" / "toy.md"]
    (root / "docs" / "recipes" / "toy.md").write_text("# toy without markers\n")
    with pytest.raises(ValueError, match="no generated block"):
        check_docs(root, recipes)


def test_cache_key_follows_exactly_its_keys() -> None:
    config = {"classes": 10, "size": 16, "updates": 100}
    key = cache_key(config, ("classes", "size"))
    assert len(key) == 12 and key == cache_key(dict(reversed(config.items())), ("size", "classes"))
    assert cache_key({**config, "updates": 5}, ("classes", "size")) == key  # a value not keyed: the same artefact
    assert cache_key({**config, "size": 24}, ("classes", "size")) != key
    with pytest.raises(KeyError):
        cache_key(config, ("missing",))
