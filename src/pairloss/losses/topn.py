"""Top-N recommendation losses on lists: AWTR (adaptively weighted top-N), BPR and WARP.

Every function takes ``scores [B, L]`` (one row per query, e.g. a donor and its candidate list) and
``relevance [B, L]`` (larger = more relevant, ``>= 0``; ``-1`` marks a padded slot, the allRank / TF-Ranking
convention of :mod:`pairloss.losses.ranking`), validated by the same helper as the ranking losses. Pairs never
cross lists; padded items get zero gradient. A batch without any usable pair gives 0 with a zero gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pairloss._validation import check_positive
from pairloss.links import Logistic
from pairloss.losses._lists import LIST_BATCH_AXES, list_pair_loss, pairwise_sum, prepare_lists
from pairloss.losses.base import PairLoss, loss_module
from pairloss.pairs import RelevancePairs
from pairloss.reducers import MeanReducer
from pairloss.weights import TopN, Uniform, top_n_membership

__all__ = [
    "AWTRLoss",
    "BPRLoss",
    "WARPLoss",
    "awtr_loss",
    "bpr_loss",
    "top_n_membership",
    "warp_loss",
]


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
    weight sum. This is therefore a variant of AWTR, not the paper's formula. Built from
    :class:`pairloss.weights.TopN` and :class:`pairloss.links.Logistic` on the list-pair evaluator (blocks of lists
    under the memory budget, gradient from the link's derivative).

    Args:
        scores: ``[B, L]`` model scores, larger = ranked higher.
        relevance: ``[B, L]`` graded or real relevance ``>= 0``; ``-1`` marks padding.
        top_n: the ``N`` of the top-N that the weights emphasise.
        alpha: weight of the pairs away from the top-N, in ``[0, 1]``.
        sigma: slope of the logistic link.
    """
    weight = TopN(top_n, alpha)
    check_positive(sigma, "sigma")
    lists = prepare_lists(scores, relevance)
    ordered = RelevancePairs()

    def select(s: Tensor, part: slice) -> tuple[Tensor, Tensor]:
        y, valid = lists.relevance[part], lists.valid[part]
        return ordered.mask(y, valid), weight(s, y, valid)

    total, weights = pairwise_sum(lists.scores, select, Logistic(sigma), weighted_count=True, pair_tensors=10)
    return total / weights.clamp_min(torch.finfo(lists.scores.dtype).tiny)


def bpr_loss(scores: Tensor, relevance: Tensor, *, threshold: float = 0.0) -> Tensor:
    """Bayesian personalised ranking (Rendle, Freudenthaler, Gantner, Schmidt-Thieme, UAI 2009).

    Items with ``relevance > threshold`` are positives, the other real items negatives; over every
    (positive ``i``, negative ``j``) pair of one list:

        L = mean_(i,j) −log σ(s_i − s_j)

    BPR-Opt samples the triples stochastically; this is the exact mean that the sampling estimates (the L2 prior
    of BPR-Opt is left to the optimiser's weight decay). Built from :class:`pairloss.pairs.RelevancePairs` with a
    threshold and the :class:`pairloss.links.Logistic` link.
    """
    lists = prepare_lists(scores, relevance)
    return list_pair_loss(lists, RelevancePairs(threshold), Logistic(), Uniform(), MeanReducer())


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


@loss_module(
    awtr_loss,
    formula="Σ w_ij log(1+e^{−σ(s_i−s_j)}) / Σ w_ij,  w_ij = α + (1−α)·[i or j in current/true top-N]",
    paper="Shojaee, Chen, Jin. Adaptively weighted top-N recommendation for organ matching (AWTR)",
    family="topn",
)
class AWTRLoss(PairLoss):
    """Adaptively weighted top-N pairwise loss; see :func:`awtr_loss`. Call as ``loss(scores, relevance)``."""

    batch_axes = LIST_BATCH_AXES


@loss_module(
    bpr_loss,
    formula="mean_{rel_i>t≥rel_j} −log σ(s_i − s_j)",
    paper="Rendle et al. BPR: Bayesian personalized ranking from implicit feedback. UAI 2009",
    family="topn",
)
class BPRLoss(PairLoss):
    """Bayesian personalised ranking; see :func:`bpr_loss`. Call as ``loss(scores, relevance)``."""

    batch_axes = LIST_BATCH_AXES


@loss_module(
    warp_loss,
    formula="mean_i Φ(r_i)/r_i Σ_{j∈V_i} (m − s_i + s_j),  Φ(r) = Σ_{k≤r} 1/k",
    paper="Weston, Bengio, Usunier. WSABIE: scaling up to large vocabulary image annotation. IJCAI 2011",
    family="topn",
)
class WARPLoss(PairLoss):
    """Weighted approximate-rank pairwise loss with exact ranks; see :func:`warp_loss`."""

    batch_axes = LIST_BATCH_AXES
