"""Triplet losses: the triplet margin loss (all, semi-hard, batch-hard or mined triplets) and the margin loss.

A triplet's loss is a function of *two* scores of its anchor's row, ``f_ap − f_an + m`` (``f`` = "farness": the
distance, or minus the similarity), so these losses are not pair losses of one margin each and are not built by
:func:`pairloss.pair_loss`; they run on the engine with row functions of their own, which still return slopes (no
recomputed block) except the margin loss with a learnable boundary β:

* all or semi-hard triplets with the hinge: per anchor the negatives are sorted once, and for each positive the
  triplets it forms are a contiguous range of them, so sums over ``O(P · M)`` triplets cost ``O(M log M)`` per
  anchor (the reducer's interval ``low < ℓ < high`` is one more range);
* softplus triplets: each anchor's positives against its references in chunks (no sorting shortcut);
* batch-hard: one triplet per anchor;
* a miner's triplets (``indices_tuple``): each block gathers the scores of its anchors' listed triplets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairloss import memory
from pairloss._validation import check_choice, check_int, check_tensor
from pairloss.engine import PairBlock, RowFunction, RowSums
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.losses.metric._common import Batch, farness, prepare_batch, zero_unless
from pairloss.miners import BatchHardMiner, TripletMarginMiner, all_triplets
from pairloss.pairs import MinedPairs
from pairloss.reducers import AvgNonZeroReducer, DoNothingReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, LpDistance

__all__ = [
    "TRIPLET_MINING",
    "MarginLoss",
    "TripletMarginLoss",
    "margin_loss",
    "triplet_margin_loss",
]

IndicesTuple = tuple[Tensor, ...]

#: How :func:`triplet_margin_loss` picks its triplets without an ``indices_tuple``.
TRIPLET_MINING = ("all", "semihard", "batch_hard")


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


def _sorted_triplet_row(distance: BaseSimilarity, margin: float, semihard: bool, reducer: Reducer) -> RowFunction:
    """All (or all semi-hard) hinge triplets of a row in O(M log M): sort the negatives, then prefix sums.

    Write f for the scores as "larger = farther" and ``v = f_ap − f_an + m`` (the loss is ``[v]_+``). For anchor a
    and positive p the triplets are all negatives (semi-hard: ``f_ap < f_an ≤ f_ap + m``), and those the reducer
    keeps with a non-zero loss (``max(low, 0) < v < high``) are a contiguous range ``[lo, hi)`` of the sorted
    negative scores, so ``Σ_n v = (hi − lo)(f_ap + m) − (prefix[hi] − prefix[lo])`` (sums in float64). The
    counted triplets are another range (they include the zero losses when the reducer keeps them).

    Given which triplets are kept the sum is linear in the scores, so its slopes are counts: ``hi − lo`` at a
    positive, and at a negative minus the number of ranges ``[lo, hi)`` that hold it (a difference array over the
    sorted negatives). Only the positives are searched, so a block costs one sort.
    """
    flip = -1.0 if distance.is_inverted else 1.0
    low = 0.0 if reducer.low is None else max(reducer.low, 0.0)
    counts_zeros = reducer.keeps_zero()

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # Under torch.compile the shapes must not depend on the data: the positives then stay in their own
        # columns (a [b, M] table) instead of being packed into [b, K] (K = most positives in a row).
        static = torch.compiler.is_compiling()
        if not static and not block.positive.any():
            return RowSums(block.sim.new_zeros(3, dtype=torch.float64), (None, None, None))
        far = farness(block.sim, distance)
        n_rows, n_columns = far.shape
        sorted_negatives, order = far.masked_fill(~block.negative, float("inf")).sort(dim=1)
        negatives = sorted_negatives.to(torch.float64)
        prefix = F.pad(negatives.cumsum(dim=1), (1, 0))
        n_negatives = block.negative.sum(dim=1, keepdim=True)

        if static:
            present = block.positive
            positive_far = torch.where(present, far, 0.0).to(torch.float64)
        else:
            rows, columns, slots, present = _left_aligned(block.positive)
            positive_far = negatives.new_zeros(present.shape)
            positive_far[rows, slots] = far[rows, columns].to(torch.float64)
        threshold = positive_far + margin

        def first_above(value: Tensor) -> Tensor:  # index of the first negative > value
            return torch.searchsorted(negatives, value, side="right")

        def first_at_least(value: Tensor) -> Tensor:  # index of the first negative >= value
            return torch.searchsorted(negatives, value, side="left")

        domain_lo = first_above(positive_far) if semihard else torch.zeros_like(present, dtype=torch.int64)
        domain_hi = first_above(threshold) if semihard else n_negatives.expand_as(present)
        lo = domain_lo
        hi = torch.minimum(first_at_least(threshold - low), domain_hi)
        if reducer.high is not None:
            lo = torch.maximum(lo, first_above(threshold - reducer.high))
        hi = torch.maximum(hi, lo)
        if reducer.average and counts_zeros:  # the zero losses count too: every triplet with ℓ < high
            above = (
                domain_lo if reducer.high is None else torch.maximum(domain_lo, first_above(threshold - reducer.high))
            )
            counted = (domain_hi - above).clamp_min(0).masked_fill(~present, 0)
        else:
            counted = (hi - lo).masked_fill(~present, 0)
        lo, hi = lo.masked_fill(~present, 0), hi.masked_fill(~present, 0)
        count = hi - lo
        total = count * threshold - (prefix.gather(1, hi) - prefix.gather(1, lo))
        values = torch.stack([total.masked_fill_(~present, 0.0).sum(), counted.sum().to(total), count.sum().to(total)])

        ranges = torch.zeros(n_rows, n_columns + 1, dtype=torch.int64, device=far.device)
        ranges.scatter_add_(1, lo, present.long()).scatter_add_(1, hi, -present.long())
        holding = ranges[:, :n_columns].cumsum(dim=1).to(far.dtype)
        slope = torch.empty_like(far).scatter_(1, order, holding.mul_(-flip))
        if static:
            slope = torch.where(present, flip * count.to(far.dtype), slope)
        else:
            slope[rows, columns] = flip * count[rows, slots].to(far.dtype)
        return RowSums(values, (slope, None, None))

    return row


def _smooth_triplet_row(distance: BaseSimilarity, margin: float, semihard: bool, reducer: Reducer) -> RowFunction:
    """Softplus triplets (all or semi-hard), which have no sorting shortcut: each anchor's positives against all of
    its references, ``[b, K, M]`` for the K positives of the row with the most, in chunks of positives that keep each
    temporary near :data:`~pairloss.memory.MAX_TEMPORARY_BYTES`. The work is the number of (anchor, positive,
    reference) triplets, about ``N · M · |P|``, not ``N · M²``.

    Slopes: with ``w = σ(f_ap − f_an + m)`` over the kept triplets, ``Σ_n w`` at a positive and ``−Σ_p w`` at a
    negative.
    """
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        if not block.positive.any():
            return RowSums(block.sim.new_zeros(3, dtype=torch.float64), (None, None, None))
        far = farness(block.sim, distance)
        rows, columns, slots, present = _left_aligned(block.positive)
        # a triplet that is not one (a non-negative column, an empty slot) gets a violation of −inf: no loss, no weight
        negative_far = far.masked_fill(~block.negative, float("inf"))
        positive_far = far.new_full(present.shape, float("-inf"))
        positive_far[rows, slots] = far[rows, columns]
        per_positive = torch.zeros_like(positive_far)
        per_negative = torch.zeros_like(far)
        total = far.new_zeros((), dtype=torch.float64)
        kept_count = far.new_zeros((), dtype=torch.int64)
        chunk = max(1, memory.MAX_TEMPORARY_BYTES // (far.numel() * far.element_size()))
        for first in range(0, present.shape[1], chunk):
            kept = slice(first, first + chunk)
            violation = positive_far[:, kept, None] - negative_far[:, None, :] + margin
            if semihard:
                violation.masked_fill_((violation < 0) | (violation >= margin), float("-inf"))
            loss = F.softplus(violation)
            if reducer.filters or reducer.average:
                keep = violation > float("-inf")
                if reducer.filters:
                    keep &= reducer.keep(loss)
                    loss = torch.where(keep, loss, 0.0)
                    violation = violation.masked_fill_(~keep, float("-inf"))
                kept_count += keep.count_nonzero()
            total += loss.sum(dtype=torch.float64)
            weight = violation.sigmoid_()
            per_positive[:, kept] = weight.sum(dim=2)
            per_negative += weight.sum(dim=1)
        slope = per_negative.mul_(-flip)
        slope[rows, columns] = flip * per_positive[rows, slots]
        return RowSums(torch.stack([total, kept_count.to(total), kept_count.to(total)]), (slope, None, None))

    return row


def _batch_hard_row(distance: BaseSimilarity, margin: float, smooth: bool, reducer: Reducer) -> RowFunction:
    """One triplet per anchor: its farthest positive and its closest negative (Hermans et al. 2017).

    The slopes are two entries per row, ``±ℓ'(f_ap − f_an + m)`` at the chosen positive and negative (sparse).
    """
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        far = farness(block.sim, distance)
        valid = block.positive.any(dim=1) & block.negative.any(dim=1)
        hardest_positive, positive_column = far.masked_fill(~block.positive, float("-inf")).max(dim=1)
        hardest_negative, negative_column = far.masked_fill(~block.negative, float("inf")).min(dim=1)
        violation = zero_unless(valid, hardest_positive - hardest_negative + margin)
        loss = zero_unless(valid, F.softplus(violation) if smooth else F.relu(violation))
        keep = valid & reducer.keep(loss) if reducer.filters else valid
        loss = zero_unless(keep, loss)
        derivative = torch.sigmoid(violation) if smooth else (violation > 0).to(far)
        derivative = zero_unless(keep, derivative).mul_(flip)
        slope = torch.zeros_like(far)
        rows = torch.arange(far.shape[0], device=far.device)
        slope.index_put_((rows, positive_column), derivative, accumulate=True)
        slope.index_put_((rows, negative_column), -derivative, accumulate=True)
        n_kept = keep.count_nonzero().to(torch.float64)
        values = torch.stack([loss.sum(dtype=torch.float64), n_kept, n_kept])
        return RowSums(values, (slope, None, None))

    return row


def _listed_triplet_row(distance: BaseSimilarity, margin: float, smooth: bool, reducer: Reducer) -> RowFunction:
    """The triplets a miner listed (``block.triplets``), each counted as often as it is listed."""
    flip = -1.0 if distance.is_inverted else 1.0

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        assert block.triplets is not None
        anchors, positives, negatives = block.triplets
        far = farness(block.sim, distance)
        violation = far[anchors, positives] - far[anchors, negatives] + margin
        loss = F.softplus(violation) if smooth else F.relu(violation)
        keep = reducer.keep(loss) if reducer.filters else torch.ones_like(loss, dtype=torch.bool)
        loss = zero_unless(keep, loss)
        derivative = zero_unless(keep, torch.sigmoid(violation) if smooth else (violation > 0).to(far)) * flip
        slope = torch.zeros_like(far)
        slope.index_put_((anchors, positives), derivative, accumulate=True)
        slope.index_put_((anchors, negatives), -derivative, accumulate=True)
        n_kept = keep.count_nonzero().to(torch.float64)
        return RowSums(torch.stack([loss.sum(dtype=torch.float64), n_kept, n_kept]), (slope, None, None))

    return row


def _triplet_elements(
    batch: Batch, distance: BaseSimilarity, margin: float, smooth: bool, mining: str
) -> dict[str, dict[str, object]]:
    """PML's per-triplet loss dictionary (the ``DoNothingReducer`` result), from the listed triplets."""
    if batch.pairs is not None:
        triplets = batch.pairs.triplets()
    elif mining == "all":
        triplets = all_triplets(batch.labels, batch.ref_labels)
    else:
        miner = (
            TripletMarginMiner(margin, "semihard", distance)
            if mining == "semihard"
            else BatchHardMiner(distance=distance)
        )
        triplets = miner(batch.embeddings, batch.labels, batch.ref_emb, batch.ref_labels)
    a, p, n = triplets
    query = distance.prepare(batch.embeddings)
    reference = query if batch.ref_emb is None else distance.prepare(batch.ref_emb)
    far_ap = farness(distance.paired(query[a], reference[p]), distance)
    far_an = farness(distance.paired(query[a], reference[n]), distance)
    violation = far_ap - far_an + margin
    loss = F.softplus(violation) if smooth else F.relu(violation)
    return {"loss": {"losses": loss, "indices": (a, p, n), "reduction_type": "triplet"}}


def triplet_margin_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    triplets_per_anchor: str = "all",
    mining: str = "all",
    distance: BaseSimilarity = LpDistance(),
    reducer: Reducer | str = AvgNonZeroReducer(),
    block_size: int | None = None,
) -> Tensor:
    """Triplet margin loss (Weinberger & Saul, JMLR 2009; Schroff et al., FaceNet, CVPR 2015), PML's
    ``TripletMarginLoss``.

    With a distance d (``LpDistance`` on normalised embeddings by default) and triplets T of
    (anchor, positive, negative):

        L = mean_{(a,p,n) ∈ T, ℓ>0} [d_ap − d_an + m]_+      (``smooth_loss``: log(1 + exp(d_ap − d_an + m)))

    averaged over the triplets with a positive loss (``AvgNonZeroReducer``; any reducer of
    :mod:`pairloss.reducers` may replace it). T is a miner's triplets when ``indices_tuple`` is given (pairs
    ``(a1, p, a2, n)`` become every positive and negative pair with a common anchor, as in PML), else ``mining``:

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
    _check_triplet_options(mining=mining, triplets_per_anchor=triplets_per_anchor, swap=swap)
    batch = prepare_batch(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    chosen = get_reducer(reducer, AvgNonZeroReducer)
    if isinstance(chosen, DoNothingReducer):
        return _triplet_elements(batch, distance, margin, smooth_loss, mining)  # type: ignore[return-value]
    if batch.pairs is not None:
        pairs: MinedPairs | None = batch.pairs
        if len(batch.pairs.indices_tuple) == 4:
            n_references = batch.embeddings.shape[0] if batch.ref_emb is None else batch.ref_emb.shape[0]
            pairs = MinedPairs(batch.pairs.triplets(), batch.embeddings.shape[0], n_references)
        row, copies = _listed_triplet_row(distance, margin, smooth_loss, chosen), 6
    elif mining == "batch_hard":
        pairs, (row, copies) = None, (_batch_hard_row(distance, margin, smooth_loss, chosen), 6)
    elif smooth_loss:
        pairs, (row, copies) = None, (_smooth_triplet_row(distance, margin, mining == "semihard", chosen), 8)
    else:
        pairs, (row, copies) = None, (_sorted_triplet_row(distance, margin, mining == "semihard", chosen), 24)
    sums = batch.row_sums(row, distance, pairs=pairs, block_size=block_size, working_copies=copies)
    return chosen.finish(sums[0], sums[1])


def _check_triplet_options(
    *, mining: str = "all", triplets_per_anchor: str = "all", swap: bool = False, **_: object
) -> None:
    check_choice(mining, "mining", TRIPLET_MINING)
    if triplets_per_anchor != "all":
        raise ValueError(
            f"triplets_per_anchor must be 'all' (random triplet sampling is not supported), got "
            f"{triplets_per_anchor!r}; use mining='batch_hard' or 'semihard' for fewer triplets"
        )
    if swap:
        raise ValueError("swap=True is not supported: it needs the full reference×reference distance matrix")


@loss_module(
    triplet_margin_loss,
    formula="mean_{(a,p,n), ℓ>0} [d_ap − d_an + m]_+",
    paper="Schroff, Kalenichenko, Philbin. FaceNet: A unified embedding for face recognition. CVPR 2015",
    family="metric",
    check=_check_triplet_options,
    supports_cross_rank=True,
)
class TripletMarginLoss(EmbeddingLoss):
    """Triplet margin loss with all, semi-hard, batch-hard or mined triplets (see :func:`triplet_margin_loss`).

    Arguments and defaults are PML's, plus ``mining`` (``"all"``: PML's ``triplets_per_anchor="all"``).
    """


# ----------------------------------------------------------------------------------------------------
# Margin loss (Wu et al. 2017)
# ----------------------------------------------------------------------------------------------------


def _margin_terms(block: PairBlock, margin: float, sign: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per pair of the block, the positive and negative hinges ``[±(d − β) + α]_+`` and each row's β."""
    beta_all = block.params[0]
    beta_rows = beta_all[block.query_labels] if beta_all.numel() > 1 else beta_all.expand(block.rows.numel())
    boundary = (sign * beta_rows)[:, None]
    far = sign * block.sim
    return F.relu(far - boundary + margin), F.relu(boundary - far + margin), beta_rows, far


def _all_triplets_margin_row(margin: float, sign: float) -> RowFunction:
    """All triplets, divided by the active hinges: per anchor the triplet sums factor into
    ``|N_a| Σ_p (.) + |P_a| Σ_n (.)``, so the loss costs O(M) per row."""

    def row(block: PairBlock) -> Tensor:
        pos_hinge, neg_hinge, beta_rows, _ = _margin_terms(block, margin, sign)
        pos_loss = pos_hinge.masked_fill(~block.positive, 0.0)
        neg_loss = neg_hinge.masked_fill(~block.negative, 0.0)
        n_pos = block.positive.count_nonzero(dim=1).to(pos_loss)
        n_neg = block.negative.count_nonzero(dim=1).to(pos_loss)
        total = (n_neg * pos_loss.sum(dim=1) + n_pos * neg_loss.sum(dim=1)).sum()
        divisor = (n_neg * (pos_loss > 0).count_nonzero(dim=1) + n_pos * (neg_loss > 0).count_nonzero(dim=1)).sum()
        triplets = n_pos * n_neg
        return torch.stack([total, divisor, triplets.sum(), (triplets * beta_rows).sum()])

    return row


def _listed_margin_row(margin: float, sign: float, reducer: Reducer | None, nu: float) -> RowFunction:
    """The listed triplets: ``[Σ_kept ℓ_t, #kept (or the divisor), #triplets, Σ_kept_r ν β_t, #kept_r]`` with
    ``ℓ_t`` the triplet's two hinges and ``ν β_t`` its regulariser element."""

    def row(block: PairBlock) -> Tensor:
        assert block.triplets is not None
        anchors, positives, negatives = block.triplets
        pos_hinge, neg_hinge, beta_rows, _ = _margin_terms(block, margin, sign)
        pos_loss, neg_loss = pos_hinge[anchors, positives], neg_hinge[anchors, negatives]
        loss = pos_loss + neg_loss
        regulariser = nu * beta_rows[anchors]
        n_triplets = loss.new_tensor(float(anchors.numel()))
        if reducer is None:  # PML's DivisorReducer: Σ / (#active positive hinges + #active negative hinges)
            divisor = ((pos_loss > 0).sum() + (neg_loss > 0).sum()).to(loss)
            return torch.stack([loss.sum(), divisor, n_triplets, beta_rows[anchors].sum(), divisor])
        keep = reducer.keep(loss)
        keep_reg = reducer.keep(regulariser)
        zero = loss.new_zeros(())
        return torch.stack(
            [
                torch.where(keep, loss, zero).sum(),
                keep.sum().to(loss),
                n_triplets,
                torch.where(keep_reg, regulariser, zero).sum(),
                keep_reg.sum().to(loss),
            ]
        )

    return row


def margin_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    margin: float = 0.2,
    nu: float = 0.0,
    beta: float | Tensor = 1.2,
    triplets_per_anchor: str = "all",
    distance: BaseSimilarity = LpDistance(),
    reducer: Reducer | str | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Margin loss (Wu, Manmatha, Smola, Krähenbühl, ICCV 2017), PML's ``MarginLoss`` over all (or mined)
    triplets.

    With a distance d (``LpDistance`` by default), the boundary β (a scalar, or one per class indexed by the
    anchor's label) and the triplets T (all, or a miner's ``indices_tuple``):

        L = Σ_{(a,p,n) ∈ T} ([d_ap − β + α]_+ + [β − d_an + α]_+) / K  +  ν β

    where K counts the active hinges, #{[d_ap − β + α]_+ > 0} + #{[β − d_an + α]_+ > 0} over T, and the
    regulariser ν β is added only when ``nu != 0`` (PML's ``DivisorReducer``; ``reducer=None``). Another
    reducer of :mod:`pairloss.reducers` reduces the per-triplet losses (and the per-triplet regulariser ``ν β_{y_a}``
    of a per-class β) instead, as PML does; it lists every triplet, ``O(N · P · N)`` memory. Per anchor the
    all-triplet sums factor into ``|N_a| Σ_p (.) + |P_a| Σ_n (.)``, so the default loss costs O(M) per row.
    ``beta`` may be a tensor that requires grad (a learnable boundary, passed to the engine as a parameter); the
    per-class regulariser is ``ν Σ_T β_{y_a} / divisor`` as in PML. A similarity flips the signs.
    """
    if triplets_per_anchor != "all":
        raise ValueError(
            f"triplets_per_anchor must be 'all' (random sampling is not supported), got {triplets_per_anchor!r}"
        )
    batch = prepare_batch(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    labels = batch.labels
    beta_t = torch.as_tensor(beta, dtype=embeddings.dtype, device=embeddings.device).reshape(-1)
    if beta_t.numel() == 0:
        raise ValueError("beta must have at least one value")
    if beta_t.numel() > 1:
        if labels.ndim != 1:
            raise ValueError("a per-class beta needs 1-D class ids, got multi-hot labels")
        if int(labels.min()) < 0 or int(labels.max()) >= beta_t.numel():
            raise ValueError(f"labels must lie in [0, {beta_t.numel()}) to index the per-class beta")
    chosen = None if reducer is None else get_reducer(reducer, AvgNonZeroReducer)
    sign = -1.0 if distance.is_inverted else 1.0
    if isinstance(chosen, DoNothingReducer):
        return _margin_elements(batch, distance, margin, nu, beta_t, sign)  # type: ignore[return-value]
    pairs = None
    if batch.pairs is not None or chosen is not None:
        if batch.pairs is not None:
            triplets = batch.pairs.triplets()
        else:
            triplets = all_triplets(labels, batch.ref_labels)
        n_references = embeddings.shape[0] if batch.ref_emb is None else batch.ref_emb.shape[0]
        pairs = MinedPairs(triplets, embeddings.shape[0], n_references)
        row = _listed_margin_row(margin, sign, chosen, nu)
    else:
        row = _all_triplets_margin_row(margin, sign)
    sums = batch.row_sums(row, distance, pairs=pairs, params=(beta_t,), block_size=block_size, working_copies=6)
    if chosen is not None:
        loss = chosen.finish(sums[0], sums[1])
        if nu != 0:
            loss = loss + (beta_t[0] * nu if beta_t.numel() == 1 else chosen.finish(sums[3], sums[4]))
        return zero_unless(sums[2] > 0, loss)
    loss = zero_unless(sums[1] > 0, sums[0] / sums[1].clamp_min(1))
    if nu != 0:
        regulariser = (
            beta_t[0] * nu if beta_t.numel() == 1 else zero_unless(sums[1] > 0, sums[3] * nu / sums[1].clamp_min(1))
        )
        loss = loss + regulariser
    return zero_unless(sums[2] > 0, loss)


def _margin_elements(
    batch: Batch, distance: BaseSimilarity, margin: float, nu: float, beta: Tensor, sign: float
) -> dict[str, dict[str, object]]:
    """PML's loss dictionary of the margin loss: per triplet its two hinges, and the regulariser ``ν β``."""
    a, p, n = batch.pairs.triplets() if batch.pairs is not None else all_triplets(batch.labels, batch.ref_labels)
    query = distance.prepare(batch.embeddings)
    reference = query if batch.ref_emb is None else distance.prepare(batch.ref_emb)
    beta_t = beta[batch.labels[a]] if beta.numel() > 1 else beta.expand(a.numel())
    d_ap = sign * distance.paired(query[a], reference[p])
    d_an = sign * distance.paired(query[a], reference[n])
    losses = F.relu(d_ap - sign * beta_t + margin) + F.relu(sign * beta_t - d_an + margin)
    out: dict[str, dict[str, object]] = {
        "margin_loss": {"losses": losses, "indices": (a, p, n), "reduction_type": "triplet"}
    }
    if nu == 0:
        out["beta_reg_loss"] = {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
    elif beta.numel() == 1:
        out["beta_reg_loss"] = {"losses": beta * nu, "indices": None, "reduction_type": "already_reduced"}
    else:
        out["beta_reg_loss"] = {"losses": beta_t * nu, "indices": a, "reduction_type": "element"}
    return out


@loss_module(
    margin_loss,
    formula="Σ_T([d_ap − β + α]_+ + [β − d_an + α]_+) / #active + νβ",
    paper="Wu, Manmatha, Smola, Krähenbühl. Sampling matters in deep embedding learning. ICCV 2017",
    family="metric",
)
class MarginLoss(EmbeddingLoss):
    """Margin loss with a (optionally learnable, optionally per-class) boundary β. See :func:`margin_loss`.

    Arguments and defaults are PML's: with ``learn_beta=True`` β is an ``nn.Parameter`` (one per class when
    ``num_classes`` is given) and the regulariser ``ν β`` is added; otherwise β is a fixed buffer.
    """

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
        reducer: Reducer | str | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.triplets_per_anchor = triplets_per_anchor
        self.distance = distance if distance is not None else LpDistance()
        self.reducer = reducer
        self.block_size = block_size
        self.learn_beta = learn_beta
        self.nu = nu if learn_beta else 0.0
        if num_classes is not None:
            check_int(num_classes, "num_classes", minimum=1)
        initial = torch.full((num_classes if num_classes else 1,), float(beta))
        if learn_beta:
            self.beta = nn.Parameter(initial)
        else:
            self.register_buffer("beta", initial)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        check_tensor(embeddings, "embeddings")  # before β is cast to its dtype
        return margin_loss(
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            margin=self.margin,
            nu=self.nu,
            beta=self.beta.to(embeddings.dtype),
            triplets_per_anchor=self.triplets_per_anchor,
            distance=self.distance,
            reducer=self.reducer,
            block_size=self.block_size,
        )
