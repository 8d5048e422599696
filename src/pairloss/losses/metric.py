"""Standard metric-learning losses on the row-block engine.

Class names, arguments and defaults follow pytorch-metric-learning (PML) 2.x; with the default reduction each
value equals PML's on the same input. Every function takes
``(embeddings, labels, ref_emb=None, ref_labels=None)`` except :func:`npairs_loss` (no reference set, as in
PML). Deliberate differences from PML are listed in each docstring and in ``docs/losses-metric.md``.

All losses but N-pairs are row-decomposable and run on :func:`pairloss.engine.row_block_sums`: each row
function returns a handful of sums (loss totals and counts) over its block of anchors, and the reduction
(PML's ``MeanReducer``, ``AvgNonZeroReducer`` or ``DivisorReducer``) is applied to the sums
afterwards, so the value does not depend on the block size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss import engine
from pairloss._sparse_pairs import SparsePairWeights
from pairloss._validation import check_choice, check_int, check_positive, check_tensor
from pairloss.engine import CROSS_RANK, PairBlock, RowFunction, RowSums, row_block_sums
from pairloss.losses.base import EmbeddingLoss, FunctionalEmbeddingLoss, check_pair_inputs, mean_of_active
from pairloss.similarity import BaseSimilarity, CosineSimilarity, DotProductSimilarity, LpDistance

__all__ = [
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "circle_loss",
    "contrastive_loss",
    "generalized_lifted_structure_loss",
    "lifted_structure_loss",
    "margin_loss",
    "multi_similarity_loss",
    "npairs_loss",
    "ntxent_loss",
    "supcon_loss",
    "triplet_margin_loss",
]


def contrastive_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Contrastive loss (Hadsell, Chopra, LeCun, CVPR 2006), PML's ``ContrastiveLoss``.

    With a distance d (``LpDistance`` on normalised embeddings by default):

        L = mean_{(i,j) ∈ P, ℓ>0} [d_ij − m_pos]_+  +  mean_{(i,j) ∈ N, ℓ>0} [m_neg − d_ij]_+

    where each mean runs over the ordered pairs whose loss is positive (PML's ``AvgNonZeroReducer``); a
    similarity flips the signs (``[m_pos − s_ij]_+`` and ``[s_ij − m_neg]_+``). A batch without positive (or
    negative) pairs contributes 0 for that term.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    distance = distance if distance is not None else LpDistance()

    # Given which pairs are active, each sum is linear in the scores: Σ [d − m]_+ = Σ_active d − m·#active.
    # So a row needs two boolean masks and two masked sums; the masks are the slopes of the sums, and the pair
    # function is symmetric, so the engine scores each unordered pair once.
    sign = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        d = block.sim
        pos_active = (d < pos_margin if distance.is_inverted else d > pos_margin).logical_and_(block.positive)
        neg_active = (d > neg_margin if distance.is_inverted else d < neg_margin).logical_and_(block.negative)
        values = [
            torch.where(pos_active, d, 0.0).sum(),
            pos_active.count_nonzero(),
            torch.where(neg_active, d, 0.0).sum(),
            neg_active.count_nonzero(),
        ]
        return RowSums(torch.stack([v.double() for v in values]), (pos_active, None, neg_active, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=6,
        symmetric=True,
    )
    pos_total = sign * (sums[0] - pos_margin * sums[1])
    neg_total = sign * (neg_margin * sums[3] - sums[2])
    return mean_of_active(pos_total, sums[1]) + mean_of_active(neg_total, sums[3])


class ContrastiveLoss(FunctionalEmbeddingLoss):
    """Contrastive loss: pull positive pairs within ``pos_margin``, push negatives beyond ``neg_margin``.

    See :func:`contrastive_loss` for the formula. Arguments and defaults are PML's.
    """

    formula = "mean_{P,>0}[d_ij − m_pos]_+ + mean_{N,>0}[m_neg − d_ij]_+"
    paper = "Hadsell, Chopra, LeCun. Dimensionality reduction by learning an invariant mapping. CVPR 2006"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.distance = distance if distance is not None else LpDistance()
        self.block_size = block_size

    loss_function = staticmethod(contrastive_loss)
    options = ("pos_margin", "neg_margin", "distance", "block_size")


TRIPLET_MINING = ("all", "semihard", "batch_hard")


def _masked_logsumexp(x: Tensor, mask: Tensor, add_one: bool) -> Tensor:
    """Per row ``log(Σ_{j ∈ mask} exp(x_j) [+ 1])``; an empty row gives 0 (PML's ``lmu.logsumexp``).

    Masked entries become ``−inf`` *before* ``exp``, so neither the value nor the gradient sees them (no NaN).
    """
    masked = x.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=1)
    shift = masked.amax(dim=1, keepdim=True).detach()
    shift = shift.clamp_min(0) if add_one else shift.masked_fill(empty[:, None], 0.0)
    total = torch.exp(masked.sub_(shift)).sum(dim=1)
    shift = shift.squeeze(1)
    total = total + (torch.exp(-shift) if add_one else empty.to(total.dtype))
    return shift + torch.log(total)


#: A mask with at most this fraction of true entries (positive pairs among many classes) takes the gathered path of
#: :func:`_log1p_sum_exp_and_grad`.
_SPARSE_MASK_DENSITY = 0.05


def _log1p_sum_exp_and_grad(
    s: Tensor, scale: float, base: float, mask: Tensor, n_active: int
) -> tuple[Tensor, Tensor | SparsePairWeights]:
    """Per row ``r_i = (1/|scale|) log(1 + Σ_{j ∈ mask} exp(scale (s_ij − base)))`` and its slope ``∂r_i/∂s_ij``.

    The slope is ``sign(scale) · exp(scale (s_ij − base)) / (1 + Σ_j exp(...))`` on ``mask`` and 0 elsewhere. No
    autograd. Exponents are shifted by the row maximum (clamped at 0, so the ``1`` stays representable) and floored
    just above the smallest normal number before ``exp`` — ``exp`` of an underflowing argument is some ten times
    slower on CPUs — and the floored terms off the mask are zeroed. With few entries in ``mask`` (``n_active`` of
    them) the work runs on the gathered entries and the slope comes back as :class:`SparsePairWeights`.
    """
    floor = math.log(torch.finfo(s.dtype).tiny) + 2.0
    if n_active <= _SPARSE_MASK_DENSITY * mask.numel():
        rows, columns = mask.nonzero(as_tuple=True)
        x = s[rows, columns].sub_(base).mul_(scale)
        shift = s.new_zeros(s.shape[0]).scatter_reduce_(0, rows, x, "amax")  # includes the 0 of the "1 +"
        terms = x.sub_(shift[rows]).clamp_min_(floor).exp_()
        denominator = s.new_zeros(s.shape[0]).index_add_(0, rows, terms).add_(torch.exp(-shift))
        value = (shift + torch.log(denominator)) / abs(scale)
        slope = terms.div_(denominator[rows] if scale > 0 else -denominator[rows])
        return value, SparsePairWeights(rows, columns, slope, (s.shape[0], s.shape[1]))
    # scale · (s − base) − shift in one pass; entries off the mask go to −inf, then to the floor
    off_mask = s.new_tensor(float("-inf") if scale > 0 else float("inf"))
    masked = torch.where(mask, s, off_mask)
    extreme = masked.amax(dim=1) if scale > 0 else masked.amin(dim=1)
    shift = extreme.sub_(base).mul_(scale).clamp_min_(0)
    x = torch.add((-scale * base - shift)[:, None], masked, alpha=scale, out=masked)
    terms = x.clamp_min_(floor).exp_()
    terms = torch.where(mask, terms, terms.new_tensor(0.0), out=terms)
    denominator = terms.sum(dim=1).add_(torch.exp(-shift))
    value = (shift + torch.log(denominator)) / abs(scale)
    return value, terms.div_((denominator if scale > 0 else -denominator)[:, None])


def _added_slopes(first: Tensor | SparsePairWeights, second: Tensor | SparsePairWeights) -> Tensor:
    """The sum of two slopes as one dense ``[b, M]`` tensor."""
    if isinstance(first, SparsePairWeights):
        first, second = second, first
    dense = first.to_dense() if isinstance(first, SparsePairWeights) else first
    if isinstance(second, SparsePairWeights):
        return dense.index_put_((second.rows, second.columns), second.values, accumulate=True)
    return dense.add_(second)


def _gathered_log_softmax(values: Tensor, rows: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """For entries ``values[p]`` of row ``rows[p]``: each row's ``log Σ exp`` (−inf for a row without entries) and
    each entry's softmax within its row."""
    shift = values.new_full((n_rows,), float("-inf")).scatter_reduce_(0, rows, values, "amax")
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    terms = (values - shift[rows]).exp_()
    total = values.new_zeros(n_rows).index_add_(0, rows, terms)
    return shift + torch.log(total), terms.div_(total[rows])


def _farness(sim: Tensor, distance: BaseSimilarity) -> Tensor:
    """Scores as "larger = farther": the distance itself, or ``−s`` for a similarity."""
    return -sim if distance.is_inverted else sim


def _counts(block: PairBlock, like: Tensor) -> list[Tensor]:
    """``[#positive pairs, #negative pairs, #anchors]`` of a block, to append to its sums."""
    return [
        block.positive.count_nonzero().to(like),
        block.negative.count_nonzero().to(like),
        torch.tensor(float(block.rows.numel()), dtype=like.dtype, device=like.device),
    ]


def _zero_unless(keep: Tensor, value: Tensor) -> Tensor:
    """``value`` where ``keep`` else an exact 0 that still carries a (zero) gradient."""
    return torch.where(keep, value, torch.zeros_like(value))


def _generic_pair_keep(n_positive: Tensor, n_negative: Tensor) -> Tensor:
    """PML's ``GenericPairLoss`` gives 0 when the batch has at most one positive and one negative pair."""
    return (n_positive > 1) | (n_negative > 1)


# ----------------------------------------------------------------------------------------------------
# Triplet margin loss
# ----------------------------------------------------------------------------------------------------


def _left_aligned(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The true entries of each row of ``mask`` packed to the left of a ``[b, K]`` table (K = most in a row).

    Returns their ``rows`` and ``columns`` in ``mask`` (row-major), their ``slots`` in the table, and the table's
    ``present`` mask.
    """
    rows, columns = mask.nonzero(as_tuple=True)
    per_row = mask.sum(dim=1)
    starts = per_row.cumsum(dim=0) - per_row
    slots = torch.arange(rows.numel(), device=mask.device) - starts[rows]
    present = torch.zeros(mask.shape[0], int(per_row.max()), dtype=torch.bool, device=mask.device)
    present[rows, slots] = True
    return rows, columns, slots, present


def _sorted_triplet_row(distance: BaseSimilarity, margin: float, semihard: bool) -> RowFunction:
    """All (or all semi-hard) hinge triplets of a row in O(M log M): sort the negatives, then prefix sums.

    Write f for the scores as "larger = farther". For anchor a and positive p the active negatives are those with
    ``f_an < f_ap + m`` (and ``f_an > f_ap`` for semi-hard), a contiguous range ``[lo, hi)`` of the sorted negative
    scores, so ``Σ_n [f_ap − f_an + m]_+ = (hi − lo)(f_ap + m) − (prefix[hi] − prefix[lo])`` (sums in float64).

    Given which triplets are active the sum is linear in the scores, so its slopes are counts: ``hi − lo`` at a
    positive, and at a negative minus the number of ranges ``[lo, hi)`` that hold it (a difference array over the
    sorted negatives). Only the positives are searched, so a block costs one sort.
    """
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        if not block.positive.any():
            return RowSums(block.sim.new_zeros(2, dtype=torch.float64), (None, None))
        far = _farness(block.sim, distance)
        n_rows, n_columns = far.shape
        sorted_negatives, order = far.masked_fill(~block.negative, float("inf")).sort(dim=1)
        negatives = sorted_negatives.to(torch.float64)
        prefix = F.pad(negatives.cumsum(dim=1), (1, 0))

        rows, columns, slots, present = _left_aligned(block.positive)
        positive_far = negatives.new_zeros(present.shape)
        positive_far[rows, slots] = far[rows, columns].to(torch.float64)
        threshold = positive_far + margin
        hi = torch.searchsorted(negatives, threshold, side="left")
        lo = torch.searchsorted(negatives, positive_far, side="right").minimum(hi) if semihard else torch.zeros_like(hi)
        lo, hi = lo.masked_fill_(~present, 0), hi.masked_fill_(~present, 0)
        count = hi - lo
        total = count * threshold - (prefix.gather(1, hi) - prefix.gather(1, lo))
        values = torch.stack([total.masked_fill_(~present, 0.0).sum(), count.sum().to(total)])

        ranges = torch.zeros(n_rows, n_columns + 1, dtype=torch.int64, device=far.device)
        ranges.scatter_add_(1, lo, present.long()).scatter_add_(1, hi, -present.long())
        holding = ranges[:, :n_columns].cumsum(dim=1).to(far.dtype)
        slope = torch.empty_like(far).scatter_(1, order, holding.mul_(-flip))
        slope[rows, columns] = flip * count[rows, slots].to(far.dtype)
        return RowSums(values, (slope, None))

    return row


def _smooth_triplet_row(distance: BaseSimilarity, margin: float, semihard: bool) -> RowFunction:
    """Softplus triplets (all or semi-hard), which have no sorting shortcut: each anchor's positives against all of
    its references, ``[b, K, M]`` for the K positives of the row with the most, in chunks of positives that keep each
    temporary near :data:`~pairloss.engine.MAX_TEMPORARY_BYTES`. The work is the number of (anchor, positive,
    reference) triplets, about ``N · M · |P|``, not ``N · M²``.

    Slopes: with ``w = σ(f_ap − f_an + m)`` over the kept triplets, ``Σ_n w`` at a positive and ``−Σ_p w`` at a
    negative.
    """
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        if not block.positive.any():
            return RowSums(block.sim.new_zeros(2, dtype=torch.float64), (None, None))
        far = _farness(block.sim, distance)
        rows, columns, slots, present = _left_aligned(block.positive)
        # a triplet that is not one (a non-negative column, an empty slot) gets a violation of −inf: no loss, no weight
        negative_far = far.masked_fill(~block.negative, float("inf"))
        positive_far = far.new_full(present.shape, float("-inf"))
        positive_far[rows, slots] = far[rows, columns]
        per_positive = torch.zeros_like(positive_far)
        per_negative = torch.zeros_like(far)
        total = far.new_zeros((), dtype=torch.float64)
        active = far.new_zeros((), dtype=torch.int64)
        chunk = max(1, engine.MAX_TEMPORARY_BYTES // (far.numel() * far.element_size()))
        for first in range(0, present.shape[1], chunk):
            kept = slice(first, first + chunk)
            violation = positive_far[:, kept, None] - negative_far[:, None, :] + margin
            if semihard:
                violation.masked_fill_((violation < 0) | (violation >= margin), float("-inf"))
            loss = F.softplus(violation)
            total += loss.sum(dtype=torch.float64)
            active += loss.count_nonzero()
            weight = violation.sigmoid_()
            per_positive[:, kept] = weight.sum(dim=2)
            per_negative += weight.sum(dim=1)
        slope = per_negative.mul_(-flip)
        slope[rows, columns] = flip * per_positive[rows, slots]
        return RowSums(torch.stack([total, active.to(total)]), (slope, None))

    return row


def _batch_hard_row(distance: BaseSimilarity, margin: float, smooth: bool) -> RowFunction:
    """One triplet per anchor: its farthest positive and its closest negative (Hermans et al. 2017).

    The slopes are two entries per row, ``±ℓ'(f_ap − f_an + m)`` at the chosen positive and negative (sparse).
    """
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        far = _farness(block.sim, distance)
        valid = block.positive.any(dim=1) & block.negative.any(dim=1)
        hardest_positive, positive_column = far.masked_fill(~block.positive, float("-inf")).max(dim=1)
        hardest_negative, negative_column = far.masked_fill(~block.negative, float("inf")).min(dim=1)
        violation = _zero_unless(valid, hardest_positive - hardest_negative + margin)
        loss = _zero_unless(valid, F.softplus(violation) if smooth else F.relu(violation))
        derivative = torch.sigmoid(violation) if smooth else (violation > 0).to(far)
        derivative = _zero_unless(valid, derivative).mul_(flip)
        slope = torch.zeros_like(far)
        rows = torch.arange(far.shape[0], device=far.device)
        slope.index_put_((rows, positive_column), derivative, accumulate=True)
        slope.index_put_((rows, negative_column), -derivative, accumulate=True)
        values = torch.stack([loss.sum(), loss.count_nonzero().to(loss)]).to(torch.float64)
        return RowSums(values, (slope, None))

    return row


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    triplets_per_anchor: str = "all",
    mining: str = "all",
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Triplet margin loss (Weinberger & Saul, JMLR 2009; Schroff et al., FaceNet, CVPR 2015), PML's
    ``TripletMarginLoss``.

    With a distance d (``LpDistance`` on normalised embeddings by default) and triplets T of
    (anchor, positive, negative):

        L = mean_{(a,p,n) ∈ T, ℓ>0} [d_ap − d_an + m]_+      (``smooth_loss``: log(1 + exp(d_ap − d_an + m)))

    averaged over the triplets with a positive loss (``AvgNonZeroReducer``). ``mining`` picks T:

    * ``"all"``: every triplet, computed per anchor in O(M log M) by sorting its negative distances (never the
      ``[N, P, N]`` tensor PML builds);
    * ``"semihard"``: triplets with ``d_ap < d_an ≤ d_ap + m`` (PML's ``TripletMarginMiner(margin,
      type_of_triplets="semihard")`` followed by this loss);
    * ``"batch_hard"``: per anchor the farthest positive and the closest negative (PML's ``BatchHardMiner``
      followed by this loss; Hermans, Beyer, Leibe 2017).

    A similarity flips the signs (``s_an − s_ap + m``). Deliberate differences from PML: ``swap=True`` (the
    positive–negative distance needs the full reference×reference matrix) and an integer
    ``triplets_per_anchor`` (PML samples triplets at random) are rejected with a ``ValueError``.
    ``smooth_loss`` with ``"all"`` or ``"semihard"`` has no sorting shortcut: it scores each anchor's positives
    against its references explicitly, in chunks (the same work as PML's list of triplets, without the list).
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    check_choice(mining, "mining", TRIPLET_MINING)
    if triplets_per_anchor != "all":
        raise ValueError(
            f"triplets_per_anchor must be 'all' (random triplet sampling is not supported), got "
            f"{triplets_per_anchor!r}; use mining='batch_hard' or 'semihard' for fewer triplets"
        )
    if swap:
        raise ValueError("swap=True is not supported: it needs the full reference×reference distance matrix")
    distance = distance if distance is not None else LpDistance()
    if mining == "batch_hard":
        row, copies = _batch_hard_row(distance, margin, smooth_loss), 6
    elif smooth_loss:
        row, copies = _smooth_triplet_row(distance, margin, mining == "semihard"), 8
    else:
        row, copies = _sorted_triplet_row(distance, margin, mining == "semihard"), 24
    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=copies,
    )
    return mean_of_active(sums[0], sums[1])


class TripletMarginLoss(FunctionalEmbeddingLoss):
    """Triplet margin loss with all, semi-hard or batch-hard triplets (see :func:`triplet_margin_loss`).

    Arguments and defaults are PML's, plus ``mining`` (``"all"``: PML's ``triplets_per_anchor="all"``).
    """

    formula = "mean_{(a,p,n), ℓ>0} [d_ap − d_an + m]_+"
    paper = "Schroff, Kalenichenko, Philbin. FaceNet: A unified embedding for face recognition. CVPR 2015"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: str = "all",
        mining: str = "all",
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        check_choice(mining, "mining", TRIPLET_MINING)
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss
        self.triplets_per_anchor = triplets_per_anchor
        self.mining = mining
        self.distance = distance if distance is not None else LpDistance()
        self.block_size = block_size

    loss_function = staticmethod(triplet_margin_loss)
    options = ("margin", "swap", "smooth_loss", "triplets_per_anchor", "mining", "distance", "block_size")


# ----------------------------------------------------------------------------------------------------
# Multi-similarity, circle, generalized lifted structure
# ----------------------------------------------------------------------------------------------------


def multi_similarity_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Multi-similarity loss (Wang, Han, Huang, Dong, Scott, CVPR 2019), PML's ``MultiSimilarityLoss``.

    With a similarity s (cosine by default), per anchor i:

        ℓ_i = (1/α) log(1 + Σ_{p ∈ P_i} exp(−α (s_ip − λ))) + (1/β) log(1 + Σ_{n ∈ N_i} exp(β (s_in − λ)))

    and L = mean_i ℓ_i over all anchors (``MeanReducer``; an anchor without positives or negatives contributes
    0 for that term). As in PML's ``GenericPairLoss``, L = 0 when the batch has at most one positive and one
    negative pair. The pair mining step of the paper is not part of the loss (PML's ``MultiSimilarityMiner``).
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    distance = distance if distance is not None else CosineSimilarity()
    sign = 1.0 if distance.is_inverted else -1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        s = block.sim
        counts = _counts(block, s.new_zeros((), dtype=torch.float64))
        pos, pos_slope = _log1p_sum_exp_and_grad(s, -sign * alpha, base, block.positive, int(counts[0]))
        neg, neg_slope = _log1p_sum_exp_and_grad(s, sign * beta, base, block.negative, int(counts[1]))
        value = pos.sum().double() + neg.sum().double()
        values = torch.stack([value, *counts])
        return RowSums(values, (_added_slopes(pos_slope, neg_slope), None, None, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=6,
    )
    return _zero_unless(_generic_pair_keep(sums[1], sums[2]), sums[0] / sums[3])


class MultiSimilarityLoss(FunctionalEmbeddingLoss):
    """Multi-similarity loss: soft weighting of positives and negatives by self- and relative similarity.

    See :func:`multi_similarity_loss`. Arguments and defaults are PML's.
    """

    formula = "mean_i (1/α)log(1+Σ_P e^{−α(s_ip−λ)}) + (1/β)log(1+Σ_N e^{β(s_in−λ)})"
    paper = "Wang et al. Multi-similarity loss with general pair weighting for deep metric learning. CVPR 2019"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.distance = distance if distance is not None else CosineSimilarity()
        self.block_size = block_size

    loss_function = staticmethod(multi_similarity_loss)
    options = ("alpha", "beta", "base", "distance", "block_size")


def circle_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    m: float = 0.4,
    gamma: float = 80.0,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Circle loss (Sun et al., CVPR 2020), PML's ``CircleLoss`` (pair-label form).

    With cosine similarities, ``O_p = 1 + m``, ``O_n = −m``, ``Δ_p = 1 − m``, ``Δ_n = m`` and the weights
    ``α_p = [O_p − s_p]_+``, ``α_n = [s_n − O_n]_+`` treated as constants (no gradient, as in the paper):

        ℓ_i = softplus( log Σ_{p ∈ P_i} exp(−γ α_p (s_ip − Δ_p)) + log Σ_{n ∈ N_i} exp(γ α_n (s_in − Δ_n)) )

    L is the mean of ℓ_i over the anchors with ℓ_i > 0 (``AvgNonZeroReducer``); anchors without a positive or
    without a negative are left out. Needs a similarity (``is_inverted``), like PML.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    check_positive(gamma, "gamma")
    distance = distance if distance is not None else CosineSimilarity()
    if not distance.is_inverted:
        raise ValueError(f"circle_loss needs a similarity (e.g. CosineSimilarity), got {distance!r}")
    o_p, o_n, delta_p, delta_n = 1 + m, -m, 1 - m, m

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # With a_ij the logits above, ℓ_i = softplus(LSE_P a + LSE_N a), so ∂ℓ_i/∂s_ij = σ(LSE_P a + LSE_N a) ·
        # softmax_{P or N}(a)_j · ∂a_ij/∂s_ij, where ∂a/∂s = −γ α_p on P and γ α_n on N (the α are constants).
        s = block.sim
        rows, columns = block.positive.nonzero(as_tuple=True)
        positive_s = s[rows, columns]
        positive_scale = (o_p - positive_s).clamp_min_(0).mul_(-gamma)
        log_positives, positive_softmax = _gathered_log_softmax(positive_scale * (positive_s - delta_p), rows, len(s))
        negative_scale = (s - o_n).clamp_min_(0).mul_(gamma)
        log_negatives, slope = _log_softmax_parts(negative_scale * (s - delta_n), block.negative)
        inner = log_positives + log_negatives
        valid = torch.isfinite(inner)  # at least one positive and one negative
        loss = torch.where(valid, F.softplus(inner), 0.0)
        pull = torch.where(valid, torch.sigmoid(inner), 0.0)
        slope.mul_(negative_scale).mul_(pull[:, None])
        slope.index_put_((rows, columns), pull[rows] * positive_softmax * positive_scale, accumulate=True)
        counts = _counts(block, loss.new_zeros((), dtype=torch.float64))[:2]
        values = torch.stack([loss.sum().double(), (loss > 0).count_nonzero().double(), *counts])
        return RowSums(values, (slope, None, None, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=8,
    )
    return _zero_unless(_generic_pair_keep(sums[2], sums[3]), mean_of_active(sums[0], sums[1]))


class CircleLoss(FunctionalEmbeddingLoss):
    """Circle loss: self-paced re-weighting of within- and between-class pairs. See :func:`circle_loss`."""

    formula = "mean_{i,ℓ>0} softplus(log Σ_P e^{−γα_p(s_p−Δ_p)} + log Σ_N e^{γα_n(s_n−Δ_n)})"
    paper = "Sun et al. Circle loss: A unified perspective of pair similarity optimization. CVPR 2020"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        m: float = 0.4,
        gamma: float = 80.0,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.m = m
        self.gamma = gamma
        self.distance = distance if distance is not None else CosineSimilarity()
        if not self.distance.is_inverted:
            raise ValueError(f"CircleLoss needs a similarity (e.g. CosineSimilarity), got {self.distance!r}")
        self.block_size = block_size

    loss_function = staticmethod(circle_loss)
    options = ("m", "gamma", "distance", "block_size")


def generalized_lifted_structure_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Generalized lifted structure loss (Hermans, Beyer, Leibe 2017, eq. 4, after Oh Song et al., CVPR 2016),
    PML's ``GeneralizedLiftedStructureLoss``.

    With a distance d (``LpDistance`` by default), per anchor i:

        ℓ_i = [ log Σ_{p ∈ P_i} exp(d_ip − m_pos) + log Σ_{n ∈ N_i} exp(m_neg − d_in) ]_+

    (an empty set contributes 0) and L = mean_i ℓ_i (``MeanReducer``). A similarity flips the signs.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    distance = distance if distance is not None else LpDistance()
    sign = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # ∂ℓ_i/∂s_ij = [ℓ_i > 0] · softmax of its set, times ±sign: the slope of its logits
        s = block.sim
        rows, columns = block.positive.nonzero(as_tuple=True)
        log_positives, positive_softmax = _gathered_log_softmax(sign * (s[rows, columns] - pos_margin), rows, len(s))
        log_negatives, slope = _log_softmax_parts(torch.sub(neg_margin, s).mul_(sign), block.negative)
        inner = torch.nan_to_num(log_positives, neginf=0.0) + torch.nan_to_num(log_negatives, neginf=0.0)
        active = (inner > 0).to(s.dtype)
        slope.mul_((active * -sign)[:, None])
        slope.index_put_((rows, columns), active[rows] * sign * positive_softmax, accumulate=True)
        total = inner.clamp_min(0).sum().double()
        return RowSums(torch.stack([total, *_counts(block, total)]), (slope, None, None, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=6,
    )
    return _zero_unless(_generic_pair_keep(sums[1], sums[2]), sums[0] / sums[3])


class GeneralizedLiftedStructureLoss(FunctionalEmbeddingLoss):
    """Generalized lifted structure loss: soft-max positive distance vs soft-min negative distance per anchor.

    See :func:`generalized_lifted_structure_loss`. Arguments and defaults are PML's.
    """

    formula = "mean_i [log Σ_P e^{d_ip − m_pos} + log Σ_N e^{m_neg − d_in}]_+"
    paper = "Hermans, Beyer, Leibe. In defense of the triplet loss for person re-identification. arXiv 2017"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        neg_margin: float = 1.0,
        pos_margin: float = 0.0,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.distance = distance if distance is not None else LpDistance()
        self.block_size = block_size

    loss_function = staticmethod(generalized_lifted_structure_loss)
    options = ("neg_margin", "pos_margin", "distance", "block_size")


def lifted_structure_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Lifted structure loss (Oh Song, Xiang, Jegelka, Savarese, CVPR 2016), PML's ``LiftedStructureLoss``.

    For every ordered positive pair (i, j), with a distance d (``LpDistance`` by default):

        J_ij = ½ [ log( Σ_{k ∈ N_i} exp(m_neg − d_ik) + Σ_{l ∈ N_j} exp(m_neg − d_jl) ) + d_ij − m_pos ]_+²

    and L = mean_{(i,j)} J_ij (``MeanReducer``; the ½ because each pair appears in both orders). The log-sum-exp
    is 0 when neither i nor j has a negative. Two engine passes: the per-anchor log-sum-exp ``r_i`` over its
    negatives, then the positive pairs with ``r`` as a differentiable parameter. No reference set (PML's version
    compares query and reference indices), and not inside
    :func:`pairloss.training.distributed.cross_rank_pairs` (``r`` is per local anchor).
    """
    embeddings, labels, _, _ = check_pair_inputs(embeddings, labels)
    if CROSS_RANK.get() is not None:
        raise ValueError("lifted_structure_loss needs the negatives of every reference; it cannot run across ranks")
    distance = distance if distance is not None else LpDistance()
    sign = -1.0 if distance.is_inverted else 1.0
    n = embeddings.shape[0]

    def negative_terms(block: PairBlock) -> Tensor:
        lse = _masked_logsumexp(sign * (neg_margin - block.sim), block.negative, add_one=False)
        out = torch.zeros(2 * n, dtype=lse.dtype, device=lse.device)
        out = out.index_copy(0, block.rows, lse)
        return out.index_copy(0, block.rows + n, block.negative.any(dim=1).to(lse.dtype))

    terms = row_block_sums(
        negative_terms, embeddings, labels, similarity=distance, block_size=block_size, working_copies=4
    )
    log_terms, has_negative = terms[:n].to(embeddings.dtype), terms[n:].detach() > 0

    def pair_row(block: PairBlock) -> Tensor:
        r, has = block.params[0], block.params[1] > 0
        minus_inf = torch.tensor(float("-inf"), dtype=r.dtype, device=r.device)
        row_r = torch.where(has[block.rows], r[block.rows], minus_inf)[:, None]
        column_r = torch.where(has, r, minus_inf)[None, :]
        either = has[block.rows][:, None] | has[None, :]
        lse = torch.where(either, torch.logaddexp(row_r, column_r), 0.0)
        violation = F.relu(lse + sign * (block.sim - pos_margin))
        total = (violation * violation).masked_fill(~block.positive, 0.0).sum() / 2
        return torch.stack([total, *_counts(block, total)[:2]])

    sums = row_block_sums(
        pair_row,
        embeddings,
        labels,
        similarity=distance,
        params=(log_terms, has_negative.to(embeddings.dtype)),
        block_size=block_size,
        working_copies=10,
    )
    keep = _generic_pair_keep(sums[1], sums[2]) & (sums[1] > 0) & (sums[2] > 0)
    return _zero_unless(keep, mean_of_active(sums[0], sums[1]))


class LiftedStructureLoss(EmbeddingLoss):
    """Lifted structure loss: each positive pair against the negatives of both its ends.

    See :func:`lifted_structure_loss`. Arguments and defaults are PML's; no reference set.
    """

    formula = "mean_{(i,j)∈P} ½[log(Σ_{N_i} e^{m−d_ik} + Σ_{N_j} e^{m−d_jl}) + d_ij]_+²"
    paper = "Oh Song, Xiang, Jegelka, Savarese. Deep metric learning via lifted structured feature embedding. CVPR'16"
    family = "metric"

    def __init__(
        self,
        neg_margin: float = 1.0,
        pos_margin: float = 0.0,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.distance = distance if distance is not None else LpDistance()
        self.block_size = block_size

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        if ref_emb is not None or ref_labels is not None:
            raise ValueError("LiftedStructureLoss does not support a reference set (ref_emb/ref_labels)")
        return lifted_structure_loss(
            embeddings,
            labels,
            neg_margin=self.neg_margin,
            pos_margin=self.pos_margin,
            distance=self.distance,
            block_size=self.block_size,
        )


# ----------------------------------------------------------------------------------------------------
# Softmax-style losses: N-pairs, NT-Xent, SupCon
# ----------------------------------------------------------------------------------------------------


def npairs_loss(embeddings: Tensor, labels: Tensor, *, distance: BaseSimilarity | None = None) -> Tensor:
    """N-pair loss (Sohn, NeurIPS 2016), PML's ``NPairsLoss``.

    One (anchor, positive) pair per class: the first two samples of each class with at least two samples.
    With K such pairs and similarities ``s_kl = s(a_k, p_l)`` (dot product of L2-normalised embeddings by
    default, PML's ``DotProductSimilarity()``):

        L = mean_k −log( exp(s_kk) / Σ_l exp(s_kl) )

    i.e. cross-entropy over the K positives. Only K×K scores are formed (K = number of classes), so it does
    not use the row engine. No reference set (as in PML); labels must be 1-D class ids.
    """
    embeddings, labels, _, _ = check_pair_inputs(embeddings, labels)
    if labels.ndim != 1:
        raise ValueError("npairs_loss needs 1-D class ids, got multi-hot labels")
    distance = distance if distance is not None else DotProductSimilarity(normalize_embeddings=True)
    order = torch.argsort(labels, stable=True)
    grouped = labels[order]
    same_as_next = grouped[1:] == grouped[:-1]
    first_of_class = torch.ones_like(same_as_next)
    first_of_class[1:] = ~same_as_next[:-1]
    starts = torch.nonzero(first_of_class & same_as_next).squeeze(1)
    if starts.numel() == 0:
        return embeddings.sum() * 0.0
    anchors, positives = order[starts], order[starts + 1]
    scores = distance(embeddings[anchors], embeddings[positives])
    if not distance.is_inverted:
        scores = -scores
    return F.cross_entropy(scores, torch.arange(starts.numel(), device=embeddings.device))


class NPairsLoss(EmbeddingLoss):
    """N-pair loss: softmax over one positive per class. See :func:`npairs_loss`."""

    formula = "mean_k −log(e^{s(a_k,p_k)} / Σ_l e^{s(a_k,p_l)})"
    paper = "Sohn. Improved deep metric learning with multi-class N-pair loss objective. NeurIPS 2016"
    family = "metric"

    def __init__(self, distance: BaseSimilarity | None = None) -> None:
        super().__init__()
        self.distance = distance if distance is not None else DotProductSimilarity(normalize_embeddings=True)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        if ref_emb is not None or ref_labels is not None:
            raise ValueError("NPairsLoss does not support a reference set (ref_emb/ref_labels), as in PML")
        return npairs_loss(embeddings, labels, distance=self.distance)


def _log_softmax_parts(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row ``log Σ_{j ∈ mask} exp(z_ij)`` (−inf for an empty row) and the softmax over ``mask`` (0 off it and
    on empty rows), without autograd; ``logits`` is overwritten with the softmax."""
    floor = math.log(torch.finfo(logits.dtype).tiny) + 2.0
    masked = torch.where(mask, logits, logits.new_tensor(float("-inf")), out=logits)
    shift = masked.amax(dim=1)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    terms = masked.sub_(shift[:, None]).clamp_min_(floor).exp_()
    terms = torch.where(mask, terms, terms.new_tensor(0.0), out=terms)
    total = terms.sum(dim=1)
    log_total = shift + torch.log(total)
    return log_total, terms.div_(total.clamp_min(torch.finfo(total.dtype).tiny)[:, None])


def ntxent_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float = 0.07,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """NT-Xent / InfoNCE (Chen et al., SimCLR, ICML 2020; van den Oord et al. 2018), PML's ``NTXentLoss``.

    For every positive pair (i, p), with cosine similarities s and temperature τ:

        ℓ_ip = −log( exp(s_ip/τ) / (exp(s_ip/τ) + Σ_{n ∈ N_i} exp(s_in/τ)) )

    and L = mean over all positive pairs (``MeanReducer``); L = 0 without positive or without negative pairs.
    Computed as ``−logsigmoid(s_ip/τ − logsumexp_n(s_in/τ))``, which equals PML's ``−log(p + ε)`` except
    that it stays exact where p underflows.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    check_positive(temperature, "temperature")
    distance = distance if distance is not None else CosineSimilarity()

    scale = 1 / temperature if distance.is_inverted else -1 / temperature

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # ℓ_ip = softplus(−u_ip) with u_ip = z_ip − log Σ_N e^z, so ∂ℓ/∂z_ip = −σ(−u_ip) and
        # ∂ℓ/∂z_in = Σ_p σ(−u_ip) · softmax_N(z)_n
        rows, columns = block.positive.nonzero(as_tuple=True)
        positive_logits = block.sim[rows, columns] * scale
        log_negatives, slope = _log_softmax_parts(block.sim * scale, block.negative)
        u = positive_logits - log_negatives[rows]
        pull = torch.sigmoid(-u)
        pull_per_row = torch.zeros_like(log_negatives).index_add_(0, rows, pull)
        slope.mul_((pull_per_row * scale)[:, None]).index_put_((rows, columns), -scale * pull, accumulate=True)
        total = F.softplus(-u).sum().double()
        return RowSums(torch.stack([total, *_counts(block, total)]), (slope, None, None, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=6,
    )
    keep = _generic_pair_keep(sums[1], sums[2]) & (sums[1] > 0) & (sums[2] > 0)
    return _zero_unless(keep, mean_of_active(sums[0], sums[1]))


class NTXentLoss(FunctionalEmbeddingLoss):
    """NT-Xent (InfoNCE): each positive pair against the anchor's negatives. See :func:`ntxent_loss`."""

    formula = "mean_{(i,p)} −log(e^{s_ip/τ} / (e^{s_ip/τ} + Σ_N e^{s_in/τ}))"
    paper = "Chen, Kornblith, Norouzi, Hinton. A simple framework for contrastive learning (SimCLR). ICML 2020"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        temperature: float = 0.07,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.distance = distance if distance is not None else CosineSimilarity()
        self.block_size = block_size

    loss_function = staticmethod(ntxent_loss)
    options = ("temperature", "distance", "block_size")


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, the "out" form), PML's ``SupConLoss``.

    Per anchor i with positives P_i and A_i = P_i ∪ N_i (every other sample):

        ℓ_i = −(1/|P_i|) Σ_{p ∈ P_i} log( exp(s_ip/τ) / Σ_{a ∈ A_i} exp(s_ia/τ) )

    L is the mean of ℓ_i over anchors with ℓ_i > 0 (``AvgNonZeroReducer``); anchors without positives are left
    out, and L = 0 when the batch has no positive or no negative pair.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    check_positive(temperature, "temperature")
    distance = distance if distance is not None else CosineSimilarity()

    scale = 1 / temperature if distance.is_inverted else -1 / temperature

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # ∂ℓ_i/∂z_ij = softmax_A(z_i)_j − [j ∈ P_i] / |P_i| on the rows that count (|P_i| > 0 and ℓ_i > 0)
        rows, columns = block.positive.nonzero(as_tuple=True)
        log_normaliser, slope = _log_softmax_parts(block.sim * scale, block.positive | block.negative)
        n_positive = block.positive.count_nonzero(dim=1)
        positive_sum = torch.zeros_like(log_normaliser).index_add_(0, rows, block.sim[rows, columns] * scale)
        loss = log_normaliser - positive_sum / n_positive.clamp_min(1)
        kept = (n_positive > 0) & (loss > 0)
        loss = torch.where(kept, loss, 0.0)
        share = (1 / n_positive.clamp_min(1)).to(slope.dtype)[rows]
        slope.index_put_((rows, columns), -share, accumulate=True).mul_((kept * scale)[:, None])
        total = loss.sum().double()
        values = torch.stack([total, kept.count_nonzero().double(), *_counts(block, total)[:2]])
        return RowSums(values, (slope, None, None, None))

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        block_size=block_size,
        working_copies=6,
    )
    keep = _generic_pair_keep(sums[2], sums[3]) & (sums[2] > 0) & (sums[3] > 0)
    return _zero_unless(keep, mean_of_active(sums[0], sums[1]))


class SupConLoss(FunctionalEmbeddingLoss):
    """Supervised contrastive loss: every same-class sample is a positive. See :func:`supcon_loss`."""

    formula = "mean_{i,ℓ>0} −(1/|P_i|) Σ_P log(e^{s_ip/τ} / Σ_{a≠i} e^{s_ia/τ})"
    paper = "Khosla et al. Supervised contrastive learning. NeurIPS 2020"
    family = "metric"
    supports_cross_rank = True

    def __init__(
        self,
        temperature: float = 0.1,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.distance = distance if distance is not None else CosineSimilarity()
        self.block_size = block_size

    loss_function = staticmethod(supcon_loss)
    options = ("temperature", "distance", "block_size")


# ----------------------------------------------------------------------------------------------------
# Margin loss (Wu et al. 2017)
# ----------------------------------------------------------------------------------------------------


def margin_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.2,
    nu: float = 0.0,
    beta: float | Tensor = 1.2,
    triplets_per_anchor: str = "all",
    distance: BaseSimilarity | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Margin loss (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017), PML's ``MarginLoss`` over all triplets.

    With a distance d (``LpDistance`` by default), the boundary β (a scalar, or one per class indexed by the
    anchor's label) and all triplets T:

        L = Σ_{(a,p,n) ∈ T} ([d_ap − β + α]_+ + [β − d_an + α]_+) / K  +  ν β

    where K counts the active hinges, #{[d_ap − β + α]_+ > 0} + #{[β − d_an + α]_+ > 0} over T, and the
    regulariser ν β is added only when ``nu != 0``

    (PML's ``DivisorReducer``; counts over triplets). Per anchor the triplet sums factor into
    ``|N_a| Σ_p (.) + |P_a| Σ_n (.)``, so the loss costs O(M) per row. ``beta`` may be a tensor that requires
    grad (a learnable boundary, passed to the engine as a parameter); the per-class regulariser is
    ``ν Σ_T β_{y_a} / divisor`` as in PML. A similarity flips the signs.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    if triplets_per_anchor != "all":
        raise ValueError(
            f"triplets_per_anchor must be 'all' (random sampling is not supported), got {triplets_per_anchor!r}"
        )
    distance = distance if distance is not None else LpDistance()
    beta_t = torch.as_tensor(beta, dtype=embeddings.dtype, device=embeddings.device).reshape(-1)
    if beta_t.numel() == 0:
        raise ValueError("beta must have at least one value")
    if beta_t.numel() > 1:
        if labels.ndim != 1:
            raise ValueError("a per-class beta needs 1-D class ids, got multi-hot labels")
        if int(labels.min()) < 0 or int(labels.max()) >= beta_t.numel():
            raise ValueError(f"labels must lie in [0, {beta_t.numel()}) to index the per-class beta")
    sign = -1.0 if distance.is_inverted else 1.0

    def row(block: PairBlock) -> Tensor:
        (beta_all,) = block.params
        beta_rows = beta_all[block.query_labels] if beta_all.numel() > 1 else beta_all.expand(block.rows.numel())
        boundary = (sign * beta_rows)[:, None]
        far = sign * block.sim
        pos_loss = F.relu(far - boundary + margin).masked_fill(~block.positive, 0.0)
        neg_loss = F.relu(boundary - far + margin).masked_fill(~block.negative, 0.0)
        n_pos = block.positive.count_nonzero(dim=1).to(far)
        n_neg = block.negative.count_nonzero(dim=1).to(far)
        total = (n_neg * pos_loss.sum(dim=1) + n_pos * neg_loss.sum(dim=1)).sum()
        divisor = (n_neg * (pos_loss > 0).count_nonzero(dim=1) + n_pos * (neg_loss > 0).count_nonzero(dim=1)).sum()
        triplets = n_pos * n_neg
        return torch.stack([total, divisor, triplets.sum(), (triplets * beta_rows).sum()])

    sums = row_block_sums(
        row,
        embeddings,
        labels,
        ref_emb,
        ref_labels,
        similarity=distance,
        params=(beta_t,),
        block_size=block_size,
        working_copies=6,
    )
    loss = mean_of_active(sums[0], sums[1])
    if nu != 0:
        regulariser = beta_t[0] * nu if beta_t.numel() == 1 else mean_of_active(sums[3] * nu, sums[1])
        loss = loss + regulariser
    return _zero_unless(sums[2] > 0, loss)


class MarginLoss(EmbeddingLoss):
    """Margin loss with a (optionally learnable, optionally per-class) boundary β. See :func:`margin_loss`.

    Arguments and defaults are PML's: with ``learn_beta=True`` β is an ``nn.Parameter`` (one per class when
    ``num_classes`` is given) and the regulariser ``ν β`` is added; otherwise β is a fixed buffer.
    """

    formula = "Σ_T([d_ap − β + α]_+ + [β − d_an + α]_+) / #active + νβ"
    paper = "Wu, Manmatha, Smola, Krähenbühl. Sampling matters in deep embedding learning. ICCV 2017"
    family = "metric"

    beta: Tensor

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0.0,
        beta: float = 1.2,
        triplets_per_anchor: str = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        distance: BaseSimilarity | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.triplets_per_anchor = triplets_per_anchor
        if num_classes is not None:
            check_int(num_classes, "num_classes", minimum=1)
        initial = torch.full((num_classes if num_classes else 1,), float(beta))
        if learn_beta:
            self.beta = nn.Parameter(initial)
        else:
            self.register_buffer("beta", initial)
        self.distance = distance if distance is not None else LpDistance()
        self.block_size = block_size

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        check_tensor(embeddings, "embeddings")  # before β is cast to its dtype
        return margin_loss(
            embeddings,
            labels,
            ref_emb,
            ref_labels,
            margin=self.margin,
            nu=self.nu if self.learn_beta else 0.0,
            beta=self.beta.to(embeddings.dtype),
            triplets_per_anchor=self.triplets_per_anchor,
            distance=self.distance,
            block_size=self.block_size,
        )
