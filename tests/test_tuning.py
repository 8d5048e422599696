"""Equal-budget tuning: a seeded Optuna search over a documented space, resumable, with failed trials."""

from __future__ import annotations

import math

import pytest

from pairloss.recipes.tuning import Choice, Float, Int, TrialRecord, space_to_json, tune

SPACE = {"lr": Float(1e-4, 1e-1, log=True), "width": Int(1, 8), "act": Choice(("relu", "tanh"))}


def _objective(params: dict) -> float:
    return -((math.log10(params["lr"]) + 2.0) ** 2) - 0.1 * abs(params["width"] - 5) + (params["act"] == "tanh")


def test_search_is_seeded_and_finds_a_good_point() -> None:
    first = tune(_objective, SPACE, 30, seed=3)
    again = tune(_objective, SPACE, 30, seed=3)
    assert first.best == again.best and [t.params for t in first.history] == [t.params for t in again.history]
    assert first.trials == len(first.history) == 30
    assert first.best_value == max(t.value for t in first.history if t.value is not None)
    assert first.best["act"] == "tanh" and 10**-3 < first.best["lr"] < 10**-1
    assert first.space == space_to_json(SPACE)
    assert first.space["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}


def test_resume_runs_only_the_missing_trials() -> None:
    calls: list[dict] = []

    def counted(params: dict) -> float:
        calls.append(params)
        return _objective(params)

    partial = tune(counted, SPACE, 4, seed=0)
    calls.clear()
    resumed = tune(counted, SPACE, 6, seed=0, history=partial.history)
    assert len(calls) == 2 and resumed.trials == 6 and len(resumed.history) == 6
    assert resumed.history[:4] == partial.history


def test_failed_trials_are_recorded_and_never_chosen() -> None:
    seen: list[TrialRecord] = []

    def flaky(params: dict) -> float:
        return float("nan") if params["width"] % 2 else _objective(params)

    result = tune(flaky, SPACE, 12, seed=1, on_trial=seen.append)
    assert len(seen) == 12 and any(t.value is None for t in seen)
    assert result.best["width"] % 2 == 0
    with pytest.raises(RuntimeError, match="non-finite"):
        tune(lambda p: float("nan"), SPACE, 3)


def test_invalid_spaces_and_budgets() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Float(1.0, 1.0)
    with pytest.raises(ValueError, match="log-scale"):
        Float(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="low < high"):
        Int(3, 2)
    with pytest.raises(ValueError, match="two values"):
        Choice(("only",))
    with pytest.raises(ValueError, match="trials"):
        tune(_objective, SPACE, 0)
    with pytest.raises(ValueError, match="space is empty"):
        tune(_objective, {}, 3)
