"""Pair losses built from the public parts: contrastive, multi-similarity, circle, generalized lifted structure.

Each is a :class:`~pairloss.builder.PairLossSpec` (pairs, similarity, weight, link, reducer) evaluated by the
builder's engine path (:func:`pairloss.builder.evaluate_pairs`), with PML's defaults:

==================================  =========  =============================================  =====================
loss                                form       links                                          reducer
==================================  =========  =============================================  =====================
contrastive                         pair       hinge on ``s − m_pos`` and ``m_neg − s``        avg-non-zero, per kind
multi-similarity                    row        ``LogSumExp(α)``, ``LogSumExp(β)``, margin λ    mean over anchors
circle                              row        ``LogSumExp(γ, no 1)``, circle margin weights,  avg-non-zero
                                               outer logistic
generalized lifted structure        row        ``LogSumExp(1, no 1)``, outer hinge             mean over anchors
==================================  =========  =============================================  =====================
"""

from __future__ import annotations

from torch import Tensor

from pairloss._validation import check_positive
from pairloss.builder import PairLossSpec, evaluate_pairs
from pairloss.links import Hinge, Logistic, LogSumExp
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.reducers import AvgNonZeroReducer, MeanReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, CosineSimilarity, LpDistance
from pairloss.weights import Circle

__all__ = [
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "MultiSimilarityLoss",
    "circle_loss",
    "contrastive_loss",
    "generalized_lifted_structure_loss",
    "multi_similarity_loss",
]

IndicesTuple = tuple[Tensor, ...]


def contrastive_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: BaseSimilarity = LpDistance(),
    reducer: Reducer | str = AvgNonZeroReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006), PML's ``ContrastiveLoss``.

    With a distance d (``LpDistance`` on normalised embeddings by default):

        L = mean_{(i,j) ∈ P, ℓ>0} [d_ij − m_pos]_+  +  mean_{(i,j) ∈ N, ℓ>0} [m_neg − d_ij]_+

    where each mean runs over the ordered pairs whose loss is positive (PML's ``AvgNonZeroReducer``, applied to the
    positive and the negative pairs on their own); a similarity flips the signs (``[m_pos − s_ij]_+`` and
    ``[s_ij − m_neg]_+``). A batch without positive (or negative) pairs contributes 0 for that term, and, as in
    PML's ``GenericPairLoss``, L = 0 when the batch has at most one positive and one negative pair. Built from
    :class:`~pairloss.links.Hinge` links on the margins; the hinge's active-pair masks are the slopes, and the
    engine scores each unordered pair once.
    """
    spec = PairLossSpec(
        Hinge(),
        Hinge(),
        distance,
        pos_margin,
        neg_margin,
        reducer=get_reducer(reducer, AvgNonZeroReducer),
        generic_pair_rule=True,
    )
    return evaluate_pairs(spec, embeddings, labels, indices_tuple, ref_emb, ref_labels, block_size=block_size)


@loss_module(
    contrastive_loss,
    formula="mean_{P,>0}[d_ij − m_pos]_+ + mean_{N,>0}[m_neg − d_ij]_+",
    paper="Hadsell, Chopra, LeCun. Dimensionality reduction by learning an invariant mapping. CVPR 2006",
    family="metric",
    supports_cross_rank=True,
)
class ContrastiveLoss(EmbeddingLoss):
    """Contrastive loss: pull positive pairs within ``pos_margin``, push negatives beyond ``neg_margin``.

    See :func:`contrastive_loss` for the formula. Arguments and defaults are PML's.
    """


def multi_similarity_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    distance: BaseSimilarity = CosineSimilarity(),
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Multi-similarity loss (Wang, Han, Huang, Dong, Scott, CVPR 2019), PML's ``MultiSimilarityLoss``.

    With a similarity s (cosine by default), per anchor i:

        ℓ_i = (1/α) log(1 + Σ_{p ∈ P_i} exp(−α (s_ip − λ))) + (1/β) log(1 + Σ_{n ∈ N_i} exp(β (s_in − λ)))

    and L = mean_i ℓ_i over all anchors (``MeanReducer``; an anchor without positives or negatives contributes
    0 for that term). As in PML's ``GenericPairLoss``, L = 0 when the batch has at most one positive and one
    negative pair. The pair mining step of the paper is :class:`pairloss.miners.MultiSimilarityMiner` (pass its
    output as ``indices_tuple``). Built from two :class:`~pairloss.links.LogSumExp` row links.
    """
    spec = PairLossSpec(
        LogSumExp(alpha),
        LogSumExp(beta),
        distance,
        base,
        base,
        reducer=get_reducer(reducer, MeanReducer),
        generic_pair_rule=True,
    )
    return evaluate_pairs(spec, embeddings, labels, indices_tuple, ref_emb, ref_labels, block_size=block_size)


@loss_module(
    multi_similarity_loss,
    formula="mean_i (1/α)log(1+Σ_P e^{−α(s_ip−λ)}) + (1/β)log(1+Σ_N e^{β(s_in−λ)})",
    paper="Wang et al. Multi-similarity loss with general pair weighting for deep metric learning. CVPR 2019",
    family="metric",
    supports_cross_rank=True,
)
class MultiSimilarityLoss(EmbeddingLoss):
    """Multi-similarity loss: soft weighting of positives and negatives by self- and relative similarity.

    See :func:`multi_similarity_loss`. Arguments and defaults are PML's.
    """


def _check_similarity(distance: BaseSimilarity, **_: object) -> None:
    if not distance.is_inverted:
        raise ValueError(f"circle loss needs a similarity (e.g. CosineSimilarity), got {distance!r}")


def circle_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    m: float = 0.4,
    gamma: float = 80.0,
    distance: BaseSimilarity = CosineSimilarity(),
    reducer: Reducer | str = AvgNonZeroReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Circle loss (Sun et al., CVPR 2020), PML's ``CircleLoss`` (pair-label form).

    With cosine similarities, ``Δ_p = 1 − m``, ``Δ_n = m`` and the weights ``α_p = [1 + m − s_p]_+``,
    ``α_n = [s_n + m]_+`` treated as constants (no gradient, as in the paper):

        ℓ_i = softplus( log Σ_{p ∈ P_i} exp(−γ α_p (s_ip − Δ_p)) + log Σ_{n ∈ N_i} exp(γ α_n (s_in − Δ_n)) )

    L is the mean of ℓ_i over the anchors with ℓ_i > 0 (``AvgNonZeroReducer``); anchors without a positive or
    without a negative are left out. Needs a similarity (``is_inverted``), like PML. Built from
    :class:`~pairloss.links.LogSumExp` row links with :class:`~pairloss.weights.Circle` margin weights and an outer
    :class:`~pairloss.links.Logistic` link.
    """
    _check_similarity(distance)
    check_positive(gamma, "gamma")
    spec = PairLossSpec(
        LogSumExp(gamma, add_one=False),
        LogSumExp(gamma, add_one=False),
        distance,
        1 - m,
        m,
        weight=Circle(m),
        reducer=get_reducer(reducer, AvgNonZeroReducer),
        combine=Logistic(gamma),
        both_kinds=True,
        generic_pair_rule=True,
    )
    return evaluate_pairs(spec, embeddings, labels, indices_tuple, ref_emb, ref_labels, block_size=block_size)


@loss_module(
    circle_loss,
    formula="mean_{i,ℓ>0} softplus(log Σ_P e^{−γα_p(s_p−Δ_p)} + log Σ_N e^{γα_n(s_n−Δ_n)})",
    paper="Sun et al. Circle loss: A unified perspective of pair similarity optimization. CVPR 2020",
    family="metric",
    check=_check_similarity,
    supports_cross_rank=True,
)
class CircleLoss(EmbeddingLoss):
    """Circle loss: self-paced re-weighting of within- and between-class pairs. See :func:`circle_loss`."""


def generalized_lifted_structure_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    distance: BaseSimilarity = LpDistance(),
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Generalized lifted structure loss (Hermans, Beyer, Leibe 2017, eq. 4, after Oh Song et al., CVPR 2016),
    PML's ``GeneralizedLiftedStructureLoss``.

    With a distance d (``LpDistance`` by default), per anchor i:

        ℓ_i = [ log Σ_{p ∈ P_i} exp(d_ip − m_pos) + log Σ_{n ∈ N_i} exp(m_neg − d_in) ]_+

    (an empty set contributes 0) and L = mean_i ℓ_i (``MeanReducer``). A similarity flips the signs. Built from
    :class:`~pairloss.links.LogSumExp` row links without the 1 and an outer :class:`~pairloss.links.Hinge`.
    """
    spec = PairLossSpec(
        LogSumExp(1.0, add_one=False),
        LogSumExp(1.0, add_one=False),
        distance,
        pos_margin,
        neg_margin,
        reducer=get_reducer(reducer, MeanReducer),
        combine=Hinge(),
        generic_pair_rule=True,
    )
    return evaluate_pairs(spec, embeddings, labels, indices_tuple, ref_emb, ref_labels, block_size=block_size)


@loss_module(
    generalized_lifted_structure_loss,
    formula="mean_i [log Σ_P e^{d_ip − m_pos} + log Σ_N e^{m_neg − d_in}]_+",
    paper="Hermans, Beyer, Leibe. In defense of the triplet loss for person re-identification. arXiv 2017",
    family="metric",
    supports_cross_rank=True,
)
class GeneralizedLiftedStructureLoss(EmbeddingLoss):
    """Generalized lifted structure loss: soft-max positive distance vs soft-min negative distance per anchor.

    See :func:`generalized_lifted_structure_loss`. Arguments and defaults are PML's.
    """
