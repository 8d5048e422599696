"""The sim2real recipe: the policy's shapes and errors, rollouts at their extremes, a tiny run on the protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pairloss.data.depth import TOLERANCE, sample_states
from pairloss.models.policy import DepthPolicy
from pairloss.recipes import run_experiment
from pairloss.recipes.sim2real import RECIPE, rollout_success

TINY = {
    "trials": 1,
    "sim_images": 120,
    "pairs": 8,
    "validation": 30,
    "test": 40,
    "real_reference": 60,
    "updates": 6,
    "validate_every": 3,
    "rollouts": 10,
    "rollout_steps": 4,
}


def test_quick_run_writes_files(tmp_path):
    result = run_experiment(RECIPE, out=tmp_path, seeds=2, quick=True, overrides=TINY)
    for path in (result.results_path, result.table_path, result.figure_path):
        assert path.exists() and path.stat().st_size > 0
    payload = json.loads(result.results_path.read_text())
    assert list(payload["summary"]) == ["sim-only", "naive mix", "pairwise", "real-trained (reference)"]
    for metrics in payload["summary"].values():
        assert set(metrics) == {"real accuracy", "sim accuracy", "real rollout success"}
        for entry in metrics.values():
            assert math.isfinite(entry["mean"]) and 0.0 <= entry["mean"] <= 1.0
    # equal budgets: every compared method gets the same number of trials; the reference reuses sim-only's values
    assert {name: t["trials"] for name, t in payload["tuning"].items()} == {
        "sim-only": 1,
        "naive mix": 1,
        "pairwise": 1,
    }
    assert "pair_weight" in payload["tuning"]["pairwise"]["best"]
    assert payload["methods"]["real-trained (reference)"]["tuned_as"] == "sim-only"
    assert {(v["treatment"], v["control"]) for v in payload["verdicts"]} == {
        ("pairwise", "sim-only"),
        ("pairwise", "naive mix"),
    }


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
    assert rollout_success(_Always(4), 30, 5, 32, seed=0) == pytest.approx(aligned)
    assert rollout_success(_Always(0), 30, 5, 32, seed=0) == 0.0


def test_depth_policy_shapes_and_errors():
    policy = DepthPolicy(image_size=32, num_actions=5, embedding_size=8)
    images = torch.randn(3, 1, 32, 32)
    assert policy.embed(images).shape == (3, 8)
    assert policy(images).shape == (3, 5)
    odd = DepthPolicy(image_size=27)
    assert odd(torch.randn(2, 1, 27, 27)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"\[N, 1, 32, 32\]"):
        policy(torch.randn(3, 1, 24, 24))
    with pytest.raises(ValueError, match="image_size"):
        DepthPolicy(image_size=4)


@pytest.mark.slow
def test_quick_configuration(tmp_path):
    result = run_experiment(RECIPE, out=tmp_path, quick=True)
    assert len(result.verdicts) == 4
