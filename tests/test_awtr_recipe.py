"""The AWTR recipe end to end on a tiny configuration, and its score-correcting model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pairloss.recipes import get_recipe, run_recipe
from pairloss.recipes.awtr import ScoreCorrector
from pairloss.training.reporting import Reporter

TINY = {
    "n_donors": 24,
    "list_size": 12,
    "epochs": 3,
    "hidden": 8,
    "n_relevant": 3,
    "curve_max_n": 4,
    "alpha_ablation": [0.0],
}


def test_untrained_corrector_ranks_like_the_existing_score() -> None:
    model = ScoreCorrector(5, hidden=4)
    features, base = torch.randn(3, 7, 5), torch.randn(3, 7)
    assert torch.equal(model(features, base), base)


def test_quick_recipe_writes_results(tmp_path) -> None:
    recipe = get_recipe("awtr")
    result = run_recipe(recipe, out=tmp_path, seeds=1, quick=True, overrides=TINY, reporter=Reporter.silent())
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    saved = json.loads(result.results_path.read_text())
    methods = saved["per_seed"]["0"]["metrics"]
    assert len(methods) == 9 and {"AWTR", "AWTR α=0.0", "KAS score only"} <= set(methods)
    for row in methods.values():
        assert set(row) >= {"P@1", "P@5", "R@10", "NDCG@10", "Kendall τ"}
        assert all(math.isfinite(v) for v in row.values())
    assert saved["verdict"] and "AWTR" in saved["verdict"]
    assert "| AWTR |" in result.table_path.read_text()


@pytest.mark.slow
def test_full_recipe(tmp_path) -> None:
    result = run_recipe(get_recipe("awtr"), out=tmp_path, seeds=3, reporter=Reporter.silent())
    assert result.summary["AWTR"]["P@1"]["n"] == 3
    assert result.summary["AWTR"]["Kendall τ"]["mean"] > result.summary["KAS score only"]["Kendall τ"]["mean"]
