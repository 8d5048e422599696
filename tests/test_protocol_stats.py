"""Verdict logic: paired differences, their 95% interval and the three verdicts, on synthetic seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pairloss.recipes.stats import mean_interval, paired_comparison, verdict_for


def _seeds(differences: list[float], base: float = 0.5) -> tuple[list[float], list[float]]:
    """Control values that vary from seed to seed, and treatment = control + the given paired difference."""
    control = [base + 0.05 * np.sin(i) for i in range(len(differences))]
    return [c + d for c, d in zip(control, differences)], control


@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        ([0.031, 0.024, 0.040, 0.028, 0.035], "held"),  # every seed gains, little spread: CI above zero
        ([-0.020, -0.031, -0.025, -0.018, -0.029], "not held"),  # every seed loses: CI below zero
        ([0.030, -0.025, 0.012, -0.008, 0.004], "inconclusive"),  # gains and losses: CI contains zero
        ([0.010, 0.012, 0.009, -0.030, 0.011], "inconclusive"),  # positive mean, but one seed disagrees a lot
    ],
)
def test_synthetic_paired_differences_get_the_right_verdict(differences: list[float], expected: str) -> None:
    treatment, control = _seeds(differences)
    result = paired_comparison(treatment, control)
    assert result.verdict == expected
    assert result.seeds == len(differences)
    assert result.difference == pytest.approx(np.mean(differences))
    low, high = result.ci95
    assert low is not None and high is not None and low < result.difference < high


def test_interval_is_students_t_on_the_differences() -> None:
    differences = np.array([0.3, 0.1, 0.25, 0.05, 0.2, 0.15])
    treatment, control = _seeds(differences.tolist())
    low, high = paired_comparison(treatment, control).ci95
    mean, sem = differences.mean(), differences.std(ddof=1) / math.sqrt(differences.size)
    half = stats.t.ppf(0.975, differences.size - 1) * sem
    assert low == pytest.approx(mean - half) and high == pytest.approx(mean + half)


def test_unpaired_spread_does_not_hide_a_consistent_paired_gain() -> None:
    # the control varies a lot across seeds (std 0.1), the paired gain is a steady +0.01
    control = [0.3, 0.5, 0.4, 0.6, 0.45]
    treatment = [c + 0.01 + 0.001 * i for i, c in enumerate(control)]
    assert paired_comparison(treatment, control).verdict == "held"


def test_lower_is_better_counts_a_decrease_as_a_gain() -> None:
    errors_control = [0.20, 0.22, 0.19, 0.21, 0.20]
    errors_treatment = [e - 0.03 for e in errors_control]
    assert paired_comparison(errors_treatment, errors_control, lower_is_better=True).verdict == "held"
    assert paired_comparison(errors_treatment, errors_control).verdict == "not held"


def test_bootstrap_interval_agrees_on_clear_cases() -> None:
    for differences, expected in (
        ([0.03, 0.02, 0.04, 0.03, 0.035, 0.025], "held"),
        ([-0.03] * 5 + [-0.02], "not held"),
    ):
        treatment, control = _seeds(differences)
        assert paired_comparison(treatment, control, method="bootstrap").verdict == expected


def test_degenerate_cases() -> None:
    one = paired_comparison([0.6], [0.5])
    assert one.verdict == "inconclusive" and one.ci95 == (None, None) and one.difference == pytest.approx(0.1)
    same = paired_comparison([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert same.ci95 == pytest.approx((0.1, 0.1)) and same.verdict == "held"
    zero = paired_comparison([0.5, 0.6], [0.5, 0.6])
    assert zero.verdict == "inconclusive"
    assert paired_comparison([], []).verdict == "inconclusive"


def test_invalid_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        paired_comparison([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="method"):
        paired_comparison([0.1, 0.2], [0.1, 0.2], method="z")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison([0.1, 0.2], [0.1, 0.2], confidence=1.5)


def test_verdict_for_interval_ends() -> None:
    assert verdict_for(0.01, 0.02) == "held"
    assert verdict_for(-0.02, -0.01) == "not held"
    assert verdict_for(-0.01, 0.02) == "inconclusive"
    assert verdict_for(0.0, 0.02) == "inconclusive"  # touching zero is not above it
    assert verdict_for(None, None) == "inconclusive"
    with pytest.raises(ValueError, match="above its high end"):
        verdict_for(0.2, 0.1)


def test_mean_interval_is_the_t_interval_half_width_and_skips_nan():
    values = [0.61, 0.64, 0.58, 0.66, 0.63]
    mean, half = mean_interval([*values, float("nan")])
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((high - low) / 2)
    assert mean_interval([0.5]) == (0.5, 0.0)
    assert math.isnan(mean_interval([])[0])
