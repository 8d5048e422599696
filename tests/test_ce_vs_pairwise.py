"""The ce-vs-pairwise recipe: a tiny run writes its three files with finite metrics and an unbroken bound."""

from __future__ import annotations

import json
import math

import pytest

from pairloss.recipes import get_recipe, run_recipe
from pairloss.recipes.ce_vs_pairwise import LOSSES, bound_violations
from pairloss.training.reporting import Reporter


def _check(result, rows: int) -> None:
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    payload = json.loads(result.results_path.read_text())
    assert len(payload["summary"]) == rows
    for metrics in payload["summary"].values():
        for entry in metrics.values():
            assert math.isfinite(entry["mean"])
    assert bound_violations(result) == 0
    trace = next(iter(payload["per_seed"].values()))["extra"]["bound_trace"]["digits"]
    assert len(trace) > 0 and all(ce >= lower - 1e-6 * (1 + abs(lower)) for ce, _, lower in trace)
    assert "violated at 0 of" in payload["verdict"]


def test_quick_run_writes_files(tmp_path):
    recipe = get_recipe("ce-vs-pairwise")
    result = run_recipe(recipe, out=tmp_path, seeds=1, quick=True, overrides={"epochs": 1}, reporter=Reporter.silent())
    _check(result, len(LOSSES))


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        run_recipe(
            get_recipe("ce-vs-pairwise"),
            out=tmp_path,
            seeds=1,
            overrides={"epochs": 1, "datasets": ["mnist"]},
            reporter=Reporter.silent(),
        )


@pytest.mark.slow
def test_full_run(tmp_path):
    result = run_recipe(get_recipe("ce-vs-pairwise"), out=tmp_path, seeds=3, reporter=Reporter.silent())
    _check(result, len(LOSSES) * len(result.config["datasets"]))
