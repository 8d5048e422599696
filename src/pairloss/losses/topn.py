"""Top-N recommendation losses on lists: AWTR (adaptively weighted top-N), BPR and WARP.

Every function takes ``scores [B, L]`` (one row per query, e.g. a donor and its candidate list) and
``relevance [B, L]`` (larger = more relevant, ``>= 0``; ``-1`` marks a padded slot, the allRank / TF-Ranking
convention of :mod:`pairloss.losses.ranking`), validated by the same helper as the ranking losses. Pairs never
cross lists; padded items get zero gradient. A batch without any usable pair gives 0 with a zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._validation import check_positive
from pairloss.losses._lists import LIST_BATCH_AXES, prepare_lists
from pairloss.losses.base import PairLoss

__all__ = [
    "AWTRLoss",
    "BPRLoss",
    "WARPLoss",
    "awtr_loss",
    "bpr_loss",
    "top_n_membership",
    "warp_loss",
]


def _ordered_pairs(relevance: Tensor, valid: Tensor) -> Tensor:
    """``[B, L, L]`` bool: both items are real and item ``i`` is strictly more relevant than item ``j``."""
    both = valid[:, :, None] & valid[:, None, :]
    return both & (relevance[:, :, None] > relevance[:, None, :])


def top_n_membership(scores: Tensor, relevance: Tensor, valid: Tensor, top_n: int) -> Tensor:
    """``[B, L]`` bool: the item is in the current top-N by score or in the true top-N by relevance.

    The predicted top-N is the ``top_n`` highest (detached) scores among the real items of each list; the true
    top-N is every real item whose relevance is at least the ``top_n``-th largest relevance of its list (ties are
    all in). Lists shorter than ``top_n`` have all their items in.
    """
    neg_inf = torch.finfo(scores.dtype).min
    k = min(top_n, scores.shape[1])
    member = torch.zeros_like(valid)
    if k == 0:
        return member
    masked = torch.where(valid, scores.detach(), torch.full_like(scores, neg_inf))
    predicted = member.scatter(1, masked.topk(k, dim=1).indices, True) & valid
    masked_rel = torch.where(valid, relevance, torch.full_like(relevance, neg_inf))
    kth = masked_rel.topk(k, dim=1).values[:, -1:]
    true = valid & (relevance >= kth)
    return predicted | true


def awtr_loss(
    scores: Tensor,
    relevance: Tensor,
    *,
    top_n: int = 10,
    alpha: float = 0.3,
    sigma: float = 1.0,
) -> Tensor:
    """Adaptively weighted top-N ranking loss (AWTR; Shojaee, Chen, Jin, organ matching).

    A pairwise logistic loss over the ordered pairs ``(i, j)`` of one list with ``rel_i > rel_j``, whose weights
    are recomputed from the current scores at every call so that the pairs touching the top-N dominate:

        m_i  = [i ∈ top-N by current score] ∨ [i ∈ top-N by relevance]
        w_ij = α + (1 − α) · max(m_i, m_j)            (weights are constants for autograd)
        L    = Σ_(i,j) w_ij · log(1 + exp(−σ (s_i − s_j))) / Σ_(i,j) w_ij

    The weight update is the adaptive part: as training moves items into (or out of) the predicted top-N, the
    pairs that decide the top of the list change and so does the emphasis. Pairs involving a truly top-N item
    that the model ranks low keep a full weight (it is in the true top-N), and so do pairs with a wrongly
    promoted item (it is in the predicted top-N); the rest of the list keeps a small weight ``α``, which trades
    overall ranking accuracy for top-N accuracy. ``α = 1`` gives RankNet's mean pairwise logistic loss.

    The paper's: a top-N recommendation loss whose weights adapt during training to emphasise the ranking of the
    top-N candidates of each donor's list, trading overall accuracy for top-N accuracy. Library's choice (only the
    abstract could be read here): the pairwise logistic link, the membership rule (current or true top-N), the
    weight ``α + (1 − α)·max(m_i, m_j)``, recomputing the weights at every call, and the normalisation by the
    weight sum. This is therefore a variant of AWTR, not the paper's formula.

    Args:
        scores: ``[B, L]`` model scores, larger = ranked higher.
        relevance: ``[B, L]`` graded or real relevance ``>= 0``; ``-1`` marks padding.
        top_n: the ``N`` of the top-N that the weights emphasise.
        alpha: weight of the pairs away from the top-N, in ``[0, 1]``.
        sigma: slope of the logistic link.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    check_positive(sigma, "sigma")
    lists = prepare_lists(scores, relevance)
    scores, relevance, valid = lists.scores, lists.relevance, lists.valid
    pairs = _ordered_pairs(relevance, valid)
    member = top_n_membership(scores, relevance, valid, top_n)
    touches = member[:, :, None] | member[:, None, :]
    weight = torch.where(pairs, alpha + (1.0 - alpha) * touches.to(scores.dtype), 0.0)
    link = F.softplus(-sigma * (scores[:, :, None] - scores[:, None, :]))
    total = weight.sum()
    return (weight * link).sum() / total.clamp_min(torch.finfo(scores.dtype).tiny)


def bpr_loss(scores: Tensor, relevance: Tensor, *, threshold: float = 0.0) -> Tensor:
    """Bayesian personalised ranking (Rendle, Freudenthaler, Gantner, Schmidt-Thieme, UAI 2009).

    Items with ``relevance > threshold`` are positives, the other real items negatives; over every
    (positive ``i``, negative ``j``) pair of one list:

        L = mean_(i,j) −log σ(s_i − s_j)

    BPR-Opt samples the triples stochastically; this is the exact mean that the sampling estimates (the L2 prior
    of BPR-Opt is left to the optimiser's weight decay).
    """
    lists = prepare_lists(scores, relevance)
    scores, relevance, valid = lists.scores, lists.relevance, lists.valid
    positive = valid & (relevance > threshold)
    negative = valid & ~(relevance > threshold)
    pairs = positive[:, :, None] & negative[:, None, :]
    link = F.softplus(-(scores[:, :, None] - scores[:, None, :]))
    count = pairs.sum().to(scores.dtype)
    return torch.where(pairs, link, torch.zeros_like(link)).sum() / count.clamp_min(1)


def warp_loss(scores: Tensor, relevance: Tensor, *, threshold: float = 0.0, margin: float = 1.0) -> Tensor:
    """Weighted approximate-rank pairwise loss (WARP; Weston, Bengio, Usunier, "WSABIE", IJCAI 2011).

    For each positive ``i`` (``relevance > threshold``) of a list, the violating negatives are
    ``V_i = {j : margin − s_i + s_j > 0}`` and its rank among the negatives is ``r_i = |V_i|``; then

        L_i = Φ(r_i) / r_i · Σ_{j ∈ V_i} (margin − s_i + s_j),   Φ(r) = Σ_{k=1..r} 1/k,
        L   = mean over positives that have at least one negative in their list.

    WARP estimates ``r_i`` by sampling negatives until one violates and back-propagates through that one
    violator; the expectation of that step over the violator is exactly ``L_i`` above, computed here from the
    exact rank (deterministic, and cheap for lists of a few hundred items). ``Φ`` emphasises the top.
    """
    check_positive(margin, "margin")
    lists = prepare_lists(scores, relevance)
    scores, relevance, valid = lists.scores, lists.relevance, lists.valid
    positive = valid & (relevance > threshold)
    negative = valid & ~(relevance > threshold)
    pairs = positive[:, :, None] & negative[:, None, :]
    hinge = margin - scores[:, :, None] + scores[:, None, :]
    violating = pairs & (hinge > 0)
    rank = violating.sum(2)
    harmonic = torch.cumsum(1.0 / torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype, device=scores.device), 0)
    phi = torch.where(rank > 0, harmonic[(rank - 1).clamp_min(0)], torch.zeros_like(scores))
    per_item = torch.where(violating, hinge, torch.zeros_like(hinge)).sum(2) * phi / rank.clamp_min(1)
    anchors = (pairs.any(2)).sum().to(scores.dtype)
    return per_item.sum() / anchors.clamp_min(1)


class AWTRLoss(PairLoss):
    """Adaptively weighted top-N pairwise loss; see :func:`awtr_loss`. Call as ``loss(scores, relevance)``."""

    formula = "Σ w_ij log(1+e^{−σ(s_i−s_j)}) / Σ w_ij,  w_ij = α + (1−α)·[i or j in current/true top-N]"
    paper = "Shojaee, Chen, Jin. Adaptively weighted top-N recommendation for organ matching (AWTR)"
    family = "topn"
    batch_axes = LIST_BATCH_AXES

    def __init__(self, top_n: int = 10, alpha: float = 0.3, sigma: float = 1.0) -> None:
        super().__init__()
        self.top_n = top_n
        self.alpha = alpha
        self.sigma = sigma

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return awtr_loss(scores, relevance, top_n=self.top_n, alpha=self.alpha, sigma=self.sigma)


class BPRLoss(PairLoss):
    """Bayesian personalised ranking; see :func:`bpr_loss`. Call as ``loss(scores, relevance)``."""

    formula = "mean_{rel_i>t≥rel_j} −log σ(s_i − s_j)"
    paper = "Rendle et al. BPR: Bayesian personalized ranking from implicit feedback. UAI 2009"
    family = "topn"
    batch_axes = LIST_BATCH_AXES

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return bpr_loss(scores, relevance, threshold=self.threshold)


class WARPLoss(PairLoss):
    """Weighted approximate-rank pairwise loss with exact ranks; see :func:`warp_loss`."""

    formula = "mean_i Φ(r_i)/r_i Σ_{j∈V_i} (m − s_i + s_j),  Φ(r) = Σ_{k≤r} 1/k"
    paper = "Weston, Bengio, Usunier. WSABIE: scaling up to large vocabulary image annotation. IJCAI 2011"
    family = "topn"
    batch_axes = LIST_BATCH_AXES

    def __init__(self, threshold: float = 0.0, margin: float = 1.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.margin = margin

    def forward(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return warp_loss(scores, relevance, threshold=self.threshold, margin=self.margin)
