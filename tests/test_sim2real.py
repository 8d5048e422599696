"""The sim2real recipe: a tiny run writes its three files with finite metrics; rollouts behave."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pairloss.data.depth import TOLERANCE, sample_states
from pairloss.recipes import get_recipe, run_recipe
from pairloss.recipes.sim2real import rollout_success
from pairloss.training.reporting import Reporter

_TINY = {"n_sim": 200, "n_test": 100, "pair_counts": [10, 50], "steps": 20, "rollouts": 20, "rollout_steps": 4}


def test_quick_run_writes_files(tmp_path):
    result = run_recipe(
        get_recipe("sim2real"), out=tmp_path, seeds=1, quick=True, overrides=_TINY, reporter=Reporter.silent()
    )
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    payload = json.loads(result.results_path.read_text())
    assert set(payload["summary"]) == {"sim-only", "mix n=10", "pairwise n=10", "mix n=50", "pairwise n=50"}
    for metrics in payload["summary"].values():
        for entry in metrics.values():
            assert math.isfinite(entry["mean"]) and 0.0 <= entry["mean"] <= 1.0
    assert "pair counts" in payload["verdict"]


class _Always(nn.Module):
    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.action), 5).float()


def test_rollout_success_extremes():
    """Inserting at once succeeds exactly for the starts already within tolerance; never inserting never does."""
    states, _ = sample_states(30, 0, aligned_fraction=0.0)
    aligned = float((np.abs(states[:, 2:4]).max(axis=1) <= TOLERANCE).mean())
    assert rollout_success(_Always(4), 30, 5, 24, seed=0) == pytest.approx(aligned)
    assert rollout_success(_Always(0), 30, 5, 24, seed=0) == 0.0


@pytest.mark.slow
def test_full_run(tmp_path):
    result = run_recipe(get_recipe("sim2real"), out=tmp_path, seeds=3, reporter=Reporter.silent())
    payload = json.loads(result.results_path.read_text())
    assert all(math.isfinite(m["real accuracy"]["mean"]) for m in payload["summary"].values())
