"""Lifted structure and N-pair losses: each positive pair against the negatives of its ends, or of its batch.

The lifted structure loss couples a positive pair ``(i, j)`` with the negatives of *both* i and j, two rows of the
pair matrix, so it runs on the engine in two passes (the per-anchor log-sum-exp of the negatives first, then the
positive pairs with it as a parameter). N-pairs forms only the ``K × K`` scores of one pair per class and does not
need the engine. Neither is built by :func:`pairloss.pair_loss`: the builder's pair form gives each pair a loss
of its own margin and its row form pools one anchor's row, while the lifted structure loss pools two rows per
positive pair and N-pairs has no pair matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss.engine import PairBlock, cross_rank_hook
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.losses.metric._common import (
    counts,
    generic_pair_keep,
    pair_counts,
    prepare_batch,
    zero_unless,
)
from pairloss.reducers import DoNothingReducer, MeanReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, DotProductSimilarity, LpDistance

__all__ = ["LiftedStructureLoss", "NPairsLoss", "lifted_structure_loss", "npairs_loss"]

IndicesTuple = tuple[Tensor, ...]


def _masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Per row ``log Σ_{j ∈ mask} exp(x_j)``; an empty row gives 0 (PML's ``lmu.logsumexp`` without the 1).

    Masked entries become ``−inf`` *before* ``exp``, so neither the value nor the gradient sees them (no NaN).
    """
    masked = x.masked_fill(~mask, float("-inf"))
    empty = ~mask.any(dim=1)
    shift = masked.amax(dim=1, keepdim=True).detach().masked_fill(empty[:, None], 0.0)
    total = torch.exp(masked.sub_(shift)).sum(dim=1) + empty.to(x.dtype)
    return shift.squeeze(1) + torch.log(total)


def _no_reference(name: str, ref_emb: Tensor | None, ref_labels: Tensor | None) -> None:
    if ref_emb is not None or ref_labels is not None:
        raise ValueError(f"{name} does not support a reference set (ref_emb/ref_labels), as in PML")


def lifted_structure_loss(
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
) -> Any:
    """Lifted structure loss (Oh Song, Xiang, Jegelka, Savarese, CVPR 2016), PML's ``LiftedStructureLoss``.

    For every ordered positive pair (i, j), with a distance d (``LpDistance`` by default):

        J_ij = ½ [ log( Σ_{k ∈ N_i} exp(m_neg − d_ik) + Σ_{l ∈ N_j} exp(m_neg − d_jl) ) + d_ij − m_pos ]_+²

    and L = mean_{(i,j)} J_ij (``MeanReducer``; the ½ because each pair appears in both orders). The log-sum-exp
    is 0 when neither i nor j has a negative. Two engine passes: the per-anchor log-sum-exp ``r_i`` over its
    negatives, then the positive pairs with ``r`` as a differentiable parameter. With mined pairs, N_i is the
    anchor's listed negatives and a pair listed k times counts k times, as in PML. No reference set (as in PML),
    and not inside :func:`pairloss.training.distributed.cross_rank_pairs` (``r`` is per local anchor).
    """
    _no_reference("lifted_structure_loss", ref_emb, ref_labels)
    batch = prepare_batch(embeddings, labels, indices_tuple, None, None)
    if cross_rank_hook() is not None:
        raise ValueError("lifted_structure_loss needs the negatives of every reference; it cannot run across ranks")
    chosen = get_reducer(reducer, MeanReducer)
    sign = -1.0 if distance.is_inverted else 1.0
    n = embeddings.shape[0]

    def negative_terms(block: PairBlock) -> Tensor:
        x = sign * (neg_margin - block.sim)
        if block.negative_count is not None:
            x = x + torch.log(block.negative_count.clamp_min(1).to(x.dtype))
        lse = _masked_logsumexp(x, block.negative)
        out = torch.zeros(2 * n, dtype=lse.dtype, device=lse.device)
        out = out.index_copy(0, block.rows, lse)
        return out.index_copy(0, block.rows + n, block.negative.any(dim=1).to(lse.dtype))

    terms = batch.row_sums(negative_terms, distance, block_size=block_size, working_copies=4)
    log_terms, has_negative = terms[:n].to(embeddings.dtype), terms[n:].detach() > 0

    def pair_losses(sim: Tensor, rows: Tensor, r: Tensor, has: Tensor) -> Tensor:
        minus_inf = torch.tensor(float("-inf"), dtype=r.dtype, device=r.device)
        row_r = torch.where(has[rows], r[rows], minus_inf)[:, None]
        column_r = torch.where(has, r, minus_inf)[None, :]
        either = has[rows][:, None] | has[None, :]
        lse = torch.where(either, torch.logaddexp(row_r, column_r), 0.0)
        violation = F.relu(lse + sign * (sim - pos_margin))
        return violation * violation / 2

    if isinstance(chosen, DoNothingReducer):
        return _lifted_elements(batch, distance, pair_losses, log_terms, has_negative)

    def pair_row(block: PairBlock) -> Tensor:
        loss = pair_losses(block.sim, block.rows, block.params[0], block.params[1] > 0)
        kept = block.positive & chosen.keep(loss) if chosen.filters else block.positive
        weight = kept.to(loss) if block.positive_count is None else kept * block.positive_count.to(loss)
        total = (loss * weight).sum()
        return torch.stack([total, weight.sum(), *counts(block, total)[:2]])

    sums = batch.row_sums(
        pair_row,
        distance,
        params=(log_terms, has_negative.to(embeddings.dtype)),
        block_size=block_size,
        working_copies=10,
    )
    n_positive, n_negative = pair_counts(batch, sums, 2)
    keep = generic_pair_keep(n_positive, n_negative) & (n_positive > 0) & (n_negative > 0)
    return zero_unless(keep, chosen.finish(sums[0], sums[1]))


def _lifted_elements(batch: Any, distance: BaseSimilarity, pair_losses: Any, r: Tensor, has: Tensor) -> dict[str, Any]:
    query = distance.prepare(batch.embeddings)
    sim = distance.pairwise(query, query)
    rows = torch.arange(sim.shape[0], device=sim.device)
    if batch.pairs is not None:
        anchors, others = batch.pairs.pairs[0], batch.pairs.pairs[1]
    else:
        from pairloss.pairs import label_masks

        positive, _ = label_masks(batch.labels, batch.labels, rows)
        anchors, others = positive.nonzero(as_tuple=True)
    loss = pair_losses(sim, rows, r, has)[anchors, others]
    return {"loss": {"losses": loss, "indices": (anchors, others), "reduction_type": "pos_pair"}}


@loss_module(
    lifted_structure_loss,
    formula="mean_{(i,j)∈P} ½[log(Σ_{N_i} e^{m−d_ik} + Σ_{N_j} e^{m−d_jl}) + d_ij]_+²",
    paper="Oh Song, Xiang, Jegelka, Savarese. Deep metric learning via lifted structured feature embedding. CVPR'16",
    family="metric",
)
class LiftedStructureLoss(EmbeddingLoss):
    """Lifted structure loss: each positive pair against the negatives of both its ends.

    See :func:`lifted_structure_loss`. Arguments and defaults are PML's; no reference set.
    """


def npairs_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    distance: BaseSimilarity = DotProductSimilarity(normalize_embeddings=True),
    reducer: Reducer | str = MeanReducer(),
) -> Any:
    """N-pair loss (Sohn, NeurIPS 2016), PML's ``NPairsLoss``.

    One (anchor, positive) pair per class: the first positive pair (row-major: the first two samples of the class)
    of each class with at least two samples, or, with an ``indices_tuple``, the first listed positive pair of each
    anchor label (PML's ``convert_to_pos_pairs_with_unique_labels``). With K such pairs and similarities
    ``s_kl = s(a_k, p_l)`` (dot product of L2-normalised embeddings by default, PML's ``DotProductSimilarity()``):

        L = mean_k −log( exp(s_kk) / Σ_l exp(s_kl) )

    i.e. cross-entropy over the K positives. Only K×K scores are formed (K = number of classes), so it does
    not use the row engine. No reference set (as in PML); labels must be 1-D class ids.
    """
    _no_reference("npairs_loss", ref_emb, ref_labels)
    if labels is None:
        raise ValueError("npairs_loss needs labels (as PML's NPairsLoss)")
    batch = prepare_batch(embeddings, labels, indices_tuple, None, None)
    labels = batch.labels
    if labels.ndim != 1:
        raise ValueError("npairs_loss needs 1-D class ids, got multi-hot labels")
    chosen = get_reducer(reducer, MeanReducer)
    if batch.pairs is not None:
        a, p = batch.pairs.pairs[0], batch.pairs.pairs[1]
    else:
        order = torch.argsort(labels, stable=True)
        grouped = labels[order]
        same_as_next = grouped[1:] == grouped[:-1]
        first_of_class = torch.ones_like(same_as_next)
        first_of_class[1:] = ~same_as_next[:-1]
        starts = torch.nonzero(first_of_class & same_as_next).squeeze(1)
        a, p = order[starts], order[starts + 1]
    _, first = np.unique(labels[a].cpu().numpy(), return_index=True)
    index = torch.as_tensor(first, dtype=torch.long, device=labels.device)
    anchors, positives = a[index], p[index]
    if anchors.numel() == 0:
        return embeddings.sum() * 0.0
    scores = distance(embeddings[anchors], embeddings[positives])
    if not distance.is_inverted:
        scores = -scores
    losses = F.cross_entropy(scores, torch.arange(anchors.numel(), device=embeddings.device), reduction="none")
    if isinstance(chosen, DoNothingReducer):
        return {"loss": {"losses": losses, "indices": anchors, "reduction_type": "element"}}
    return chosen.reduce(losses)


@loss_module(
    npairs_loss,
    formula="mean_k −log(e^{s(a_k,p_k)} / Σ_l e^{s(a_k,p_l)})",
    paper="Sohn. Improved deep metric learning with multi-class N-pair loss objective. NeurIPS 2016",
    family="metric",
)
class NPairsLoss(EmbeddingLoss):
    """N-pair loss: softmax over one positive per class. See :func:`npairs_loss`."""
