"""Which pairs? Positive/negative masks from class labels: the first of the four parts of a pairwise loss.

Labels are 1-D class ids ``[N]`` (a pair is positive when the ids are equal) or 2-D multi-hot ``[N, C]`` (a pair is
positive when the two samples share at least one label, as in multi-label hashing). A sample is never paired with
itself: when the reference set is the query set, the diagonal is neither positive nor negative.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["label_masks", "same_label"]


def same_label(query_labels: Tensor, reference_labels: Tensor) -> Tensor:
    """Boolean ``[b, M]``: ``True`` where query ``i`` and reference ``j`` share a label."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == reference_labels[None, :]
    shared = query_labels.to(torch.float32) @ reference_labels.to(torch.float32).T
    return shared > 0


def label_masks(
    query_labels: Tensor,
    reference_labels: Tensor,
    rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks ``[b, M]`` for a block of queries against all references.

    Args:
        query_labels: labels of the block's queries, ``[b]`` or ``[b, C]``.
        reference_labels: labels of the references, ``[M]`` or ``[M, C]``.
        rows: when the references are the queries themselves, the global index of each query row (``[b]``); the
            pair ``(i, rows[i])`` (a sample with itself) is then excluded from both masks.

    Returns:
        ``(positive, negative)``, two boolean ``[b, M]`` tensors.
    """
    positive = same_label(query_labels, reference_labels)
    negative = ~positive
    if rows is not None:
        anchors = torch.arange(rows.numel(), device=rows.device)
        positive[anchors, rows] = False
        negative[anchors, rows] = False  # a multi-hot sample without labels shares none with itself
    return positive, negative
