"""Standard metric-learning losses on the row-block engine.

Class names, arguments and defaults follow pytorch-metric-learning (PML) 2.x; with the default reduction each
value equals PML's on the same input. Every function takes ``(embeddings, labels, ref_emb=None, ref_labels=None)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pairloss.engine import PairBlock, row_block_sums
from pairloss.losses.base import EmbeddingLoss, check_pair_inputs, mean_of_active
from pairloss.similarity import BaseSimilarity, LpDistance

__all__ = ["ContrastiveLoss", "contrastive_loss"]


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

    where each mean runs over the ordered pairs whose loss is positive (PML's ``AvgNonZeroReducer``); a similarity
    flips the signs (``[m_pos − s_ij]_+`` and ``[s_ij − m_neg]_+``). A batch without positive (or negative) pairs
    contributes 0 for that term.
    """
    embeddings, labels, ref_emb, ref_labels = check_pair_inputs(embeddings, labels, ref_emb, ref_labels)
    distance = distance if distance is not None else LpDistance()

    def row(block: PairBlock) -> Tensor:
        zero = torch.zeros((), dtype=block.sim.dtype, device=block.sim.device)
        pos_loss = torch.where(block.positive, F.relu(distance.margin(block.sim, pos_margin)), zero)
        neg_loss = torch.where(block.negative, F.relu(distance.margin(neg_margin, block.sim)), zero)
        return torch.stack(
            [pos_loss.sum(), (pos_loss > 0).sum().to(zero), neg_loss.sum(), (neg_loss > 0).sum().to(zero)]
        )

    sums = row_block_sums(
        row, embeddings, labels, ref_emb, ref_labels, similarity=distance, block_size=block_size, working_copies=6
    )
    return mean_of_active(sums[0], sums[1]) + mean_of_active(sums[2], sums[3])


class ContrastiveLoss(EmbeddingLoss):
    """Contrastive loss: pull positive pairs within ``pos_margin``, push negatives beyond ``neg_margin``.

    See :func:`contrastive_loss` for the formula. Arguments and defaults are PML's.
    """

    formula = "mean_{P,>0}[d_ij − m_pos]_+ + mean_{N,>0}[m_neg − d_ij]_+"
    paper = "Hadsell, Chopra, LeCun. Dimensionality reduction by learning an invariant mapping. CVPR 2006"
    family = "metric"

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

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        return contrastive_loss(
            embeddings,
            labels,
            ref_emb,
            ref_labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            distance=self.distance,
            block_size=self.block_size,
        )
