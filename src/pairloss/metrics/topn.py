"""Top-N metrics on lists: precision@N, recall@N and Kendall's τ over a whole list (NDCG@k: :mod:`.ranking`).

Inputs are ``scores [B, L]`` (larger = ranked higher; finite at real items) and a boolean or 0/1
``relevant [B, L]`` set (or a ``target`` to correlate with); ``valid [B, L]`` (bool or 0/1, default: all) marks the
real items of padded lists.
Tensors or array-likes are accepted. Each function returns the mean over the lists where the metric is defined
(lists with no relevant item are skipped for recall; NaN with a ``RuntimeWarning`` when no list qualifies). Ties in
the scores are broken by position (a stable sort), the same for every method. Inputs of the wrong shape or dtype,
NaN/inf scores and empty batches raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairloss._optional import require
from pairloss._validation import check_int, undefined

__all__ = ["kendall_tau", "precision_at_n", "recall_at_n", "top_n_hits"]


def _as_lists(values: Any, name: str, like: Tensor | None = None) -> Tensor:
    """``values`` as a ``[B, L]`` tensor with ``B >= 1`` and ``L >= 1`` (the shape of ``like`` when given)."""
    if not isinstance(values, Tensor):
        array = np.asarray(values)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must hold real numbers or booleans, got dtype {array.dtype}")
        values = torch.as_tensor(array)
    tensor = values
    if like is not None and tensor.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)} but scores have {tuple(like.shape)}")
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D lists [B, L], got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}): a metric needs at least one item")
    return tensor.to(like.device) if like is not None else tensor


def _real(values: Any, name: str, like: Tensor | None = None) -> Tensor:
    tensor = _as_lists(values, name, like)
    if tensor.dtype == torch.bool or tensor.is_complex() or not (tensor.is_floating_point() or _is_integer(tensor)):
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    return tensor


def _check_finite(tensor: Tensor, name: str, valid: Tensor | None) -> None:
    """NaN or ±inf at a real item (padded slots, ``valid`` False, may hold anything) is an error."""
    bad = ~torch.isfinite(tensor)
    if valid is not None:
        bad &= valid
    if bool(bad.any()):
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s) at real items")


def _is_integer(tensor: Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def _mask(values: Any, name: str, like: Tensor) -> Tensor:
    """A boolean ``[B, L]`` mask from bool or 0/1 values."""
    tensor = _as_lists(values, name, like)
    if tensor.dtype != torch.bool:
        if tensor.is_complex() or not bool(((tensor == 0) | (tensor == 1)).all()):
            raise ValueError(f"{name} must be boolean or 0/1, got values other than 0 and 1 (dtype {tensor.dtype})")
        tensor = tensor != 0
    return tensor


def _order(scores: Tensor, valid: Tensor | None) -> Tensor:
    """Item indices of each list from the highest to the lowest score; padding goes last."""
    scores = scores.detach().to(torch.float64)
    if valid is not None:
        scores = torch.where(valid, scores, torch.full_like(scores, -math.inf))
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def _relevant_and_valid(scores: Any, relevant: Any, valid: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    scores = _real(scores, "scores")
    valid_mask = None if valid is None else _mask(valid, "valid", scores)
    _check_finite(scores, "scores", valid_mask)
    relevant_mask = _mask(relevant, "relevant", scores)
    if valid_mask is not None:
        relevant_mask = relevant_mask & valid_mask
    return scores, relevant_mask, valid_mask


def _hits(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None) -> Tensor:
    return relevant.gather(1, _order(scores, valid)[:, :n]).sum(1)


def top_n_hits(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> Tensor:
    """``[B]``: how many of the ``n`` top-scored real items of each list are relevant."""
    check_int(n, "n", minimum=1)
    scores, relevant, valid = _relevant_and_valid(scores, relevant, valid)
    return _hits(scores, relevant, n, valid)


def precision_at_n(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> float:
    """Mean over lists of ``|top-n ∩ relevant| / n``."""
    return float(top_n_hits(scores, relevant, n, valid).double().mean() / n)


def recall_at_n(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> float:
    """Mean over lists with a relevant item of ``|top-n ∩ relevant| / |relevant|``."""
    check_int(n, "n", minimum=1)
    scores, relevant, valid = _relevant_and_valid(scores, relevant, valid)
    hits = _hits(scores, relevant, n, valid).double()
    total = relevant.sum(1).double()
    keep = total > 0
    if not bool(keep.any()):
        return undefined("recall@n", "no list has a relevant item")
    return float((hits[keep] / total[keep]).mean())


def kendall_tau(scores: Tensor, target: Tensor, valid: Tensor | None = None) -> float:
    """Mean over lists of Kendall's τ-b (scipy) between scores and target over all real items of the list.

    Lists with fewer than two real items, or where τ is undefined (a constant list), are skipped.
    """
    scores = _real(scores, "scores")
    target = _real(target, "target", scores)
    valid_mask = None if valid is None else _mask(valid, "valid", scores)
    _check_finite(scores, "scores", valid_mask)
    _check_finite(target, "target", valid_mask)
    s = scores.detach().cpu().double().numpy()
    t = target.detach().cpu().double().numpy()
    v = np.ones_like(s, dtype=bool) if valid_mask is None else valid_mask.cpu().numpy()
    kendalltau = require("scipy.stats", "metrics").kendalltau
    taus = []
    for row_s, row_t, row_v in zip(s, t, v):
        if row_v.sum() < 2:
            continue
        tau = kendalltau(row_s[row_v], row_t[row_v]).statistic
        if math.isfinite(tau):
            taus.append(tau)
    if not taus:
        return undefined("Kendall's tau", "no list has two real items with distinct scores and targets")
    return float(np.mean(taus))
