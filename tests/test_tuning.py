"""Equal-budget tuning: a seeded Optuna search over a documented space, resumable, with failed trials."""

from __future__ import annotations

import math

import pytest

from pairloss.recipes.report import tuning_table
from pairloss.recipes.tuning import Choice, Float, Int, TrialRecord, at_bounds, space_to_json, tune

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


def test_at_bounds_flags_values_near_either_end_of_the_range() -> None:
    space = space_to_json({"lr": Float(1e-4, 3e-3, log=True), "margin": Float(0.0, 1.0), "k": Int(1, 9)})
    assert at_bounds(space, {"lr": 2.98e-3, "margin": 0.5, "k": 5}) == {"lr": "high"}
    assert at_bounds(space, {"lr": 1.0e-3, "margin": 0.01, "k": 1}) == {"margin": "low", "k": "low"}
    assert at_bounds(space, {"lr": 1.0e-3, "margin": 0.5, "k": 5}) == {}
    # on a log scale the middle of [1e-4, 3e-3] is its geometric mean, not its arithmetic one
    assert at_bounds(space, {"lr": 1.6e-3}) == {}
    assert at_bounds({"c": {"type": "choice", "choices": [1, 2]}}, {"c": 2}) == {}


def test_tuning_result_records_the_values_at_a_bound() -> None:
    result = tune(lambda p: p["x"], {"x": Float(0.0, 1.0)}, trials=16, seed=0)
    assert result.to_json()["at_bound"] == {"x": "high"}


def test_tuning_table_marks_and_explains_values_at_a_bound() -> None:
    space = space_to_json({"lr": Float(1e-4, 3e-3, log=True)})
    table = tuning_table(
        {
            "edge": {"trials": 4, "space": space, "best": {"lr": 2.99e-3}, "best_value": 0.5},
            "inside": {"trials": 4, "space": space, "best": {"lr": 6e-4}, "best_value": 0.4},
        },
        "validation R@1",
    )
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "(at high end)" in rows["edge"] and "at " not in rows["inside"].split("|")[4]
    assert "may lie outside the range" in table
    plain = tuning_table({"inside": {"trials": 4, "space": space, "best": {"lr": 6e-4}, "best_value": 0.4}}, "R@1")
    assert "outside the range" not in plain
