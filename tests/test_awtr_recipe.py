"""The AWTR recipe on the protocol: a tiny run end to end, its score-correcting model and its metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.recipes import awtr, get_recipe
from pairloss.recipes.awtr import ScoreCorrector, top_n_metrics
from pairloss.recipes.protocol import run_experiment

TINY = {"trials": 1, "n_donors": 40, "list_size": 12, "updates": 6, "validate_every": 3, "top_n": 3}


def test_untrained_corrector_ranks_like_the_existing_score() -> None:
    model = ScoreCorrector(5, hidden=4)
    features, base = torch.randn(3, 7, 5), torch.randn(3, 7)
    assert torch.equal(model(features, base), base)


def test_top_n_metrics_of_the_response_itself_are_perfect() -> None:
    target = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    perfect = top_n_metrics(target, target, top_n=10)
    assert all(value == pytest.approx(1.0) for value in perfect.values())
    reversed_ = top_n_metrics(-target, target, top_n=10)
    assert reversed_["P@10"] == 0.0 and reversed_["Kendall τ"] == pytest.approx(-1.0)
    assert set(perfect) == {"P@1", "P@5", "P@10", "NDCG@1", "NDCG@5", "NDCG@10", "Kendall τ"}


def test_every_method_is_tuned_with_the_same_budget_and_claimed_against() -> None:
    recipe = awtr.RECIPE
    tuned = {m.name for m in recipe.tuned_methods}
    assert tuned == {*awtr.BASELINES, awtr.AWTR}
    assert all("lr" in m.space and "weight_decay" in m.space for m in recipe.tuned_methods)
    controls = {c.control for c in recipe.claims if c.treatment == awtr.AWTR}
    assert controls == {*awtr.BASELINES, awtr.EXISTING}


def test_quick_recipe_writes_results(tmp_path) -> None:
    recipe = get_recipe("awtr")
    result = run_experiment(recipe, out=tmp_path, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    assert saved["mode"] == "quick" and len(saved["tuning"]) == 8
    methods = saved["per_seed"]["0"]
    assert len(methods) == 9 and {awtr.AWTR, awtr.EXISTING} <= set(methods)
    for run in methods.values():
        assert set(run["metrics"]) >= {"P@1", "P@5", "NDCG@10", "Kendall τ"}
        assert all(math.isfinite(v) for v in run["metrics"].values())
    verdicts = {(v["claim"], v["metric"]) for v in saved["verdicts"]}
    assert ("AWTR beats RankNet", "NDCG@10") in verdicts
    assert ("AWTR gives up overall accuracy (RankNet's Kendall τ is higher)", "Kendall τ") in verdicts
    assert "| AWTR (variant) |" in result.table_path.read_text()


@pytest.mark.slow
def test_full_recipe(tmp_path) -> None:
    result = run_experiment(get_recipe("awtr"), out=tmp_path)
    assert result.mode == "full" and len(result.per_seed) == 5
    summary = result.summary
    assert summary[awtr.AWTR]["Kendall τ"]["mean"] > summary[awtr.EXISTING]["Kendall τ"]["mean"]
