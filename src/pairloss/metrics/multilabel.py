"""Multi-label evaluation: ranking measures on label scores and classification measures on 0/1 predictions.

Scores ``f [n, c]`` (higher = more relevant) and multi-hot labels ``Y [n, c]``; numpy arrays or tensors. The
ranking measures follow Zhang and Zhou (A review on multi-label learning algorithms, TKDE 2014) and count **ties as
errors** (a relevant label tied with an irrelevant one is mis-ordered), as scikit-learn does.

Rows with no relevant or no irrelevant label have no label pair. :func:`ranking_loss` offers two conventions:
``"sklearn"`` (``sklearn.metrics.label_ranking_loss``) scores them 0 and keeps them in the mean; ``"paper"``
(Wu et al., NeurIPS 2021, and most multi-label papers) drops them. :func:`coverage`, :func:`one_error` and
:func:`label_ranking_average_precision` are averaged over the rows with at least one relevant label (where they are
defined).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from pairloss._optional import require
from pairloss._validation import check_choice, undefined

__all__ = [
    "coverage",
    "hamming_loss",
    "label_ranking_average_precision",
    "macro_f1",
    "micro_f1",
    "multilabel_report",
    "one_error",
    "ranking_loss",
]

ArrayLike = NDArray[np.generic] | Tensor

#: Rows per chunk of the ``[rows, c, c]`` comparisons.
_ROW_CHUNK = 256


def _as_numpy(x: ArrayLike, name: str) -> NDArray[np.generic]:
    array = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, c], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): needs at least one row and one label")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold numbers, got dtype {array.dtype}")
    return array


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    f = _as_numpy(scores, "scores").astype(np.float64)
    y = _as_numpy(labels, "labels")
    if f.shape != y.shape:
        raise ValueError(f"scores {f.shape} and labels {y.shape} must have the same shape")
    if not np.isfinite(f).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1")
    return f, y.astype(bool)


def _rank_counts(f: NDArray[np.float64]) -> NDArray[np.float64]:
    """``at_least[i, j] = #{k : f_ik ≥ f_ij}``: the pessimistic (ties-last) rank of label ``j`` in row ``i``."""
    out = np.empty(f.shape, dtype=np.float64)
    for start in range(0, f.shape[0], _ROW_CHUNK):
        block = f[start : start + _ROW_CHUNK]
        out[start : start + _ROW_CHUNK] = (block[:, None, :] >= block[:, :, None]).sum(2)
    return out


def ranking_loss(scores: ArrayLike, labels: ArrayLike, *, convention: str = "sklearn") -> float:
    """Fraction of (relevant, irrelevant) label pairs ordered wrongly, ties counted as errors.

        RL_i = |{(p, q) ∈ Y⁺_i × Y⁻_i : f_ip ≤ f_iq}| / (|Y⁺_i| |Y⁻_i|)

    ``convention="sklearn"``: rows without a label pair score 0 and stay in the mean (equals
    ``sklearn.metrics.label_ranking_loss``); ``"paper"``: those rows are dropped (NaN when no row is left).
    """
    check_choice(convention, "convention", ("sklearn", "paper"))
    f, y = _check(scores, labels)
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    errors = np.zeros(f.shape[0])
    for start in range(0, f.shape[0], _ROW_CHUNK):
        fb, yb = f[start : start + _ROW_CHUNK], y[start : start + _ROW_CHUNK]
        wrong = (fb[:, :, None] <= fb[:, None, :]) & yb[:, :, None] & ~yb[:, None, :]
        errors[start : start + _ROW_CHUNK] = wrong.sum((1, 2))
    per_row = np.where(valid, errors / np.maximum(n_pos * n_neg, 1), 0.0)
    if convention == "sklearn":
        return float(per_row.mean())
    if not valid.any():
        return undefined("ranking loss", "no row has both a relevant and an irrelevant label")
    return float(per_row[valid].mean())


def coverage(scores: ArrayLike, labels: ArrayLike) -> float:
    """How far down the ranking one must go to cover every relevant label: ``mean_i max_{p∈Y⁺_i} rank_ip − 1``.

    ``rank`` counts the labels scored at least as high (ties last), so a perfect ranking scores ``|Y⁺| − 1``.
    This is ``sklearn.metrics.coverage_error`` minus 1 (Zhang and Zhou's definition). Rows without a relevant label
    are skipped (NaN when none is left).
    """
    f, y = _check(scores, labels)
    has_pos = y.any(1)
    if not has_pos.any():
        return undefined("coverage", "no row has a relevant label")
    rank = _rank_counts(f[has_pos])
    return float((np.where(y[has_pos], rank, 0).max(1) - 1).mean())


def one_error(scores: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of rows whose top-scored label is irrelevant; with ties at the top, an error unless all tied labels
    are relevant. Rows without a relevant label are skipped (NaN when none is left)."""
    f, y = _check(scores, labels)
    has_pos = y.any(1)
    if not has_pos.any():
        return undefined("one-error", "no row has a relevant label")
    f, y = f[has_pos], y[has_pos]
    top = f == f.max(1, keepdims=True)
    return float((top & ~y).any(1).mean())


def label_ranking_average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Label-ranking average precision (ties last), averaged over the rows with at least one relevant label.

        AP_i = 1/|Y⁺_i| Σ_{p∈Y⁺_i} |{p' ∈ Y⁺_i : f_ip' ≥ f_ip}| / |{j : f_ij ≥ f_ip}|

    On rows with both relevant and irrelevant labels it equals
    ``sklearn.metrics.label_ranking_average_precision_score`` (which scores all-relevant rows 1 and keeps rows
    without relevant labels as 1; here the latter are skipped).
    """
    f, y = _check(scores, labels)
    has_pos = y.any(1)
    if not has_pos.any():
        return undefined("label-ranking average precision", "no row has a relevant label")
    f, y = f[has_pos], y[has_pos]
    rank = _rank_counts(f)
    rank_among_pos = np.empty_like(rank)
    for start in range(0, f.shape[0], _ROW_CHUNK):
        fb, yb = f[start : start + _ROW_CHUNK], y[start : start + _ROW_CHUNK]
        rank_among_pos[start : start + _ROW_CHUNK] = ((fb[:, None, :] >= fb[:, :, None]) & yb[:, None, :]).sum(2)
    per_row = np.where(y, rank_among_pos / rank, 0).sum(1) / y.sum(1)
    return float(per_row.mean())


def _predictions(predictions: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    p = _as_numpy(predictions, "predictions")
    y = _as_numpy(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must have the same shape")
    if not (np.isin(p, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError("predictions and labels must contain only 0 and 1 (threshold the scores first)")
    return p.astype(bool), y.astype(bool)


def hamming_loss(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of wrong (sample, label) decisions: ``mean_{i,j} [p_ij ≠ y_ij]`` (``sklearn.metrics.hamming_loss``)."""
    p, y = _predictions(predictions, labels)
    return float(require("sklearn.metrics", "metrics").hamming_loss(y, p))


def micro_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """F1 of the pooled (sample, label) decisions: ``2 TP / (2 TP + FP + FN)`` over all cells (0 when undefined)."""
    p, y = _predictions(predictions, labels)
    return float(require("sklearn.metrics", "metrics").f1_score(y, p, average="micro", zero_division=0))


def macro_f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Mean over labels of each label's F1 (a label never predicted nor relevant scores 0)."""
    p, y = _predictions(predictions, labels)
    return float(require("sklearn.metrics", "metrics").f1_score(y, p, average="macro", zero_division=0))


def multilabel_report(scores: ArrayLike, labels: ArrayLike, *, threshold: float = 0.0) -> dict[str, float]:
    """Every measure of this module; the classification ones on ``scores > threshold``."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    f, y = _check(scores, labels)
    predictions = f > threshold
    return {
        "ranking_loss": ranking_loss(f, y),
        "ranking_loss_paper": ranking_loss(f, y, convention="paper"),
        "coverage": coverage(f, y),
        "one_error": one_error(f, y),
        "average_precision": label_ranking_average_precision(f, y),
        "hamming_loss": hamming_loss(predictions, y),
        "micro_f1": micro_f1(predictions, y),
        "macro_f1": macro_f1(predictions, y),
    }
