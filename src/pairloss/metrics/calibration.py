"""Calibration metrics for predicted probabilities: LogLoss, PCOC, ECE and the reliability diagram."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pairloss._validation import check_int, undefined

__all__ = ["ReliabilityCurve", "ece", "log_loss", "pcoc", "reliability_curve", "reliability_diagram"]


def _floats(values: ArrayLike, name: str) -> NDArray[np.float64]:
    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator or requiring grad
        values = values.detach().cpu()  # type: ignore[union-attr]
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers, got {type(values).__name__} ({error})") from None


def _probs_labels(probs: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = _floats(probs, "probs")
    y = _floats(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"probs and labels must have the same length, got {p.size} and {y.size}")
    if p.size == 0:
        raise ValueError("probs is empty")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must be finite probabilities in [0, 1]")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be binary 0/1")
    return p, y


def log_loss(probs: ArrayLike, labels: ArrayLike, eps: float = 1e-7) -> float:
    """Binary cross-entropy ``−mean(y log p + (1 − y) log(1 − p))`` with ``p`` clipped to ``[eps, 1 − eps]``."""
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    p, y = _probs_labels(probs, labels)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def pcoc(probs: ArrayLike, labels: ArrayLike) -> float:
    """Predicted click over click, ``Σ p / Σ y`` (1 is calibrated on average; NaN with a ``RuntimeWarning`` when there
    is no click)."""
    p, y = _probs_labels(probs, labels)
    clicks = y.sum()
    return float(p.sum() / clicks) if clicks > 0 else undefined("PCOC", "there is no click")


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin statistics of equal-width probability bins (empty bins have count 0 and NaN means)."""

    edges: NDArray[np.float64]
    mean_prob: NDArray[np.float64]
    frac_pos: NDArray[np.float64]
    count: NDArray[np.int64]


def reliability_curve(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> ReliabilityCurve:
    """Equal-width bins ``[k/M, (k+1)/M)`` (the last one closed): mean prediction and click rate in each bin."""
    check_int(n_bins, "n_bins", minimum=1)
    p, y = _probs_labels(probs, labels)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(bins, weights=p, minlength=n_bins) / count
        frac_pos = np.bincount(bins, weights=y, minlength=n_bins) / count
    return ReliabilityCurve(np.linspace(0.0, 1.0, n_bins + 1), mean_prob, frac_pos, count)


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error (Naeini, Cooper, Hauskrecht, AAAI 2015) over ``M`` equal-width bins.

    ECE = Σ_m (n_m / n) · | mean_{i ∈ B_m} p_i − mean_{i ∈ B_m} y_i |
    """
    curve = reliability_curve(probs, labels, n_bins)
    used = curve.count > 0
    gaps = np.abs(curve.mean_prob[used] - curve.frac_pos[used])
    return float((curve.count[used] * gaps).sum() / curve.count.sum())


def reliability_diagram(
    curves: dict[str, ReliabilityCurve], ax: Any = None, *, title: str = "reliability diagram"
) -> Any:
    """Plot click rate against mean prediction per bin for each named curve, with the diagonal; returns the axes.

    ``ax`` is a matplotlib ``Axes`` (a new figure is created when omitted).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    top = 0.0
    for name, curve in curves.items():
        used = curve.count > 0
        ax.plot(curve.mean_prob[used], curve.frac_pos[used], marker="o", markersize=3, label=name)
        top = max(
            top, float(np.nanmax(curve.mean_prob[used], initial=0)), float(np.nanmax(curve.frac_pos[used], initial=0))
        )
    top = min(1.0, top * 1.05) if top > 0 else 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="calibrated")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed click rate")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return ax
