"""What the metric-learning losses share: input handling in PML's call form, and the masked softmax helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pairloss._validation import check_pair_inputs
from pairloss.engine import PairBlock, RowFunction, cross_rank_hook, row_block_sums
from pairloss.pairs import MinedPairs, PairSelector, reject_positional_reference
from pairloss.similarity import BaseSimilarity

__all__ = [
    "Batch",
    "counts",
    "farness",
    "gathered_log_softmax",
    "generic_pair_keep",
    "log_softmax_parts",
    "prepare_batch",
    "zero_unless",
]


@dataclass(frozen=True)
class Batch:
    """A validated call ``(embeddings, labels, indices_tuple, ref_emb, ref_labels)`` of a metric loss.

    ``pairs`` is the pair selector for the engine: mined pairs when an ``indices_tuple`` was given, ``None``
    (label pairs) otherwise.
    """

    embeddings: Tensor
    labels: Tensor
    ref_emb: Tensor | None
    ref_labels: Tensor | None
    pairs: MinedPairs | None

    @property
    def mined(self) -> bool:
        return self.pairs is not None

    @property
    def selector(self) -> PairSelector | None:
        return self.pairs

    def row_sums(
        self,
        row: RowFunction,
        distance: BaseSimilarity,
        *,
        block_size: int | None,
        working_copies: int,
        pairs: PairSelector | Literal["batch"] | None = "batch",
        params: tuple[Tensor, ...] = (),
    ) -> Tensor:
        """:func:`pairloss.engine.row_block_sums` of ``row`` on this batch (with its mined pairs, unless ``pairs``
        names another selector)."""
        return row_block_sums(
            row,
            self.embeddings,
            self.labels,
            self.ref_emb,
            self.ref_labels,
            similarity=distance,
            pairs=self.pairs if pairs == "batch" else pairs,
            params=params,
            block_size=block_size,
            working_copies=working_copies,
        )


def prepare_batch(
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: tuple[Tensor, ...] | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
) -> Batch:
    """Validate PML's call form. Labels may be left out when ``indices_tuple`` gives the pairs (as in PML)."""
    reject_positional_reference(indices_tuple)
    if labels is None:
        if indices_tuple is None:
            raise ValueError("labels are required unless an indices_tuple gives the pairs")
        labels = torch.zeros(embeddings.shape[0], dtype=torch.long, device=embeddings.device)
        if ref_emb is not None and ref_labels is None:
            ref_labels = torch.zeros(ref_emb.shape[0], dtype=torch.long, device=ref_emb.device)
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    pairs = None
    if indices_tuple is not None:
        if cross_rank_hook() is not None:
            raise ValueError("mined indices refer to this process's batch; they cannot be used across ranks")
        n_references = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        pairs = MinedPairs(indices_tuple, embeddings.shape[0], n_references)
    return Batch(embeddings, labels, ref_emb, ref_labels, pairs)


def farness(sim: Tensor, distance: BaseSimilarity) -> Tensor:
    """Scores as "larger = farther": the distance itself, or ``−s`` for a similarity."""
    return -sim if distance.is_inverted else sim


def counts(block: PairBlock, like: Tensor) -> list[Tensor]:
    """``[#positive pairs, #negative pairs, #anchors]`` of a block (repeats of mined pairs included)."""
    n_positive = block.positive.count_nonzero() if block.positive_count is None else block.positive_count.sum()
    n_negative = block.negative.count_nonzero() if block.negative_count is None else block.negative_count.sum()
    return [
        n_positive.to(like),
        n_negative.to(like),
        torch.tensor(float(block.rows.numel()), dtype=like.dtype, device=like.device),
    ]


def zero_unless(keep: Tensor, value: Tensor) -> Tensor:
    """``value`` where ``keep`` else an exact 0 that still carries a (zero) gradient."""
    return torch.where(keep, value, torch.zeros_like(value))


def generic_pair_keep(n_positive: Tensor, n_negative: Tensor) -> Tensor:
    """PML's ``GenericPairLoss`` gives 0 when the batch has at most one positive and one negative pair."""
    return (n_positive > 1) | (n_negative > 1)


def pair_counts(batch: Batch, sums: Tensor, positive_index: int) -> tuple[Tensor, Tensor]:
    """The numbers of positive and negative pairs: the engine's sums at ``positive_index`` and the next, or, for
    mined pairs, the lengths of the miner's lists (as PML counts them)."""
    if batch.pairs is not None:
        return sums.new_tensor(batch.pairs.n_positive), sums.new_tensor(batch.pairs.n_negative)
    return sums[positive_index], sums[positive_index + 1]


def gathered_log_softmax(values: Tensor, rows: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """For entries ``values[p]`` of row ``rows[p]``: each row's ``log Σ exp`` (−inf for a row without entries) and
    each entry's softmax within its row."""
    shift = values.new_full((n_rows,), float("-inf")).scatter_reduce_(0, rows, values, "amax")
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    terms = (values - shift[rows]).exp_()
    total = values.new_zeros(n_rows).index_add_(0, rows, terms)
    return shift + torch.log(total), terms.div_(total[rows])


def log_softmax_parts(logits: Tensor, mask: Tensor, count: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per row ``log Σ_{j ∈ mask} c_j exp(z_ij)`` (−inf for an empty row; ``c`` = ``count``, 1 when ``None``) and
    the softmax over ``mask`` (0 off it and on empty rows), without autograd; ``logits`` is overwritten."""
    floor = math.log(torch.finfo(logits.dtype).tiny) + 2.0
    if count is not None:
        logits.add_(torch.log(count.clamp_min(1).to(logits.dtype)))
    masked = torch.where(mask, logits, logits.new_tensor(float("-inf")), out=logits)
    shift = masked.amax(dim=1)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    terms = masked.sub_(shift[:, None]).clamp_min_(floor).exp_()
    terms = torch.where(mask, terms, terms.new_tensor(0.0), out=terms)
    total = terms.sum(dim=1)
    log_total = shift + torch.log(total)
    return log_total, terms.div_(total.clamp_min(torch.finfo(total.dtype).tiny)[:, None])
