"""The agent scorer (CNN / engineered / combined) and the agent-prioritisation recipe on a tiny configuration."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.models.agents import AgentScorer
from pairloss.recipes import get_recipe, run_recipe
from pairloss.training.reporting import Reporter

TINY = {"n_train": 10, "n_test": 6, "n_max": 10, "epochs": 1, "batch_scenes": 5, "latency_scenes": 2, "grid": 8}


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
    recipe = get_recipe("agents")
    result = run_recipe(recipe, out=tmp_path, seeds=1, quick=True, overrides=TINY, reporter=Reporter.silent())
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    methods = saved["per_seed"]["0"]["metrics"]
    assert set(methods) == {"nearest first (heuristic)", "CNN only", "engineered only", "combined"}
    for name, row in methods.items():
        assert {"NDCG@3", "P@5", "R@10"} <= set(row)
        assert all(math.isfinite(v) for v in row.values()), name
    assert methods["combined"]["latency ms/scene"] > 0
    assert saved["verdict"].startswith("Claim")


@pytest.mark.slow
def test_full_recipe(tmp_path) -> None:
    result = run_recipe(get_recipe("agents"), out=tmp_path, seeds=3, reporter=Reporter.silent())
    summary = result.summary
    assert summary["combined"]["NDCG@5"]["n"] == 3
    assert summary["combined"]["NDCG@5"]["mean"] > summary["nearest first (heuristic)"]["NDCG@5"]["mean"]
