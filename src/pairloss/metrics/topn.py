"""Top-N metrics on lists: precision@N, recall@N and Kendall's τ over a whole list (NDCG@k: :mod:`.ranking`).

Inputs are ``scores [B, L]`` (larger = ranked higher) and a boolean ``relevant [B, L]`` set (or a ``target`` to
correlate with); ``valid [B, L]`` (default: all) marks the real items of padded lists. Each function returns
the mean over the lists where the metric is defined (lists with no relevant item are skipped for recall;
NaN when no list qualifies). Ties in the scores are broken by position (a stable sort), the same for every method.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pairloss._optional import require

__all__ = ["kendall_tau", "precision_at_n", "recall_at_n", "top_n_hits"]


def _order(scores: Tensor, valid: Tensor | None) -> Tensor:
    """Item indices of each list from the highest to the lowest score; padding goes last."""
    scores = scores.detach().to(torch.float64)
    if valid is not None:
        scores = torch.where(valid, scores, torch.full_like(scores, -math.inf))
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def top_n_hits(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> Tensor:
    """``[B]``: how many of the ``n`` top-scored real items of each list are relevant."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if relevant.shape != scores.shape:
        raise ValueError(f"relevant has shape {tuple(relevant.shape)} but scores have {tuple(scores.shape)}")
    relevant = relevant.to(scores.device, torch.bool)
    if valid is not None:
        relevant = relevant & valid
    top = _order(scores, valid)[:, :n]
    return relevant.gather(1, top).sum(1)


def precision_at_n(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> float:
    """Mean over lists of ``|top-n ∩ relevant| / n``."""
    return float(top_n_hits(scores, relevant, n, valid).double().mean() / n)


def recall_at_n(scores: Tensor, relevant: Tensor, n: int, valid: Tensor | None = None) -> float:
    """Mean over lists with a relevant item of ``|top-n ∩ relevant| / |relevant|``."""
    hits = top_n_hits(scores, relevant, n, valid).double()
    mask = relevant.to(scores.device, torch.bool)
    if valid is not None:
        mask = mask & valid
    total = mask.sum(1).double()
    keep = total > 0
    return float((hits[keep] / total[keep]).mean()) if bool(keep.any()) else math.nan


def kendall_tau(scores: Tensor, target: Tensor, valid: Tensor | None = None) -> float:
    """Mean over lists of Kendall's τ-b (scipy) between scores and target over all real items of the list.

    Lists with fewer than two real items, or where τ is undefined (a constant list), are skipped.
    """
    if target.shape != scores.shape:
        raise ValueError(f"target has shape {tuple(target.shape)} but scores have {tuple(scores.shape)}")
    s = scores.detach().cpu().double().numpy()
    t = target.detach().cpu().double().numpy()
    v = np.ones_like(s, dtype=bool) if valid is None else valid.detach().cpu().numpy().astype(bool)
    kendalltau = require("scipy.stats", "metrics").kendalltau
    taus = []
    for row_s, row_t, row_v in zip(s, t, v):
        if row_v.sum() < 2:
            continue
        tau = kendalltau(row_s[row_v], row_t[row_v]).statistic
        if math.isfinite(tau):
            taus.append(tau)
    return float(np.mean(taus)) if taus else math.nan
