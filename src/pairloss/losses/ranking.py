"""Learning-to-rank losses over lists of scored items.

Inputs are padded lists ``(scores [B, L], relevance [B, L])`` with relevance ``-1`` at padded slots (allRank /
TF-Ranking), or flat impressions ``(scores [n], relevance [n], group_ids [n])``; a flat batch is converted to the
padded form with one sort (:func:`pairloss.losses._lists.group_to_lists`). Padded items never influence a loss and
receive zero gradient. A list with fewer than two real items, or whose items all have the same relevance, carries
no ordering information: it contributes 0 and is not counted in a mean (the calibrated softmax, a calibration loss,
is the one exception, see its docstring).

Pairs are all ``(i, j)`` of one list with ``y_i > y_j`` (:class:`pairloss.pairs.RelevancePairs`); their margin is
``s_i − s_j``. The pairwise terms are computed as ``[b, L, L]`` tensors over blocks of ``b`` lists whose size the
memory budget bounds (:mod:`pairloss.memory`), so long lists never hold the whole batch's pair tensors. The pairwise
losses (hinge, soft zero-one) are a link from :mod:`pairloss.links` on the shared list-pair evaluator
(:func:`pairloss.losses._lists.pairwise_sum`), which forms each block's gradient from the link's derivative in the
forward pass. RankNet and LambdaLoss (every weighting scheme) use the logistic evaluator
(:func:`pairloss.losses._lists.logistic_pair_sum`): LambdaLoss sorts each list by score once, so that its
rank-dependent weights are one constant ``[L, L]`` matrix (:meth:`pairloss.weights.LambdaWeight.rank_factor`), and
each block's weights, margins, log-sigmoid and sigmoid are written into workspaces reused by every block, with no
masks and no host synchronisation; both run under ``torch.compile(fullgraph=True)`` on padded lists. ApproxNDCG and
NeuralNDCG are not sums over pairs of a link, so they run each block under activation checkpointing
(:func:`pairloss.memory.blocked_sum`).

Names follow allRank / TF-Ranking:

===========================  ======================================  ===========================================
pairloss                     allRank                                 TF-Ranking
===========================  ======================================  ===========================================
``RankNetLoss``              ``rankNet``                             ``PairwiseLogisticLoss``
``PairwiseHingeLoss``        –                                       ``PairwiseHingeLoss``
``PairwiseSoftZeroOneLoss``  –                                       ``PairwiseSoftZeroOneLoss``
``LambdaLoss``               ``lambdaLoss(weighing_scheme=...)``     ``*LambdaWeight`` on a pairwise loss
``LambdaRankLoss``           ``lambdaLoss("lambdaRank_scheme")``     ``NDCGLambdaWeight``
``ListNetLoss``              ``listNet``                             –
``ListMLELoss``              ``listMLE``                             ``ListMLELoss``
``ApproxNDCGLoss``           ``approxNDCGLoss``                      ``ApproxNDCGLoss``
``NeuralNDCGLoss``           ``neuralNDCG``                          –
``ListCELoss``               –                                       ``SoftmaxLoss``
``CalibratedSoftmaxLoss``    –                                       –
===========================  ======================================  ===========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pairloss import links, memory
from pairloss._validation import check_choice, check_positive
from pairloss.losses._lists import (
    LIST_BATCH_AXES,
    Lists,
    dcg_discounts,
    exp_gains,
    ideal_dcg,
    list_pair_loss,
    logistic_pair_sum,
    prepare_lists,
)
from pairloss.losses.base import PairLoss, loss_module, mean_of_active
from pairloss.pairs import RelevancePairs
from pairloss.reducers import MeanReducer, Reducer, SumReducer
from pairloss.weights import LAMBDA_SCHEMES, LambdaWeight, Uniform, rank_order

__all__ = [
    "LAMBDA_SCHEMES",
    "ApproxNDCGLoss",
    "CalibratedSoftmaxLoss",
    "LambdaLoss",
    "LambdaRankLoss",
    "ListCELoss",
    "ListMLELoss",
    "ListNetLoss",
    "NeuralNDCGLoss",
    "PairwiseHingeLoss",
    "PairwiseSoftZeroOneLoss",
    "RankNetLoss",
    "approx_ndcg_loss",
    "calibrated_softmax_loss",
    "lambda_loss",
    "lambdarank_loss",
    "list_ce_loss",
    "listmle_loss",
    "listnet_loss",
    "neural_ndcg_loss",
    "pairwise_hinge_loss",
    "pairwise_soft_zero_one_loss",
    "ranknet_loss",
]

_REDUCTIONS = ("mean", "sum")


def _neg(dtype: torch.dtype) -> float:
    """A finite stand-in for −∞ at masked slots: exp() of it is 0 and sums of it stay finite."""
    return torch.finfo(dtype).min / 4


def _reducer(reduction: str) -> Reducer:
    return MeanReducer() if check_choice(reduction, "reduction", _REDUCTIONS) == "mean" else SumReducer()


def _pairwise(lists: Lists, link: links.Link, reduction: str) -> Tensor:
    return list_pair_loss(lists, RelevancePairs(), link, Uniform(), _reducer(reduction))


def ranknet_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    sigma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """RankNet / pairwise logistic loss (Burges et al., ICML 2005).

        L = mean_{(i,j): y_i > y_j} log(1 + exp(−σ (s_i − s_j)))

    ``reduction="mean"`` averages over all pairs of the batch (allRank's ``rankNet`` with σ = 1);
    ``"sum"`` sums them. A batch without pairs gives 0.
    """
    check_positive(sigma, "sigma")
    check_choice(reduction, "reduction", _REDUCTIONS)
    lists = prepare_lists(scores, relevance, group_ids)
    pairs = RelevancePairs()
    above, below = pairs.sides(lists.relevance, lists.valid)
    total = logistic_pair_sum(lists.scores, above, below, form="order", sigma=sigma)
    return _reducer(reduction).finish(total, pairs.count(lists.relevance, lists.valid).to(total.dtype))


def pairwise_hinge_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    margin: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Pairwise hinge loss (RankSVM, Joachims, KDD 2002; TF-Ranking's ``PairwiseHingeLoss``).

    L = mean_{(i,j): y_i > y_j} max(0, m − (s_i − s_j))
    """
    check_positive(margin, "margin", allow_zero=True)
    check_choice(reduction, "reduction", _REDUCTIONS)
    lists = prepare_lists(scores, relevance, group_ids)
    return _pairwise(lists, links.Hinge(margin), reduction)


def pairwise_soft_zero_one_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    sigma: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Pairwise soft zero-one loss, a sigmoid relaxation of the count of mis-ordered pairs (TF-Ranking).

    L = mean_{(i,j): y_i > y_j} σ(−σ_s (s_i − s_j)),     σ(t) = 1 / (1 + e^{−t})
    """
    check_positive(sigma, "sigma")
    check_choice(reduction, "reduction", _REDUCTIONS)
    lists = prepare_lists(scores, relevance, group_ids)
    return _pairwise(lists, links.SigmoidRank(tau=1.0 / sigma), reduction)


# ---------------------------------------------------------------- LambdaLoss / LambdaRank


def lambda_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    weighing_scheme: str | None = "ndcg_loss2pp",
    k: int | None = None,
    sigma: float = 1.0,
    mu: float = 10.0,
    reduction: str = "sum",
) -> Tensor:
    """LambdaLoss (Wang, Li, Golbandi, Bendersky, Najork, CIKM 2018) and its weighting schemes.

    With ranks ``r_i`` (1-based) by the current scores, ``D_i = log2(1 + r_i)``, normalised gains
    ``G_i = (2^{y_i} − 1) / IDCG@k`` and weights ``w_ij`` (constants, no gradient):

        L = Σ_{(i,j) ∈ P} w_ij · log2(1 + exp(−σ (s_i − s_j)))

    * ``"lambdarank"`` (LambdaRank, |ΔNDCG|): ``w_ij = |1/D_i − 1/D_j| · |G_i − G_j|``;
    * ``"ndcg_loss2"``: ``w_ij = δ_ij |G_i − G_j|`` with ``δ_ij = 1/log2(1+|r_i−r_j|) − 1/log2(2+|r_i−r_j|)``;
    * ``"ndcg_loss2pp"`` (NDCG-Loss2++): ``w_ij = μ δ_ij |G_i − G_j| + |1/D_i − 1/D_j| |G_i − G_j|``;
    * ``"ndcg_loss1"``: ``w_ij = G_i / D_i``, over all real pairs ``i ≠ j`` (not only ``y_i > y_j``);
    * ``None``: ``w_ij = 1`` (RankNet with log base 2).

    ``P`` is the pairs with ``y_i > y_j`` (all ``i ≠ j`` for NDCG-Loss1); with ``k`` only pairs whose two items
    are both ranked in the top ``k`` count and IDCG is truncated at ``k`` (allRank's convention). Unlike allRank,
    NDCG-Loss1 skips the self-pairs ``i = j`` (a constant ``Σ_i G_i / D_i``). ``reduction="sum"`` (allRank's
    default) sums over pairs, ``"mean"`` averages over them.
    """
    if weighing_scheme is not None:
        check_choice(weighing_scheme, "weighing_scheme", LAMBDA_SCHEMES)
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_positive(sigma, "sigma")
    check_positive(mu, "mu", allow_zero=True)
    check_choice(reduction, "reduction", _REDUCTIONS)
    lists = prepare_lists(scores, relevance, group_ids)
    total, count = _lambda_sums(lists, weighing_scheme, k, sigma, mu)
    return _reducer(reduction).finish(total / math.log(2.0), count.to(total.dtype))


def _lambda_sums(lists: Lists, scheme: str | None, k: int | None, sigma: float, mu: float) -> tuple[Tensor, Tensor]:
    """``(Σ_{(i,j) ∈ P} w_ij log(1 + e^{−σ(s_i − s_j)}), |P|)`` of :func:`lambda_loss` (natural log).

    The lists are sorted by their (detached) scores first, with one ``[B, L]`` sort: there the rank of an item is
    its position, so every rank-dependent part of ``w_ij`` is one constant ``[L, L]`` matrix
    (:meth:`LambdaWeight.rank_factor`), the top-``k`` pairs are the leading ``k × k`` block, and a pair's weight is
    that factor times ``max(G_i − G_j, 0)``, which is ``|G_i − G_j|`` on the pairs ``y_i > y_j`` and 0 off them.
    """
    pairs = RelevancePairs()
    if scheme is None and k is None:
        above, below = pairs.sides(lists.relevance, lists.valid)
        total = logistic_pair_sum(lists.scores, above, below, form="order", sigma=sigma)
        return total, pairs.count(lists.relevance, lists.valid)
    length = lists.scores.shape[-1]
    top = length if k is None else min(k, length)
    order = rank_order(lists.scores, lists.valid)[:, :top]
    s, y, valid = lists.scores.gather(1, order), lists.relevance.gather(1, order), lists.valid.gather(1, order)
    if scheme is None:
        above, below = pairs.sides(y, valid)
        total = logistic_pair_sum(s, above, below, form="order", sigma=sigma)
        return total, pairs.count(y, valid)
    idcg = ideal_dcg(lists.relevance, lists.valid, k).clamp_min(torch.finfo(s.dtype).tiny)
    gain = (exp_gains(lists.relevance, lists.valid) / idcg[:, None]).gather(1, order)
    if scheme == "ndcg_loss1":
        # w_ij = G_i / D_i over the real pairs i ≠ j of informative lists
        per_item = gain * dcg_discounts(top, s)
        others = (valid & lists.informative[:, None]).to(s.dtype)
        off_diagonal = 1.0 - torch.eye(top, dtype=s.dtype, device=s.device)
        total = logistic_pair_sum(s, per_item, others, form="product", factor=off_diagonal, sigma=sigma)
        n_real = others.sum(-1)
        return total, (n_real * (n_real - 1.0)).sum()
    neg = torch.full((), float("-inf"), dtype=s.dtype, device=s.device)
    above, below = torch.where(valid, gain, neg), torch.where(valid, gain, -neg)
    factor = LambdaWeight(scheme, k, mu).rank_factor(top, s)
    total = logistic_pair_sum(s, above, below, form="gap", factor=factor, sigma=sigma)
    return total, pairs.count(y, valid)


def lambdarank_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    k: int | None = None,
    sigma: float = 1.0,
    reduction: str = "sum",
) -> Tensor:
    """LambdaRank (Burges, Ragno, Le, NeurIPS 2006) as a loss: RankNet pairs weighted by |ΔNDCG_ij|.

        L = Σ_{(i,j): y_i > y_j} |ΔNDCG_ij| · log2(1 + exp(−σ (s_i − s_j))),
        |ΔNDCG_ij| = |1/D_i − 1/D_j| · |G_i − G_j|

    (the change of NDCG@k when items i and j swap ranks). Same as ``lambda_loss(weighing_scheme="lambdarank")``.
    """
    return lambda_loss(
        scores,
        relevance,
        group_ids,
        weighing_scheme="lambdarank",
        k=k,
        sigma=sigma,
        reduction=reduction,
    )


# ---------------------------------------------------------------- listwise losses


def _list_mean(per_list: Tensor, lists: Lists, counted: Tensor | None = None) -> Tensor:
    counted = lists.informative if counted is None else counted
    zero = torch.zeros((), dtype=per_list.dtype, device=per_list.device)
    total = torch.where(counted, per_list, zero).sum()
    return mean_of_active(total, counted.sum().to(per_list.dtype))


def _masked_log_softmax(x: Tensor, valid: Tensor) -> Tensor:
    return torch.log_softmax(torch.where(valid, x, torch.full((), _neg(x.dtype), dtype=x.dtype)), dim=-1)


def listnet_loss(scores: Tensor, relevance: Tensor, group_ids: Tensor | None = None) -> Tensor:
    """ListNet, top-one probability (Cao, Qin, Liu, Tsai, Li, ICML 2007), as in allRank's ``listNet``.

        L = mean_lists − Σ_i softmax(y)_i · log softmax(s)_i

    (cross-entropy between the top-one distributions of the relevance labels and of the scores).
    """
    lists = prepare_lists(scores, relevance, group_ids)
    zero = torch.zeros((), dtype=lists.scores.dtype, device=lists.scores.device)
    target = _masked_log_softmax(lists.relevance, lists.valid).exp()
    log_p = _masked_log_softmax(lists.scores, lists.valid)
    per_list = -torch.where(lists.valid, target * log_p, zero).sum(-1)
    return _list_mean(per_list, lists)


def listmle_loss(scores: Tensor, relevance: Tensor, group_ids: Tensor | None = None) -> Tensor:
    """ListMLE (Xia, Liu, Wang, Zhang, Li, ICML 2008): Plackett-Luce negative log-likelihood of the ideal order.

    With π the items sorted by decreasing relevance (ties kept in input order):

        L = mean_lists Σ_{r=1}^{n} [ log Σ_{t ≥ r} exp(s_{π(t)}) − s_{π(r)} ]

    allRank's ``listMLE`` breaks ties at random instead; ties here are deterministic.
    """
    lists = prepare_lists(scores, relevance, group_ids)
    zero = torch.zeros((), dtype=lists.scores.dtype, device=lists.scores.device)
    rel_key = torch.where(lists.valid, lists.relevance, torch.full((), -math.inf, dtype=lists.relevance.dtype))
    order = torch.argsort(rel_key, dim=-1, descending=True, stable=True)
    s = torch.gather(lists.scores, -1, order)
    valid = torch.gather(lists.valid, -1, order)
    masked = torch.where(valid, s, torch.full((), _neg(s.dtype), dtype=s.dtype))
    tail_lse = torch.flip(torch.logcumsumexp(torch.flip(masked, [-1]), dim=-1), [-1])
    per_list = torch.where(valid, tail_lse - s, zero).sum(-1)
    return _list_mean(per_list, lists)


def list_ce_loss(scores: Tensor, relevance: Tensor, group_ids: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy, ListCE (Bruch, Wang, Bendersky, Najork, ICTIR 2019; TF-Ranking's ``SoftmaxLoss``).

    L = mean_lists − Σ_i (y_i / Σ_j y_j) · log( exp(s_i) / Σ_j exp(s_j) )
    """
    lists = prepare_lists(scores, relevance, group_ids)
    zero = torch.zeros((), dtype=lists.scores.dtype, device=lists.scores.device)
    y = torch.where(lists.valid, lists.relevance, zero)
    target = y / y.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    log_p = _masked_log_softmax(lists.scores, lists.valid)
    per_list = -torch.where(lists.valid, target * log_p, zero).sum(-1)
    return _list_mean(per_list, lists)


def calibrated_softmax_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    virtual_label: float = 1.0,
    anchor: float = 0.0,
) -> Tensor:
    """Calibrated softmax with a virtual item (Yan, Qin, Wang, Bendersky, Najork, KDD 2022).

    Each list gets a virtual item with fixed score ``s_0 = anchor`` and label ``y_0 = virtual_label``:

        L = mean_lists − Σ_{i ∈ {0} ∪ list} (y_i / (y_0 + Σ_j y_j)) · log( e^{s_i} / (e^{s_0} + Σ_j e^{s_j}) )

    The virtual item anchors the scale of the scores, so the loss is not shift-invariant and the scores become
    calibrated: for a single item the optimum is ``σ(s − s_0) = y / (y_0 + y)``. Because that is a calibration
    objective, every list with at least one real item counts, also single-item and all-equal lists (an all-zero
    list pushes its scores below the anchor); lists with only padding contribute 0.
    """
    check_positive(virtual_label, "virtual_label")
    if not math.isfinite(anchor):
        raise ValueError(f"anchor must be finite, got {anchor}")
    lists = prepare_lists(scores, relevance, group_ids)
    s, valid = lists.scores, lists.valid
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    y = torch.where(valid, lists.relevance, zero)
    log_z = torch.logaddexp(
        torch.logsumexp(torch.where(valid, s, torch.full((), _neg(s.dtype), dtype=s.dtype)), dim=-1),
        torch.full((), anchor, dtype=s.dtype, device=s.device),
    )
    total = virtual_label + y.sum(-1)
    per_list = -(virtual_label * (anchor - log_z) + torch.where(valid, y * (s - log_z[:, None]), zero).sum(-1))
    return _list_mean(per_list / total, lists, counted=valid.any(-1))


def _blocked_list_sums(fn: Callable[..., Tensor], lists: Lists, pair_tensors: int) -> Tensor:
    """``Σ_blocks fn(scores, relevance, valid, informative)`` over blocks of lists, each holding ``pair_tensors``
    ``[b, L, L]`` temporaries, checkpointed (:func:`pairloss.memory.blocked_sum`)."""
    row_bytes = pair_tensors * max(lists.scores.shape[-1], 1) ** 2 * lists.scores.element_size()
    tensors = (lists.scores, lists.relevance, lists.valid, lists.informative)
    return memory.blocked_sum(fn, tensors, row_bytes=row_bytes)


def approx_ndcg_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    alpha: float = 1.0,
) -> Tensor:
    """ApproxNDCG (Qin, Liu, Li, Information Retrieval 2010): NDCG with a sigmoid-smoothed rank.

        π̂_i = 1 + Σ_{j ≠ i} σ(−α (s_i − s_j)),   L = mean_lists [ 1 − Σ_i (2^{y_i} − 1) / (IDCG · log2(1 + π̂_i)) ]

    (``1 − NDCG`` so that 0 is a perfect list; allRank and TF-Ranking return ``−NDCG``, same gradient.)
    """
    check_positive(alpha, "alpha")
    lists = prepare_lists(scores, relevance, group_ids)

    def chunk(s: Tensor, y: Tensor, valid: Tensor, informative: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
        others = valid[:, None, :] & ~eye
        soft = torch.where(others, torch.sigmoid(-alpha * (s[:, :, None] - s[:, None, :])), zero)
        approx_rank = 1.0 + soft.sum(-1)
        idcg = ideal_dcg(y, valid).clamp_min(torch.finfo(s.dtype).tiny)
        gain = exp_gains(y, valid)
        ndcg = (gain / torch.log2(1.0 + approx_rank)).sum(-1) / idcg
        per_list = torch.where(informative, 1.0 - ndcg, zero)
        return torch.stack([per_list.sum(), informative.sum().to(s.dtype)])

    sums = _blocked_list_sums(chunk, lists, pair_tensors=4)
    return mean_of_active(sums[0], sums[1])


def neural_ndcg_loss(
    scores: Tensor,
    relevance: Tensor,
    group_ids: Tensor | None = None,
    *,
    temperature: float = 1.0,
    k: int | None = None,
    sinkhorn_iters: int = 50,
) -> Tensor:
    """NeuralNDCG (Pobrotyn, Białobrzeski, 2021): NDCG@k under a NeuralSort relaxation of sorting.

    For a list of n real items, NeuralSort (Grover et al., ICLR 2019) gives a soft permutation matrix

        P̂[r, :] = softmax( ((n + 1 − 2r) s − A_s 1) / τ ),   A_s[i, j] = |s_i − s_j|,   r = 1 .. n

    made doubly stochastic by ``sinkhorn_iters`` rounds of column then row normalisation (log domain). Then

        L = mean_lists [ 1 − Σ_{r ≤ k} (P̂ g)_r / log2(1 + r) / IDCG@k ],   g_i = 2^{y_i} − 1

    (``1 − NDCG``; allRank's ``neuralNDCG`` returns ``−NDCG`` and stops Sinkhorn at a tolerance.)
    """
    check_positive(temperature, "temperature")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if sinkhorn_iters < 0:
        raise ValueError(f"sinkhorn_iters must be >= 0, got {sinkhorn_iters}")
    lists = prepare_lists(scores, relevance, group_ids)

    def chunk(s: Tensor, y: Tensor, valid: Tensor, informative: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        neg = torch.full((), _neg(s.dtype), dtype=s.dtype, device=s.device)
        length = s.shape[-1]
        n = valid.sum(-1, keepdim=True)
        spread = torch.where(valid[:, None, :], (s[:, :, None] - s[:, None, :]).abs(), zero).sum(-1)
        r = torch.arange(1, length + 1, dtype=s.dtype, device=s.device)
        scale = (n.to(s.dtype) + 1.0 - 2.0 * r)[:, :, None]
        mask = (r[None, :, None] <= n[:, :, None].to(s.dtype)) & valid[:, None, :]
        log_p = torch.where(mask, (scale * s[:, None, :] - spread[:, None, :]) / temperature, neg)
        log_p = torch.where(mask, log_p - torch.logsumexp(log_p, dim=-1, keepdim=True), neg)
        for _ in range(sinkhorn_iters):
            log_p = torch.where(mask, log_p - torch.logsumexp(log_p, dim=-2, keepdim=True), neg)
            log_p = torch.where(mask, log_p - torch.logsumexp(log_p, dim=-1, keepdim=True), neg)
        p_hat = torch.where(mask, log_p.exp(), zero)
        gain = exp_gains(y, valid)
        disc = dcg_discounts(length, s)
        if k is not None:
            disc = torch.where(torch.arange(length, device=s.device) < k, disc, zero)
        dcg = (torch.einsum("brl,bl->br", p_hat, gain) * disc).sum(-1)
        idcg = ideal_dcg(y, valid, k).clamp_min(torch.finfo(s.dtype).tiny)
        per_list = torch.where(informative, 1.0 - dcg / idcg, zero)
        return torch.stack([per_list.sum(), informative.sum().to(s.dtype)])

    sums = _blocked_list_sums(chunk, lists, pair_tensors=6)
    return mean_of_active(sums[0], sums[1])


# ---------------------------------------------------------------- modules


def _ranking(function: Callable[..., Tensor], formula: str, paper: str) -> Callable[[type[PairLoss]], type[PairLoss]]:
    describe = loss_module(function, formula=formula, paper=paper, family="ranking")

    def decorate(cls: type[PairLoss]) -> type[PairLoss]:
        cls.batch_axes = LIST_BATCH_AXES
        return describe(cls)

    return decorate


@_ranking(
    ranknet_loss,
    "mean_{y_i>y_j} log(1 + exp(−σ(s_i − s_j)))",
    "Burges et al. Learning to rank using gradient descent. ICML 2005",
)
class RankNetLoss(PairLoss):
    """RankNet / pairwise logistic loss; see :func:`ranknet_loss`."""


@_ranking(
    pairwise_hinge_loss,
    "mean_{y_i>y_j} max(0, m − (s_i − s_j))",
    "Joachims. Optimizing search engines using clickthrough data. KDD 2002",
)
class PairwiseHingeLoss(PairLoss):
    """Pairwise hinge loss; see :func:`pairwise_hinge_loss`."""


@_ranking(
    pairwise_soft_zero_one_loss,
    "mean_{y_i>y_j} sigmoid(−σ(s_i − s_j))",
    "Pasumarthi et al. TF-Ranking: scalable TensorFlow library for learning-to-rank. KDD 2019",
)
class PairwiseSoftZeroOneLoss(PairLoss):
    """Pairwise soft zero-one loss; see :func:`pairwise_soft_zero_one_loss`."""


@_ranking(
    lambda_loss,
    "Σ_{y_i>y_j} w_ij(ranks, gains) · log2(1 + exp(−σ(s_i − s_j)))",
    "Wang et al. The LambdaLoss framework for ranking metric optimization. CIKM 2018",
)
class LambdaLoss(PairLoss):
    """LambdaLoss with a weighting scheme (NDCG-Loss1, -Loss2, -Loss2++, LambdaRank); see :func:`lambda_loss`."""


@_ranking(
    lambdarank_loss,
    "Σ_{y_i>y_j} |ΔNDCG_ij| · log2(1 + exp(−σ(s_i − s_j)))",
    "Burges, Ragno, Le. Learning to rank with nonsmooth cost functions. NeurIPS 2006",
)
class LambdaRankLoss(PairLoss):
    """LambdaRank: RankNet pairs weighted by |ΔNDCG|; see :func:`lambdarank_loss`."""


@_ranking(
    listnet_loss,
    "mean_lists −Σ_i softmax(y)_i log softmax(s)_i",
    "Cao et al. Learning to rank: from pairwise approach to listwise approach. ICML 2007",
)
class ListNetLoss(PairLoss):
    """ListNet (top-one); see :func:`listnet_loss`."""


@_ranking(
    listmle_loss,
    "mean_lists Σ_r [log Σ_{t≥r} exp(s_π(t)) − s_π(r)], π sorted by y",
    "Xia et al. Listwise approach to learning to rank: theory and algorithm. ICML 2008",
)
class ListMLELoss(PairLoss):
    """ListMLE; see :func:`listmle_loss`."""


@_ranking(
    list_ce_loss,
    "mean_lists −Σ_i (y_i/Σy) log softmax(s)_i",
    "Bruch et al. An analysis of the softmax cross entropy loss for learning-to-rank. ICTIR 2019",
)
class ListCELoss(PairLoss):
    """Softmax cross-entropy (ListCE); see :func:`list_ce_loss`."""


@_ranking(
    calibrated_softmax_loss,
    "mean_lists −Σ_{i∈{0}∪list} y_i/(y_0+Σy) · log softmax([s_0, s])_i",
    "Yan et al. Scale calibration of deep ranking models. KDD 2022",
)
class CalibratedSoftmaxLoss(PairLoss):
    """Calibrated softmax with a virtual item; see :func:`calibrated_softmax_loss`."""


@_ranking(
    approx_ndcg_loss,
    "mean_lists 1 − Σ_i G_i / log2(1 + 1 + Σ_{j≠i} sigmoid(−α(s_i − s_j)))",
    "Qin, Liu, Li. A general approximation framework for direct optimization of IR measures. IRJ 2010",
)
class ApproxNDCGLoss(PairLoss):
    """ApproxNDCG; see :func:`approx_ndcg_loss`."""


@_ranking(
    neural_ndcg_loss,
    "mean_lists 1 − Σ_{r≤k} (Sinkhorn(NeuralSort_τ(s)) g)_r / log2(1 + r) / IDCG@k",
    "Pobrotyn, Białobrzeski. NeuralNDCG: direct optimisation of a ranking metric. arXiv 2102.07831",
)
class NeuralNDCGLoss(PairLoss):
    """NeuralNDCG; see :func:`neural_ndcg_loss`."""
