"""How per-element losses become one number: pytorch-metric-learning's reducers.

A loss produces one loss per *element*: per pair (contrastive, NT-Xent, lifted structure), per triplet (triplet
margin) or per anchor (multi-similarity, circle, SupCon). A reducer keeps the elements whose loss lies in an open
interval and averages (or sums) them:

==========================  ===========================  =====================================================
reducer                     kept elements                result
==========================  ===========================  =====================================================
:class:`MeanReducer`        all                          mean (0 without elements)
:class:`AvgNonZeroReducer`  ``ℓ > 0``                    mean of the kept (0 when none is kept)
:class:`ThresholdReducer`   ``low < ℓ < high``           mean of the kept (0 when none is kept)
:class:`SumReducer`         all                          sum
:class:`DoNothingReducer`   all                          the per-element losses themselves (``reducer="none"``)
==========================  ===========================  =====================================================

Every reduction but the last is a function of two sums, ``Σ_kept ℓ`` and ``#kept``, so the engine computes them
block by block and never holds the per-element losses. A loss with several kinds of elements (the positive and
negative pairs of the contrastive loss) reduces each kind on its own and adds the results, as PML does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "REDUCERS",
    "AvgNonZeroReducer",
    "DoNothingReducer",
    "MeanReducer",
    "Reducer",
    "SumReducer",
    "ThresholdReducer",
    "get_reducer",
]


class Reducer:
    """Keep the elements with ``low < ℓ < high`` (a bound of ``None`` is no bound); average them, or sum them.

    Subclasses only fix the three settings; :meth:`keep` and :meth:`finish` do the work.
    """

    def __init__(self, low: float | None = None, high: float | None = None, average: bool = True) -> None:
        for name, bound in (("low", low), ("high", high)):
            if bound is not None and not (isinstance(bound, int | float) and not math.isnan(bound)):
                raise ValueError(f"{name} must be a number or None, got {bound!r}")
        if low is not None and high is not None and not low < high:
            raise ValueError(f"low must be < high, got low={low}, high={high}")
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)
        self.average = average

    @property
    def filters(self) -> bool:
        """Whether some elements may be left out (a bound is set)."""
        return self.low is not None or self.high is not None

    def keep(self, losses: Tensor) -> Tensor:
        """Boolean mask of the elements that count."""
        kept = torch.ones_like(losses, dtype=torch.bool)
        if self.low is not None:
            kept &= losses > self.low
        if self.high is not None:
            kept &= losses < self.high
        return kept

    def keeps_zero(self) -> bool:
        """Whether an element with loss exactly 0 counts (it adds nothing to the sum, but to the count)."""
        return (self.low is None or self.low < 0) and (self.high is None or self.high > 0)

    def finish(self, total: Tensor, count: Tensor) -> Tensor:
        """The reduced loss from ``Σ_kept ℓ`` and ``#kept``: their ratio (0 when nothing is kept), or the sum."""
        if not self.average:
            return total
        return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))

    def reduce(self, losses: Tensor) -> Tensor:
        """The reduction of an explicit vector of per-element losses (the dense reference of the engine's sums)."""
        kept = self.keep(losses)
        zero = losses.new_zeros(())
        total = torch.where(kept, losses, zero).sum()
        return self.finish(total, kept.sum().to(losses.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanReducer(Reducer):
    """The mean over all elements (PML's ``MeanReducer``)."""

    def __init__(self) -> None:
        super().__init__()


class AvgNonZeroReducer(Reducer):
    """The mean over the elements with a positive loss (PML's ``AvgNonZeroReducer``)."""

    def __init__(self) -> None:
        super().__init__(low=0.0)


class ThresholdReducer(Reducer):
    """The mean over the elements with ``low < ℓ < high`` (PML's ``ThresholdReducer``; at least one bound)."""

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if low is None and high is None:
            raise ValueError("ThresholdReducer needs low, high or both")
        super().__init__(low=low, high=high)

    def __repr__(self) -> str:
        return f"ThresholdReducer(low={self.low!r}, high={self.high!r})"


class SumReducer(Reducer):
    """The sum over all elements (PML's ``SumReducer``)."""

    def __init__(self) -> None:
        super().__init__(average=False)


class DoNothingReducer(Reducer):
    """No reduction: the loss returns its per-element losses (PML's ``DoNothingReducer``; ``reducer="none"``).

    The result is a dict from sub-loss name to ``{"losses", "indices", "reduction_type"}``, PML's loss dictionary:
    per pair (``indices = (anchors, others)``), per triplet (``(anchors, positives, negatives)``) or per anchor
    (``indices = arange(N)``). It holds one loss per element, so it costs the memory the blocked sums avoid.
    """

    def __init__(self) -> None:
        super().__init__()


#: Reducers by the short names a loss also accepts (``reducer="mean"``).
REDUCERS: dict[str, type[Reducer]] = {
    "mean": MeanReducer,
    "avg_non_zero": AvgNonZeroReducer,
    "sum": SumReducer,
    "none": DoNothingReducer,
}


def get_reducer(reducer: Reducer | str | None, default: type[Reducer]) -> Reducer:
    """``reducer`` itself, the reducer of that short name, or ``default()`` for ``None``."""
    if reducer is None:
        return default()
    if isinstance(reducer, Reducer):
        return reducer
    if isinstance(reducer, str) and reducer in REDUCERS:
        return REDUCERS[reducer]()
    raise ValueError(f"reducer must be a Reducer or one of {sorted(REDUCERS)}, got {reducer!r}")
