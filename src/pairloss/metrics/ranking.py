"""Ranking metrics over lists: NDCG@k, MRR, MAP, and the CTR metrics AUC and GAUC.

Inputs are padded lists ``(scores [B, L], relevance [B, L])`` with relevance ``-1`` at padded slots, or flat
``(scores [n], relevance [n], group_ids [n])``; numpy arrays and tensors are both accepted. Items are ranked by
decreasing score; ties keep their input order (LightGBM's stable sort; scikit-learn's ``ndcg_score`` instead averages
over tied scores, so the two agree whenever scores are distinct).

Lists without any relevant item (IDCG = 0) have no defined NDCG. ``empty`` says how they count: ``"one"`` (NDCG = 1,
LightGBM's and allRank's convention, the default for NDCG), ``"zero"`` (scikit-learn's convention) or ``"skip"``
(left out of the mean, the default for MRR and MAP).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from pairloss._optional import require
from pairloss._validation import check_choice, check_int, undefined
from pairloss.losses._lists import PAD, group_to_lists

__all__ = ["auc", "gauc", "mean_average_precision", "mrr", "ndcg_at_k"]

_EMPTY = ("one", "zero", "skip")


def _as_lists(
    scores: ArrayLike, relevance: ArrayLike, group_ids: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Padded float64 ``(scores, relevance)`` with ``-1`` padding, items sorted by decreasing score in each list."""
    s = torch.as_tensor(_float_array(scores, "scores"))
    y = torch.as_tensor(_float_array(relevance, "relevance"))
    if s.shape != y.shape:
        raise ValueError(f"scores and relevance must have the same shape, got {tuple(s.shape)} and {tuple(y.shape)}")
    if group_ids is not None:
        g = torch.as_tensor(np.asarray(group_ids))
        if s.ndim != 1 or g.shape != s.shape:
            raise ValueError("with group_ids, scores, relevance and group_ids must all be 1-D of the same length")
        if bool((y < 0).any()):
            raise ValueError("relevance must be >= 0")
        s, y, _ = group_to_lists(s, y, g)
    elif s.ndim != 2:
        raise ValueError(f"scores must be [B, L] lists (or flat with group_ids), got shape {tuple(s.shape)}")
    if s.numel() == 0:
        raise ValueError(f"scores is empty (shape {tuple(s.shape)}): a ranking metric needs at least one item")
    if not bool(torch.isfinite(s[y != PAD]).all()) or not bool(torch.isfinite(y).all()):
        raise ValueError("scores and relevance must be finite")
    if bool(((y < 0) & (y != PAD)).any()):
        raise ValueError("relevance must be >= 0, or -1 to mark a padded slot")
    key = torch.where(y != PAD, s, torch.full((), -np.inf, dtype=s.dtype))
    order = torch.argsort(key, dim=-1, descending=True, stable=True)
    return torch.gather(s, -1, order).numpy(), torch.gather(y, -1, order).numpy()


def _float_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers, got {type(values).__name__} ({error})") from None


def _gains(relevance: NDArray[np.float64]) -> NDArray[np.float64]:
    """Exponential gains ``2^y − 1`` of each list scaled by ``2^−max(y)`` (0 at padded slots).

    NDCG is a ratio of two sums of gains of one list, so the scale cancels; it keeps ``2^y`` from overflowing
    for any relevance.
    """
    top = np.maximum(relevance.max(axis=-1, keepdims=True, initial=0.0), 0.0)
    return np.where(relevance == PAD, 0.0, np.exp2(relevance - top) - np.exp2(-top))


def _reduce(values: NDArray[np.float64], empty_mask: Any, empty: str, metric: str) -> float:
    check_choice(empty, "empty", _EMPTY)
    if empty == "skip":
        kept = values[~empty_mask]
        return float(kept.mean()) if kept.size else undefined(metric, "no list has a relevant item and empty='skip'")
    filled = np.where(empty_mask, 1.0 if empty == "one" else 0.0, values)
    return float(filled.mean())


def ndcg_at_k(
    scores: ArrayLike,
    relevance: ArrayLike,
    group_ids: ArrayLike | None = None,
    *,
    k: int | None = None,
    empty: str = "one",
) -> float:
    """Mean NDCG@k (Järvelin, Kekäläinen, TOIS 2002) with exponential gain.

        DCG@k = Σ_{r ≤ k} (2^{y_(r)} − 1) / log2(1 + r),     NDCG@k = DCG@k / IDCG@k

    ``y_(r)`` is the relevance of the item ranked ``r`` by score and IDCG@k the DCG@k of the ideal order. Lists
    with IDCG@k = 0 count as ``empty`` says (``"one"``, ``"zero"`` or ``"skip"``).
    """
    if k is not None:
        check_int(k, "k", minimum=1)
    _, y = _as_lists(scores, relevance, group_ids)
    length = y.shape[1]
    cut = length if k is None else min(k, length)
    disc = 1.0 / np.log2(np.arange(2, cut + 2))
    gains = _gains(y)
    dcg = (gains[:, :cut] * disc).sum(1)
    idcg = (-np.sort(-gains, axis=1)[:, :cut] * disc).sum(1)
    empty_mask = idcg <= 0
    return _reduce(dcg / np.where(empty_mask, 1.0, idcg), empty_mask, empty, "NDCG")


def mrr(scores: ArrayLike, relevance: ArrayLike, group_ids: ArrayLike | None = None, *, empty: str = "skip") -> float:
    """Mean reciprocal rank (Voorhees, TREC-8 1999): ``mean_lists 1 / r_first``, the rank of the first item with
    relevance > 0. Lists without a relevant item count as ``empty`` says.
    """
    _, y = _as_lists(scores, relevance, group_ids)
    relevant = y > 0
    has = relevant.any(1)
    first = np.argmax(relevant, axis=1) + 1
    return _reduce(np.where(has, 1.0 / first, 0.0), ~has, empty, "MRR")


def mean_average_precision(
    scores: ArrayLike, relevance: ArrayLike, group_ids: ArrayLike | None = None, *, empty: str = "skip"
) -> float:
    """Mean average precision (Baeza-Yates, Ribeiro-Neto 1999), relevance > 0 counting as relevant.

        AP = (1 / R) Σ_{r: y_(r) > 0} precision@r,     MAP = mean_lists AP

    Lists without a relevant item count as ``empty`` says.
    """
    _, y = _as_lists(scores, relevance, group_ids)
    relevant = (y > 0).astype(np.float64)
    n_rel = relevant.sum(1)
    precision = np.cumsum(relevant, axis=1) / np.arange(1, y.shape[1] + 1)
    ap = (precision * relevant).sum(1) / np.maximum(n_rel, 1.0)
    return _reduce(ap, n_rel == 0, empty, "MAP")


def _binary(labels: ArrayLike, name: str = "labels") -> NDArray[np.float64]:
    y = _float_array(labels, name).ravel()
    if y.size == 0:
        raise ValueError(f"{name} is empty: the metric needs at least one positive and one negative")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be binary 0/1")
    return y


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (Hanley, McNeil 1982): P(score of a random positive > a random negative), ties ½."""
    y = _binary(labels)
    s = _float_array(scores, "scores").ravel()
    if s.shape != y.shape or not np.isfinite(s).all():
        raise ValueError("scores must be finite and match labels in length")
    if y.min(initial=1.0) == y.max(initial=0.0):
        raise ValueError("AUC needs both positive and negative labels")
    return float(require("sklearn.metrics", "metrics").roc_auc_score(y, s))


def gauc(scores: ArrayLike, labels: ArrayLike, group_ids: ArrayLike) -> float:
    """Group AUC (Zhu et al., KDD 2017): per-group AUC weighted by group size.

        GAUC = Σ_g n_g AUC_g / Σ_g n_g

    over the groups (requests, users) whose labels are not all equal; the others are skipped. ``AUC_g`` is the
    Mann-Whitney statistic with ties counted ½, computed for all groups at once from tie-averaged ranks.
    """
    y = _binary(labels)
    s = _float_array(scores, "scores").ravel()
    g = np.asarray(group_ids.detach().cpu() if isinstance(group_ids, torch.Tensor) else group_ids).ravel()
    if s.shape != y.shape or g.shape != y.shape or not np.isfinite(s).all():
        raise ValueError("scores, labels and group_ids must be finite 1-D arrays of the same length")
    _, group = np.unique(g, return_inverse=True)
    order = np.lexsort((s, group))
    s, y, group = s[order], y[order], group[order]
    n = s.size
    # tie blocks: equal (group, score); average rank of a block = mean of its positions, rank within its group
    new_block = np.r_[True, (group[1:] != group[:-1]) | (s[1:] != s[:-1])]
    block = np.cumsum(new_block) - 1
    position = np.arange(1, n + 1, dtype=np.float64)
    block_rank = np.bincount(block, weights=position) / np.bincount(block)
    group_start = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
    n_groups = group_start.size
    rank = block_rank[block] - group_start[group]
    size = np.bincount(group, minlength=n_groups).astype(np.float64)
    n_pos = np.bincount(group, weights=y, minlength=n_groups)
    n_neg = size - n_pos
    rank_sum = np.bincount(group, weights=rank * y, minlength=n_groups)
    keep = (n_pos > 0) & (n_neg > 0)
    if not keep.any():
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    group_auc = (rank_sum[keep] - n_pos[keep] * (n_pos[keep] + 1) / 2) / (n_pos[keep] * n_neg[keep])
    return float((group_auc * size[keep]).sum() / size[keep].sum())
