"""Standard metric-learning losses, by sub-family.

Class names, arguments and defaults follow pytorch-metric-learning (PML) 2.x; with the default reducer each value
equals PML's on the same input. Every function and module takes PML's call
``(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``: a miner's ``indices_tuple``
(:mod:`pairloss.miners`, or PML's) replaces the label pairs, and ``reducer=`` (:mod:`pairloss.reducers`) replaces
the default reduction. Deliberate differences from PML are listed in each docstring and in
``docs/losses-metric.md``.

* :mod:`~pairloss.losses.metric.pair`: contrastive, multi-similarity, circle, generalized lifted structure, built
  from the public parts by :func:`pairloss.pair_loss`'s engine path;
* :mod:`~pairloss.losses.metric.triplet`: triplet margin and margin losses;
* :mod:`~pairloss.losses.metric.softmax`: NT-Xent and SupCon;
* :mod:`~pairloss.losses.metric.lifted`: lifted structure and N-pairs.

All but N-pairs run on :func:`pairloss.engine.row_block_sums`: each row function returns a handful of sums (the
reducer's kept loss total and count) over its block of anchors, and the reduction is applied to the sums
afterwards, so the value does not depend on the block size.
"""

from pairloss.losses.metric.lifted import LiftedStructureLoss, NPairsLoss, lifted_structure_loss, npairs_loss
from pairloss.losses.metric.pair import (
    CircleLoss,
    ContrastiveLoss,
    GeneralizedLiftedStructureLoss,
    MultiSimilarityLoss,
    circle_loss,
    contrastive_loss,
    generalized_lifted_structure_loss,
    multi_similarity_loss,
)
from pairloss.losses.metric.softmax import NTXentLoss, SupConLoss, ntxent_loss, supcon_loss
from pairloss.losses.metric.triplet import (
    TRIPLET_MINING,
    MarginLoss,
    TripletMarginLoss,
    margin_loss,
    triplet_margin_loss,
)

__all__ = [
    "TRIPLET_MINING",
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
