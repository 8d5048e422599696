"""Paired statistics for a claim: the mean paired difference over seeds, its 95% confidence interval, a verdict.

Every compared method of a recipe runs on the same seeds, and seed ``s`` gives every method the same data and the
same initialisation, so the claim "A is better than B on metric m" is judged on the **paired differences**
``d_s = m(A, s) − m(B, s)`` (``m(B, s) − m(A, s)`` for a metric where lower is better, so that a positive
difference always favours the claim):

* ``difference``: the mean of the ``d_s``;
* ``ci95``: its 95% confidence interval, by default Student's t interval
  ``mean ± t_{0.975, n−1} · sd(d) / √n`` (``scipy.stats.t.interval``), or a BCa bootstrap interval
  (``scipy.stats.bootstrap``);
* ``verdict``: ``held`` when the whole interval is above zero, ``not held`` when it is below zero, and
  ``inconclusive`` when it contains zero (a difference inside the noise is not a finding).

With fewer than two seeds there is no interval: ``ci95`` is ``[None, None]`` and the verdict is ``inconclusive``.
When every paired difference is the same number the interval is that number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["VERDICTS", "PairedComparison", "mean_interval", "paired_comparison", "verdict_for"]

Verdict = Literal["held", "not held", "inconclusive"]
#: The three verdicts, in the order: CI above zero, CI below zero, CI containing zero.
VERDICTS: tuple[Verdict, ...] = ("held", "not held", "inconclusive")


@dataclass(frozen=True)
class PairedComparison:
    """The paired differences of one claim on one metric, their mean, its 95% CI and the verdict."""

    differences: tuple[float, ...]
    difference: float
    ci95: tuple[float | None, float | None]
    verdict: Verdict

    @property
    def seeds(self) -> int:
        return len(self.differences)


def verdict_for(low: float | None, high: float | None) -> Verdict:
    """``held`` if ``low > 0``, ``not held`` if ``high < 0``, else (or without an interval) ``inconclusive``."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if low > high:
        raise ValueError(f"the interval's low end {low} is above its high end {high}")
    if low > 0:
        return "held"
    if high < 0:
        return "not held"
    return "inconclusive"


def _interval(differences: np.ndarray, method: str, confidence: float, seed: int) -> tuple[float, float]:
    from scipy import stats

    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        return mean, mean
    if method == "t":
        sem = float(differences.std(ddof=1)) / math.sqrt(differences.size)
        low, high = stats.t.interval(confidence, differences.size - 1, loc=mean, scale=sem)
        return float(low), float(high)
    result = stats.bootstrap(
        (differences,), np.mean, confidence_level=confidence, method="BCa", rng=np.random.default_rng(seed)
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_comparison(
    treatment: Sequence[float],
    control: Sequence[float],
    *,
    lower_is_better: bool = False,
    method: Literal["t", "bootstrap"] = "t",
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Judge "``treatment`` is better than ``control``" on paired per-seed values (same seeds, same order).

    Args:
        treatment: the claimed-better method's metric, one value per seed.
        control: the other method's metric on the same seeds.
        lower_is_better: the metric improves downwards (a loss, an error): the difference is ``control −
            treatment``.
        method: ``"t"`` (Student's t interval) or ``"bootstrap"`` (BCa, ``seed`` for its resampling).
        confidence: the interval's coverage (0.95 for the verdicts of the recipes).

    Returns:
        The differences, their mean, the interval and the verdict (see the module docstring).
    """
    if len(treatment) != len(control):
        raise ValueError(f"treatment has {len(treatment)} values but control has {len(control)}: pair them by seed")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a, b = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("treatment and control must be finite (a NaN metric cannot be judged)")
    differences = b - a if lower_is_better else a - b
    if differences.size == 0:
        return PairedComparison((), float("nan"), (None, None), "inconclusive")
    mean = float(differences.mean())
    if differences.size < 2:
        return PairedComparison(tuple(differences.tolist()), mean, (None, None), "inconclusive")
    low, high = _interval(differences, method, confidence, seed)
    return PairedComparison(tuple(differences.tolist()), mean, (low, high), verdict_for(low, high))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The mean of the finite ``values`` and the half-width of its Student's t interval (error bars over seeds).

    NaN values are skipped; with no value the mean is NaN, with one value the half-width is 0.
    """
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, 0.0
    mean = float(finite.mean())
    if finite.size < 2:
        return mean, 0.0
    low, _ = _interval(finite, "t", confidence, seed=0)
    return mean, mean - low
