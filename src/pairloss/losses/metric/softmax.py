"""Contrastive-softmax losses: NT-Xent (InfoNCE) and supervised contrastive (SupCon).

Each element is a positive pair scored against a softmax over its anchor's row (NT-Xent: the pair itself and the
anchor's negatives; SupCon: every other sample, then averaged over the anchor's positives). A pair's loss depends on
its whole row, not on one margin, so they are not built by :func:`pairloss.pair_loss`; their row functions return
the softmax's closed-form slopes instead, so the engine does not recompute blocks either.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss._validation import check_positive
from pairloss.engine import PairBlock, RowSums
from pairloss.losses.base import EmbeddingLoss, loss_module
from pairloss.losses.metric._common import (
    Batch,
    counts,
    generic_pair_keep,
    log_softmax_parts,
    pair_counts,
    prepare_batch,
    zero_unless,
)
from pairloss.reducers import AvgNonZeroReducer, DoNothingReducer, MeanReducer, Reducer, get_reducer
from pairloss.similarity import BaseSimilarity, CosineSimilarity

__all__ = ["NTXentLoss", "SupConLoss", "ntxent_loss", "supcon_loss"]

IndicesTuple = tuple[Tensor, ...]


def _dense(batch: Batch, distance: BaseSimilarity, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """The scaled score matrix and the pair masks of the whole batch (for the per-element form)."""
    from pairloss.pairs import LabelPairs

    query = distance.prepare(batch.embeddings)
    reference = query if batch.ref_emb is None else distance.prepare(batch.ref_emb)
    labels = batch.labels
    rows = torch.arange(labels.shape[0], device=labels.device)
    selector = batch.pairs if batch.pairs is not None else LabelPairs()
    block = selector.block(
        labels,
        labels if batch.ref_labels is None else batch.ref_labels,
        rows,
        0,
        0 if batch.ref_emb is None else None,
        False,
    )
    return distance.pairwise(query, reference) * scale, block.positive, block.negative


def ntxent_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float = 0.07,
    distance: BaseSimilarity = CosineSimilarity(),
    reducer: Reducer | str = MeanReducer(),
    block_size: int | None = None,
) -> Any:
    """NT-Xent / InfoNCE (Chen et al., SimCLR, ICML 2020; van den Oord et al. 2018), PML's ``NTXentLoss``.

    For every positive pair (i, p), with cosine similarities s and temperature τ:

        ℓ_ip = −log( exp(s_ip/τ) / (exp(s_ip/τ) + Σ_{n ∈ N_i} exp(s_in/τ)) )

    and L = mean over all positive pairs (``MeanReducer``); L = 0 without positive or without negative pairs.
    Computed as ``−logsigmoid(s_ip/τ − logsumexp_n(s_in/τ))``, which equals PML's ``−log(p + ε)`` except
    that it stays exact where p underflows. With mined pairs, a pair listed k times counts k times (in the mean and
    in the anchor's sum over negatives), as in PML.
    """
    batch = prepare_batch(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    check_positive(temperature, "temperature")
    chosen = get_reducer(reducer, MeanReducer)
    scale = 1 / temperature if distance.is_inverted else -1 / temperature
    if isinstance(chosen, DoNothingReducer):
        return _ntxent_elements(batch, distance, scale)

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # ℓ_ip = softplus(−u_ip) with u_ip = z_ip − log Σ_N e^z, so ∂ℓ/∂z_ip = −σ(−u_ip) and
        # ∂ℓ/∂z_in = Σ_p σ(−u_ip) · softmax_N(z)_n
        rows, columns = block.positive.nonzero(as_tuple=True)
        multiplicity = None if block.positive_count is None else block.positive_count[rows, columns].to(block.sim)
        positive_logits = block.sim[rows, columns] * scale
        log_negatives, slope = log_softmax_parts(block.sim * scale, block.negative, block.negative_count)
        u = positive_logits - log_negatives[rows]
        loss = F.softplus(-u)
        pull = torch.sigmoid(-u)
        kept = chosen.keep(loss) if chosen.filters else torch.ones_like(loss, dtype=torch.bool)
        weight = kept.to(loss) if multiplicity is None else kept * multiplicity
        pull.mul_(weight)
        pull_per_row = torch.zeros_like(log_negatives).index_add_(0, rows, pull)
        slope.mul_((pull_per_row * scale)[:, None]).index_put_((rows, columns), -scale * pull, accumulate=True)
        total = (loss * weight).sum(dtype=torch.float64)
        values = torch.stack([total, weight.sum(dtype=torch.float64), *counts(block, total)[:2]])
        return RowSums(values, (slope, None, None, None))

    sums = batch.row_sums(row, distance, block_size=block_size, working_copies=6)
    n_positive, n_negative = pair_counts(batch, sums, 2)
    keep = generic_pair_keep(n_positive, n_negative) & (n_positive > 0) & (n_negative > 0)
    return zero_unless(keep, chosen.finish(sums[0], sums[1]))


def _ntxent_elements(batch: Batch, distance: BaseSimilarity, scale: float) -> dict[str, dict[str, Any]]:
    """Per positive pair (in PML's order, repeats of mined pairs included), PML's loss dictionary."""
    z, positive, negative = _dense(batch, distance, scale)
    count = None if batch.pairs is None else _count_matrix(batch, negative.shape, negative=True)
    shifted = z if count is None else z + torch.log(count.clamp_min(1))
    log_negatives = torch.logsumexp(shifted.masked_fill(~negative, float("-inf")), dim=1)
    if batch.pairs is not None:
        anchors, others = batch.pairs.pairs[0], batch.pairs.pairs[1]
    else:
        anchors, others = positive.nonzero(as_tuple=True)
    loss = F.softplus(log_negatives[anchors] - z[anchors, others])
    return {"loss": {"losses": loss, "indices": (anchors, others), "reduction_type": "pos_pair"}}


def _count_matrix(batch: Batch, shape: torch.Size, negative: bool) -> Tensor:
    assert batch.pairs is not None
    a1, p, a2, n = batch.pairs.pairs
    anchors, others = (a2, n) if negative else (a1, p)
    count = torch.zeros(shape, device=anchors.device)
    return count.index_put_((anchors, others), torch.ones_like(anchors, dtype=count.dtype), accumulate=True)


@loss_module(
    ntxent_loss,
    formula="mean_{(i,p)} −log(e^{s_ip/τ} / (e^{s_ip/τ} + Σ_N e^{s_in/τ}))",
    paper="Chen, Kornblith, Norouzi, Hinton. A simple framework for contrastive learning (SimCLR). ICML 2020",
    family="metric",
    supports_cross_rank=True,
)
class NTXentLoss(EmbeddingLoss):
    """NT-Xent (InfoNCE): each positive pair against the anchor's negatives. See :func:`ntxent_loss`."""


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor | None = None,
    indices_tuple: IndicesTuple | None = None,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    distance: BaseSimilarity = CosineSimilarity(),
    reducer: Reducer | str = AvgNonZeroReducer(),
    block_size: int | None = None,
) -> Any:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, the "out" form), PML's ``SupConLoss``.

    Per anchor i with positives P_i and A_i = P_i ∪ N_i (every other sample):

        ℓ_i = −(1/|P_i|) Σ_{p ∈ P_i} log( exp(s_ip/τ) / Σ_{a ∈ A_i} exp(s_ia/τ) )

    L is the mean of ℓ_i over anchors with ℓ_i > 0 (``AvgNonZeroReducer``); an anchor without positives has
    ℓ_i = 0, and L = 0 when the batch has no positive or no negative pair. Mined pairs give the masks P and N (a
    pair listed twice counts once, as in PML's matrix-based losses).
    """
    batch = prepare_batch(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    check_positive(temperature, "temperature")
    chosen = get_reducer(reducer, AvgNonZeroReducer)
    scale = 1 / temperature if distance.is_inverted else -1 / temperature
    if isinstance(chosen, DoNothingReducer):
        z, positive, negative = _dense(batch, distance, scale)
        log_normaliser = torch.logsumexp(z.masked_fill(~(positive | negative), float("-inf")), dim=1)
        n_positive = positive.sum(dim=1)
        log_prob = torch.where(positive, z - log_normaliser[:, None], torch.zeros_like(z))
        loss = -log_prob.sum(dim=1) / n_positive.clamp_min(1)
        rows = torch.arange(z.shape[0], device=z.device)
        return {"loss": {"losses": loss, "indices": rows, "reduction_type": "element"}}

    @torch.no_grad()
    def row(block: PairBlock) -> RowSums:
        # ∂ℓ_i/∂z_ij = softmax_A(z_i)_j − [j ∈ P_i] / |P_i| on the rows that count (|P_i| > 0 and kept)
        log_normaliser, slope = log_softmax_parts(block.sim * scale, block.positive | block.negative)
        n_positive = block.positive.count_nonzero(dim=1)
        positive_sum = torch.where(block.positive, block.sim, 0.0).sum(dim=1).mul_(scale)
        has = n_positive > 0
        loss = torch.where(has, log_normaliser - positive_sum / n_positive.clamp_min(1), 0.0)
        kept = chosen.keep(loss) if chosen.filters else torch.ones_like(has)
        loss = torch.where(kept, loss, 0.0)
        share = n_positive.clamp_min(1).to(slope.dtype).reciprocal_()
        slope.sub_(torch.where(block.positive, share[:, None], 0.0)).mul_((kept & has).mul(scale)[:, None])
        total = loss.sum(dtype=torch.float64)
        values = torch.stack([total, kept.count_nonzero().double(), *counts(block, total)[:2]])
        return RowSums(values, (slope, None, None, None))

    sums = batch.row_sums(row, distance, block_size=block_size, working_copies=6)
    n_positive, n_negative = pair_counts(batch, sums, 2)
    keep = generic_pair_keep(n_positive, n_negative) & (n_positive > 0) & (n_negative > 0)
    return zero_unless(keep, chosen.finish(sums[0], sums[1]))


@loss_module(
    supcon_loss,
    formula="mean_{i,ℓ>0} −(1/|P_i|) Σ_P log(e^{s_ip/τ} / Σ_{a≠i} e^{s_ia/τ})",
    paper="Khosla et al. Supervised contrastive learning. NeurIPS 2020",
    family="metric",
    supports_cross_rank=True,
)
class SupConLoss(EmbeddingLoss):
    """Supervised contrastive loss: every same-class sample is a positive. See :func:`supcon_loss`."""
