"""The agent scorer (CNN / engineered / combined) and the agent-prioritisation recipe on a tiny configuration."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.models.agents import AgentScorer
from pairloss.recipes import run_experiment

TINY = {"n_fit": 10, "n_validation": 6, "n_test": 6, "n_max": 10, "updates": 2, "validate_every": 1, "batch_scenes": 5,
        "latency_scenes": 2, "grid": 8, "trials": 1}  # fmt: skip


@pytest.mark.parametrize("mode", ["cnn", "features", "combined"])
def test_scorer_modes(mode: str) -> None:
    model = AgentScorer(7, mode, channels=4, grid=8)
    raster, features = torch.randn(5, 4, 8, 8), torch.randn(5, 7)
    scores = model(raster, features)
    assert scores.shape == (5,)
    scores.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ablations_ignore_the_dropped_branch() -> None:
    raster, features = torch.randn(4, 4, 8, 8), torch.randn(4, 7)
    cnn, engineered = AgentScorer(7, "cnn", grid=8), AgentScorer(7, "features", grid=8)
    assert torch.equal(cnn(raster, features), cnn(raster, torch.randn(4, 7)))
    assert torch.equal(engineered(raster, features), engineered(torch.randn(4, 4, 8, 8), features))


def test_scorer_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="mode"):
        AgentScorer(7, "both")
    with pytest.raises(ValueError, match="divisible"):
        AgentScorer(7, grid=10)
    model = AgentScorer(7, grid=8)
    with pytest.raises(ValueError, match="agents"):
        model(torch.randn(5, 4, 8, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((2, 4, 8, 8), math.nan), torch.randn(2, 7))
    with pytest.raises(ValueError, match="dimensions"):
        model(torch.randn(4, 8, 8), torch.randn(4, 7))


def test_quick_recipe_writes_results(tmp_path) -> None:
    from pairloss.recipes.agents import RECIPE

    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick"
    assert set(saved["tuning"]) == {"CNN only", "engineered only", "combined"}
    assert all(len(entry["history"]) == TINY["trials"] for entry in saved["tuning"].values())
    methods = saved["per_seed"]["0"]
    assert set(methods) == {"nearest first (heuristic)", "CNN only", "engineered only", "combined"}
    for name, run in methods.items():
        assert {"NDCG@3", "P@5", "R@10"} <= set(run["metrics"])
        assert all(math.isfinite(v) for v in run["metrics"].values()), name
    assert methods["combined"]["metrics"]["latency ms/scene"] > 0
    assert "scene" in methods["combined"]["extra"]
    claims = {(v["control"], v["metric"]) for v in saved["verdicts"]}
    assert ("CNN only", "NDCG@5") in claims and ("engineered only", "NDCG@5") in claims


@pytest.mark.slow
def test_full_recipe(tmp_path) -> None:
    from pairloss.recipes.agents import RECIPE

    result = run_experiment(RECIPE, out=tmp_path)
    summary = result.summary
    assert summary["combined"]["NDCG@5"]["n"] == 5
    assert summary["combined"]["NDCG@5"]["mean"] > summary["nearest first (heuristic)"]["NDCG@5"]["mean"]
